"""Sending one batch: claim the rows, call the provider through its adapter, record what happened.

A task only acts on rows it claims (pending -> sending, atomically), so a task delivered twice sends
nothing twice. The claim carries a lease: a worker killed mid-batch leaves rows in `sending` that
the sweeper returns to `pending` after the lease, marked as possible duplicates (the provider may
have accepted them before the kill). That window, between the provider's answer and our commit, is
the only place a duplicate can come from.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from math import ceil
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from channels.base import INTERNAL_ERROR, Channel, ChannelName, Failure, Outcome, Recipient, Variant
from config import Settings
from dispatcher import planning, provider_stats, suppressions
from dispatcher.breaker import Breaker
from dispatcher.fanout import Outbox, check_gates, insert_one, utcnow
from dispatcher.ratelimit import RateLimiter, throttle_for
from dispatcher.receipts import RETURNING, Moved, State, count_moves, set_details, transition
from dispatcher.redis_client import get_redis
from dispatcher.retry import RetryPolicy
from dispatcher.store.bulk import id_in
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastTier, BroadcastVariant, Delivery, Subscriber

log = logging.getLogger(__name__)

# Provider codes that mean "this person asked not to get these": recorded as suppressed, not failed.
SUPPRESSION_CODES = frozenset({"21610", "unsubscribed"})


@dataclass
class Services:
    """What a send needs, built once per worker process."""

    settings: Settings
    database: Database
    adapters: dict[ChannelName, Channel]
    limiter: RateLimiter
    breaker: Breaker
    retry: RetryPolicy


def build_services(settings: Settings, database: Database) -> Services:
    from channels.registry import build_channels

    client = get_redis(settings)
    return Services(
        settings=settings,
        database=database,
        adapters=build_channels(settings),
        limiter=RateLimiter(client, settings.rate_headroom),
        breaker=Breaker(client, settings),
        retry=RetryPolicy(settings.retry_max_attempts, settings.retry_base_s, settings.retry_cap_s),
    )


@lru_cache(maxsize=256)
def _variant_json(database: Database, broadcast_id: int, channel: str, locale: str) -> dict[str, Any] | None:
    """Variants never change once rendered, so each process reads each one once."""
    with database.session() as session:
        row = session.get(BroadcastVariant, (broadcast_id, channel, locale))
        if row is None:
            row = session.get(BroadcastVariant, (broadcast_id, channel, "en"))
        return dict(row.variant) if row else None


def load_variant(services: Services, broadcast_id: int, channel: ChannelName, locale: str) -> Variant:
    data = _variant_json(services.database, broadcast_id, channel.value, locale)
    if data is None:
        raise LookupError(f"broadcast {broadcast_id} has no {channel.value} variant")
    return services.adapters[channel].load_variant(data)


EARLY_SLACK = timedelta(seconds=1)


def send_batch(services: Services, broadcast_id: int, channel: ChannelName, ids: list[int]) -> int:
    """Sends the claimable rows among `ids`; returns how many were claimed."""
    settings = services.settings
    provider = _provider(channel)
    if services.breaker.is_open(provider):
        defer_while_open(services, broadcast_id, channel, ids, provider)
        return 0
    now = utcnow()
    with services.database.session() as session:
        rows = transition(
            session,
            ids,
            expect=State.PENDING,
            to=State.SENDING,
            now=now,
            values={
                "attempts": Delivery.attempts + 1,
                "lease_until": now + timedelta(seconds=settings.lease_s),
                "next_attempt_at": None,
            },
            # A row due later (quiet hours) is left for the task that is due then. The second of slack
            # keeps a retry or breaker task whose timer fires a hair early from finding nothing to send.
            where=Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= now + EARLY_SLACK),
        )
        people = _people(session, rows)
    if not rows:
        return 0
    outcomes = _call_provider(services, broadcast_id, channel, rows, people)
    retryable = sum(1 for o in outcomes if o.failure is Failure.RETRYABLE and o.code != INTERNAL_ERROR)
    try:  # advisory: losing one sample must never keep the outcomes from being recorded
        services.breaker.record(provider, successes=sum(o.accepted for o in outcomes), failures=retryable)
    except redis.RedisError:
        log.warning("could not update the %s breaker", provider, exc_info=True)
    record_with_retry(services, broadcast_id, channel, rows, outcomes)
    return len(rows)


def record_with_retry(
    services: Services, broadcast_id: int, channel: ChannelName, rows: list[Moved], outcomes: list[Outcome]
) -> None:
    """The provider has answered: losing that answer to a database blip would send the whole batch
    again after its lease. Retry the (idempotent) recording for up to half a lease first."""
    deadline = time.monotonic() + services.settings.lease_s / 2
    delay = 0.2
    while True:
        try:
            record_outcomes(services, broadcast_id, channel, rows, outcomes)
            return
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning(
                "recording %d outcomes failed; retrying in %.1fs", len(outcomes), delay, exc_info=True
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def defer_while_open(
    services: Services, broadcast_id: int, channel: ChannelName, ids: list[int], provider: str
) -> None:
    """The provider's breaker is open: nothing is attempted (so no attempt is counted); the batch
    comes back when it closes, and recipients in failover tiers are reached on their next channel now."""
    wait = max(1.0, services.breaker.open_for(provider))
    now = utcnow()
    outbox = Outbox()
    with services.database.session() as session:
        pending = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.state == State.PENDING.value)
            .values(
                next_attempt_at=now + timedelta(seconds=wait),
                updated_at=now,
                last_error_code="breaker_open",
                last_error=f"{provider} circuit breaker open",
            )
            .returning(*RETURNING)
        ).all()
        deferred = [Moved._make(row) for row in pending]
        for moved in deferred:
            if moved.tier in services.settings.failover_tiers:
                fail_over(session, services, moved, channel, outbox)
        if deferred:
            tier = min(m.tier for m in deferred)
            outbox.send_batch(broadcast_id, channel, [m.id for m in deferred], tier, wait)
    outbox.flush()


def _provider(channel: ChannelName) -> str:
    from channels.registry import provider_for

    return provider_for(channel)


def _people(session: Session, rows: list[Moved]) -> dict[int, tuple[str | None, str | None]]:
    ids = {r.subscriber_id for r in rows if r.subscriber_id is not None}
    if not ids:
        return {}
    found = session.execute(
        select(Subscriber.id, Subscriber.name, Subscriber.unsubscribe_token).where(
            id_in(session, Subscriber.id, ids)
        )
    )
    return {sid: (name, token) for sid, name, token in found}


def _call_provider(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    rows: list[Moved],
    people: dict[int, tuple[str | None, str | None]],
) -> list[Outcome]:
    adapter = services.adapters[channel]
    limited = throttle_for(channel, services.limiter, services.settings)
    waited: list[float] = []

    def throttle(recipient: Recipient) -> None:
        started = time.perf_counter()
        limited(recipient)
        waited.append(time.perf_counter() - started)

    batch_started = time.perf_counter()
    by_locale: dict[str, list[Moved]] = defaultdict(list)
    for row in rows:
        by_locale[row.locale].append(row)
    outcomes: list[Outcome] = []
    for locale, group in by_locale.items():
        variant = load_variant(services, broadcast_id, channel, locale)
        recipients = [
            Recipient(r.id, r.address, *people.get(r.subscriber_id or -1, (None, None))) for r in group
        ]
        started = time.perf_counter()
        try:
            got = adapter.send(variant, recipients, throttle)
            _log_calls(channel, broadcast_id, recipients, got, (time.perf_counter() - started) * 1000)
            outcomes.extend(got)
        except Exception as exc:  # Redis/DB down in the throttle, or an adapter bug: never strand rows
            log.exception("sending %s failed before the provider answered", channel.value)
            outcomes.extend(
                Outcome.failed(r.id, Failure.RETRYABLE, code=INTERNAL_ERROR, error=repr(exc)[:500])
                for r in group
            )
    _count(services, channel, len(rows), time.perf_counter() - batch_started, waited)
    return outcomes


def _count(
    services: Services, channel: ChannelName, recipients: int, seconds: float, waited: list[float]
) -> None:
    """Adds the batch to the provider's totals for /metrics; advisory, so a Redis error is only logged.
    Call time excludes rate-limit waits (they overlap across threads, so this is an approximation)."""
    wait_seconds = sum(waited)
    try:
        provider_stats.record(
            get_redis(services.settings),
            services.settings,
            _provider(channel),
            recipients=recipients,
            call_seconds=max(0.0, seconds - wait_seconds / max(1, services.settings.send_concurrency)),
            waits=sum(1 for w in waited if w > 0.001),
            wait_seconds=wait_seconds,
        )
    except redis.RedisError:
        log.warning("could not record %s stats", channel.value, exc_info=True)


def _log_calls(
    channel: ChannelName, broadcast_id: int, recipients: list[Recipient], outcomes: list[Outcome], ms: float
) -> None:
    """One JSON line per recipient's provider answer; addresses are masked by the log formatter."""
    provider = _provider(channel)
    for recipient, outcome in zip(recipients, outcomes, strict=False):
        result = "accepted" if outcome.accepted else str(outcome.failure)
        log.info(
            "%s %s to %s: %s",
            provider,
            channel.value,
            recipient.address,
            result,
            extra={
                "provider": provider,
                "channel": channel.value,
                "broadcast_id": broadcast_id,
                "delivery_id": recipient.delivery_id,
                "outcome": result,
                "code": outcome.code,
                "provider_message_id": outcome.provider_message_id,
                "duration_ms": round(ms, 1),
            },
        )


