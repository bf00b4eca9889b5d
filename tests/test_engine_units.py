"""The engine's parts on their own: pure planning and retry rules, Redis primitives, the state machine."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from channels.base import ChannelName, Failure, Outcome, StatusReport
from config import Settings
from dispatcher.domain import audience
from dispatcher.domain.message import EventKind
from dispatcher.domain.policy import channels_for
from dispatcher.domain.reports import Verdict
from dispatcher.domain.retry import RetryPolicy
from dispatcher.domain.states import DeliveryState
from dispatcher.engine.breaker import Breaker
from dispatcher.engine.ratelimit import Limit, RateLimiter
from dispatcher.engine.status_reports import apply_batch
from dispatcher.engine.transitions import transition
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastCount, BroadcastTier, Delivery
from tests.conftest import PREFIX, REDIS_URL
from tests.harness import broadcast_row

E, S, C, W = ChannelName.EMAIL, ChannelName.SMS, ChannelName.CHAT, ChannelName.WEBHOOK
ALL = [E, C, S, W]


# ---- planning (pure) -----------------------------------------------------------------------


def test_scope_matches_only_what_a_subscriber_asked_for() -> None:
    assert audience.in_scope([], [], ["api"], ["eu"])  # no scope: everything
    assert audience.in_scope(["api"], [], ["api", "web"], [])
    assert not audience.in_scope(["billing"], [], ["api"], [])
    assert audience.in_scope(["billing"], [], [], [])  # a message with no scope affects everyone
    assert not audience.in_scope([], ["us"], [], ["eu"])


def test_targets_follow_preference_policy_and_opt_outs() -> None:
    addresses = {E: "A@Example.com ", S: "+14155550123", C: "C1", W: None}
    assert audience.targets([], [], addresses, ALL) == [
        audience.Target(E, "a@example.com"),  # emails de-duplicate case-insensitively
        audience.Target(C, "C1"),
        audience.Target(S, "+14155550123"),
    ]
    assert audience.targets([], ["sms"], addresses, ALL) == [
        audience.Target(E, "a@example.com"),
        audience.Target(C, "C1"),
    ]
    assert audience.targets(["sms"], [], addresses, [E, C]) == []  # policy: no SMS for this update


def test_failover_goes_to_the_next_reachable_channel_never_an_opted_out_one() -> None:
    addresses = {E: "a@example.com", S: "+14155550123", C: "C1", W: None}
    assert audience.next_channel(S, ["sms"], [], addresses, ALL) == audience.Target(E, "a@example.com")
    assert audience.next_channel(S, ["sms"], ["email"], addresses, ALL) == audience.Target(C, "C1")
    assert audience.next_channel(S, ["sms"], ["email", "chat"], addresses, ALL) is None
    assert audience.next_channel(S, ["sms"], [], addresses, [S]) is None  # nothing else enabled


def test_channel_policy_defaults() -> None:
    enabled = list(ChannelName)
    opened = channels_for(EventKind.INCIDENT_OPENED, enabled=enabled)
    assert S in opened and ChannelName.SOCIAL in opened
    plain = channels_for(EventKind.INCIDENT_UPDATED, enabled=enabled)
    assert S not in plain and ChannelName.SOCIAL not in plain and E in plain
    assert S in channels_for(EventKind.INCIDENT_UPDATED, enabled=enabled, impact_rose=True)
    assert S in channels_for(EventKind.INCIDENT_RESOLVED, enabled=enabled)
    assert S in channels_for(EventKind.MAINTENANCE_STARTED, enabled=enabled)
    assert S not in channels_for(EventKind.MAINTENANCE_REMINDER, enabled=enabled)
    assert channels_for(EventKind.INCIDENT_UPDATED, enabled=enabled, override=[S]) == [S]


# ---- retry policy (pure) -------------------------------------------------------------------


def test_permanent_is_final_and_429_waits_what_it_was_told() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=1, cap_s=60)
    assert policy.decide(Outcome.failed(1, Failure.PERMANENT, code="21211"), attempts=1) is None
    assert policy.decide(Outcome.failed(1, Failure.RATE_LIMITED, retry_after=7.5), attempts=1) == 7.5
    assert policy.decide(Outcome.failed(1, Failure.RETRYABLE), attempts=5) is None  # cap reached


@given(attempt=st.integers(1, 30), seed=st.integers(0, 10_000))
def test_backoff_grows_with_jitter_and_never_passes_the_cap(attempt: int, seed: int) -> None:
    policy = RetryPolicy(max_attempts=50, base_s=0.5, cap_s=30)
    delay = policy.backoff(attempt, random.Random(seed))
    step = min(30, 0.5 * 2 ** (attempt - 1))
    assert step / 2 <= delay <= step <= 30


# ---- Redis primitives (the real Redis) -----------------------------------------------------


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def test_reservations_are_spaced_by_the_rate_across_callers(client: redis.Redis) -> None:
    limiter_a, limiter_b = RateLimiter(client, headroom=1.0), RateLimiter(client, headroom=1.0)
    bucket = f"{PREFIX}test-rate-{uuid.uuid4().hex}"
    waits = [limiter.reserve(bucket, Limit(10)) for limiter in (limiter_a, limiter_b) * 5]
    assert waits[0] == 0
    # each reservation lands 0.1 s after the previous, whichever process asked
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert all(0.09 <= g <= 0.11 for g in gaps), gaps


def test_breaker_opens_after_consecutive_failures_and_a_success_resets_it(client: redis.Redis) -> None:
    settings = Settings(redis_prefix=f"{PREFIX}{uuid.uuid4().hex}:", breaker_failures=3, breaker_open_s=30)
    breaker = Breaker(client, settings)
    assert not breaker.record("twilio", successes=0, failures=2)
    assert not breaker.record("twilio", successes=1, failures=1)  # a success resets the count
    assert not breaker.record("twilio", successes=0, failures=2)
    assert breaker.record("twilio", successes=0, failures=1)
    assert breaker.is_open("twilio") and 0 < breaker.open_for("twilio") <= 30
    assert not breaker.is_open("sendgrid")


# ---- the state machine (PostgreSQL and SQLite) ---------------------------------------------


def _one_delivery(db: Database) -> int:
    with db.session() as session:
        broadcast = broadcast_row(session)
        session.add(
            BroadcastTier(broadcast_id=broadcast.id, tier=0, state="sending", planned=1, outstanding=1)
        )
        row = Delivery(broadcast_id=broadcast.id, tier=0, channel="sms", address="+14155550123")
        session.add(row)
        session.add(BroadcastCount(broadcast_id=broadcast.id, tier=0, channel="sms", state="pending", n=1))
        session.flush()
        return row.id


def _counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        return {c.state: c.n for c in session.query(BroadcastCount) if c.n}


def test_a_claim_succeeds_once(db: Database) -> None:
    delivery_id = _one_delivery(db)
    now = datetime.now(UTC)
    with db.session() as session:
        assert (
            len(
                transition(
                    session, [delivery_id], expect=DeliveryState.PENDING, to=DeliveryState.SENDING, now=now
                )
            )
            == 1
        )
    with db.session() as session:  # a redelivered task finds nothing to claim
        assert (
            transition(
                session, [delivery_id], expect=DeliveryState.PENDING, to=DeliveryState.SENDING, now=now
            )
            == []
        )
    assert _counts(db) == {"sending": 1}


def test_provider_events_are_idempotent_and_order_proof(db: Database) -> None:
    delivery_id = _one_delivery(db)
    now = datetime.now(UTC)

    def report(to: DeliveryState, sid: str = "SM1", provider: str = "twilio", **kw: str) -> Verdict:
        with db.session() as session:
            (checked,) = apply_batch(session, [StatusReport(provider, delivery_id, sid, to.value, **kw)], now)
            return checked.verdict

    assert report(DeliveryState.DELIVERED) is Verdict.NOT_SENT  # pending: never sent
    with db.session() as session:
        transition(session, [delivery_id], expect=DeliveryState.PENDING, to=DeliveryState.SENDING, now=now)
    assert (
        report(DeliveryState.DELIVERED) is Verdict.NOT_RECORDED
    )  # "delivered" before we recorded "sent": parked
    with db.session() as session:
        transition(
            session,
            [delivery_id],
            expect=DeliveryState.SENDING,
            to=DeliveryState.SENT,
            now=now,
            values={"provider_message_id": "SM1"},
        )
    assert report(DeliveryState.DELIVERED, provider="sendgrid") is Verdict.WRONG_CHANNEL
    assert report(DeliveryState.DELIVERED, sid="SM2") is Verdict.ID_MISMATCH
    assert report(DeliveryState.DELIVERED) is Verdict.APPLIED
    assert report(DeliveryState.DELIVERED) is Verdict.UNCHANGED  # duplicate
    assert report(DeliveryState.SENT) is Verdict.UNCHANGED  # late and older
    assert report(DeliveryState.BOUNCED, error_code="bounce") is Verdict.APPLIED
    with db.session() as session:
        row = session.get(Delivery, delivery_id)
        assert row.state == "bounced" and row.delivered_at is not None and row.final_at is not None
        assert row.provider_message_id == "SM1"
        tier = session.get(BroadcastTier, (row.broadcast_id, 0))
        assert tier.outstanding == 0  # counted out of "outstanding" exactly once
    assert _counts(db) == {"bounced": 1}


def test_a_paced_batch_is_what_the_provider_takes_per_call() -> None:
    """A paced batch no longer shrinks with a slow limit: it holds a worker for one pacing window at
    most and hands the rest back (tests/test_pacing_units.py)."""
    from dispatcher.engine.ratelimit import batch_size

    assert batch_size(ChannelName.SMS, 250, Settings(rate_twilio_per_s=1)) == 250
    assert batch_size(ChannelName.EMAIL, 1000, Settings(lease_s=3)) == 1000