def record_outcomes(
    services: Services, broadcast_id: int, channel: ChannelName, rows: list[Moved], outcomes: list[Outcome]
) -> None:
    """One transaction: states, counters, tier gates, retries and failovers; tasks after commit."""
    settings = services.settings
    by_id = {r.id: r for r in rows}
    now = utcnow()
    accepted = [o for o in outcomes if o.accepted]
    retry_at: dict[int, list[int]] = defaultdict(list)  # delay (whole seconds) -> ids
    final: dict[State, list[Outcome]] = defaultdict(list)
    details: list[dict[str, Any]] = []
    # A request-level message id (SendGrid's: one for up to 1,000 rows) is written with the state
    # change; per-message ids (Twilio's SIDs) follow in one UPDATE. Writing every row a second time
    # was a third of recording an email batch.
    by_message_id: dict[str | None, list[int]] = defaultdict(list)
    for outcome in accepted:
        by_message_id[outcome.provider_message_id].append(outcome.delivery_id)
    shared = {mid: ids for mid, ids in by_message_id.items() if len(ids) > 1}
    singles = [o for o in accepted if len(by_message_id[o.provider_message_id]) == 1]
    for outcome in singles:
        details.append({"id": outcome.delivery_id, "provider_message_id": outcome.provider_message_id})
    for outcome in outcomes:
        if outcome.accepted:
            continue
        details.append(
            {
                "id": outcome.delivery_id,
                "last_error_code": outcome.code,
                "last_error": (outcome.error or "")[:2000],
            }
        )
        attempts = by_id[outcome.delivery_id].attempts
        if outcome.code == INTERNAL_ERROR:
            delay: float | None = services.retry.backoff(attempts)
        else:
            delay = services.retry.decide(outcome, attempts)
        if delay is None:
            state = State.SUPPRESSED if outcome.code in SUPPRESSION_CODES else State.FAILED
            final[state].append(outcome)
        else:
            retry_at[max(1, ceil(delay))].append(outcome.delivery_id)
    outbox = Outbox()
    with services.database.session() as session:
        moved_ok = transition(
            session, [o.delivery_id for o in singles], expect=State.SENDING, to=State.SENT, now=now
        )
        for message_id, ids in shared.items():
            values = {"provider_message_id": message_id}
            moved = transition(session, ids, expect=State.SENDING, to=State.SENT, now=now, values=values)
            moved_ok += moved
            # A status webhook can move a row past `sent` before we record it: it still gets its id.
            overtaken = set(ids) - {m.id for m in moved}
            details += [{"id": i, "provider_message_id": message_id} for i in sorted(overtaken)]
        if moved_ok:
            tiers = sorted({m.tier for m in moved_ok})
            session.execute(
                update(BroadcastTier)
                .where(
                    BroadcastTier.broadcast_id == broadcast_id,
                    BroadcastTier.tier.in_(tiers),
                    BroadcastTier.first_accepted_at.is_(None),
                )
                .values(first_accepted_at=now)
            )
        for delay, ids in sorted(retry_at.items()):
            back = transition(
                session,
                ids,
                expect=State.SENDING,
                to=State.PENDING,
                now=now,
                values={"next_attempt_at": now + timedelta(seconds=delay)},
            )
            if back:
                tier = min(m.tier for m in back)
                outbox.send_batch(broadcast_id, channel, [m.id for m in back], tier, delay)
        for state, failed in final.items():
            gone = transition(
                session, [o.delivery_id for o in failed], expect=State.SENDING, to=state, now=now
            )
            for moved in gone:
                if moved.tier in settings.failover_tiers:
                    fail_over(session, services, moved, channel, outbox)
        set_details(session, details)
        suppressions.from_outcomes(session, settings, rows, outcomes)  # 21211 / 21610, dead webhooks
        session.flush()
        check_gates(session, settings, broadcast_id, outbox)
    outbox.flush()


def fail_over(
    session: Session, services: Services, moved: Moved, failed: ChannelName, outbox: Outbox
) -> None:
    """Reaches the person on their next channel; the new row points back at the failed one."""
    if moved.subscriber_id is None:
        return
    sub = session.get(Subscriber, moved.subscriber_id)
    if sub is None:
        return
    target = planning.next_channel(
        failed, sub.channels, sub.opt_outs, planning.addresses_of(sub), services.adapters
    )
    if target is None:
        return
    now = utcnow()
    new_id = insert_one(
        session,
        {
            "broadcast_id": moved.broadcast_id,
            "subscriber_id": sub.id,
            "tier": moved.tier,
            "channel": target.channel.value,
            "address": target.address,
            "locale": moved.locale,
            "state": State.PENDING.value,
            "attempts": 0,
            "failover_of": moved.id,
            "created_at": now,
            "updated_at": now,
        },
    )
    if new_id is None:
        return  # already reached on that channel in this broadcast
    session.execute(
        update(BroadcastTier)
        .where(BroadcastTier.broadcast_id == moved.broadcast_id, BroadcastTier.tier == moved.tier)
        .values(outstanding=BroadcastTier.outstanding + 1)
    )
    count_moves(session, [(moved.broadcast_id, moved.tier, target.channel.value)], None, State.PENDING)
    outbox.send_batch(moved.broadcast_id, target.channel, [new_id], moved.tier)
