"""The fan-out engine end to end: real Redis, PostgreSQL and SQLite, Celery workers, the sandbox."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine.clock import utcnow
from dispatcher.store.models import Delivery, Subscriber, Suppression
from tests.harness import Harness

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def tiered_audience(admins: int = 4, stakeholders: int = 10, customers: int = 40) -> list[SubscriberIn]:
    subs = [
        SubscriberIn(external_id=f"adm{i}", lists=["admins"], email=f"adm{i}@example.com", phone=phone(i))
        for i in range(admins)
    ]
    subs += [
        SubscriberIn(external_id=f"stk{i}", lists=["stakeholders"], email=f"stk{i}@example.com")
        for i in range(stakeholders)
    ]
    subs += [
        SubscriberIn(external_id=f"cus{i}", lists=["customers"], email=f"cus{i}@example.com")
        for i in range(customers)
    ]
    return subs


def deliveries(harness: Harness, broadcast_id: int) -> list[Delivery]:
    with harness.database.session() as session:
        return list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))


def test_every_tier_reaches_the_providers_before_the_next_begins(harness: Harness) -> None:
    harness.subscribers(tiered_audience())
    harness.worker()
    broadcast_id = harness.open()
    done = harness.wait(broadcast_id)

    tier_of = {d.address: d.tier for d in deliveries(harness, broadcast_id)}
    arrivals: dict[tuple[str, int], list[float]] = {}
    for message in harness.sandbox.messages():
        if message["channel"] in ("email", "sms"):
            tier = tier_of[message["recipient"].lower()]
            arrivals.setdefault((message["channel"], tier), []).append(message["received_at"])
    assert sorted(arrivals) == [("email", 0), ("email", 1), ("email", 2), ("sms", 0)]
    assert [len(arrivals[k]) for k in sorted(arrivals)] == [4, 10, 40, 4]
    # Gates are per channel: on each channel a tier all arrives before the next tier's first message.
    assert max(arrivals[("email", 0)]) < min(arrivals[("email", 1)])
    assert max(arrivals[("email", 1)]) < min(arrivals[("email", 2)])
    assert [t["gate"] for t in done["tiers"]] == ["accepted"] * len(done["tiers"])
    assert done["totals"]["sent"] == 8 + 10 + 40 + 1  # + the one public post
    assert len(harness.sandbox.messages("social")) == 1


def test_one_message_per_person_per_channel_and_one_post_per_shared_channel(harness: Harness) -> None:
    both = SubscriberIn(external_id="both", lists=["customers", "admins"], email="Both@Example.com")
    org = [
        SubscriberIn(
            external_id=f"org{i}", lists=["customers"], email=f"m{i}@org.example", slack_channel="C0ORGWIDE"
        )
        for i in range(25)
    ]
    same_email = SubscriberIn(external_id="alias", lists=["stakeholders"], email="both@example.com")
    harness.subscribers([both, *org, same_email])
    harness.worker()
    broadcast_id = harness.open()
    harness.wait(broadcast_id)

    to_both = [m for m in harness.sandbox.messages("email") if m["recipient"].lower() == "both@example.com"]
    assert len(to_both) == 1
    rows = {(d.channel, d.address): d for d in deliveries(harness, broadcast_id)}
    assert rows[("email", "both@example.com")].tier == 0  # reached at the earlier tier
    assert [m["recipient"] for m in harness.sandbox.messages("chat")] == ["C0ORGWIDE"]


def test_faults_are_retried_until_delivered_within_the_rate_limit(harness: Harness) -> None:
    limit = 40
    harness.configure(DISPATCHER_RATE_TWILIO_PER_S=str(limit))
    harness.sandbox.set_faults("twilio", error_rate=0.2, rate_429=0.1, retry_after_s=0.5, seed=7)
    harness.sandbox.set_faults("sendgrid", error_rate=0.3, rate_429=0.2, retry_after_s=0.3, seed=3)
    subs = [
        SubscriberIn(external_id=f"p{i}", lists=["customers"], email=f"p{i}@example.com", phone=phone(i))
        for i in range(120)
    ]
    harness.subscribers(subs)
    harness.worker()
    broadcast_id = harness.open(channels=["email", "sms"])
    done = harness.wait(broadcast_id, timeout_s=120)

    assert done["totals"]["sent"] == 240 and done["totals"]["failed"] == 0
    rows = deliveries(harness, broadcast_id)
    assert any(d.attempts > 1 for d in rows), "the faults should have forced retries"
    accepted = Counter(m["recipient"] for m in harness.sandbox.messages("sms"))
    assert set(accepted) == {phone(i) for i in range(120)}
    stats = harness.sandbox.stats()
    assert 0 < stats["twilio"]["max_per_1s"] <= limit, stats["twilio"]


def test_permanent_errors_are_final_and_admins_fail_over(harness: Harness) -> None:
    admin = SubscriberIn(
        external_id="oncall", lists=["admins"], email="oncall@example.com", phone=phone(1), channels=["sms"]
    )
    customer = SubscriberIn(
        external_id="cust", lists=["customers"], email="cust@example.com", phone=phone(2), channels=["sms"]
    )
    harness.subscribers([admin, customer])
    harness.sandbox.set_faults("twilio", invalid_numbers=[phone(1), phone(2)])
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    harness.wait(broadcast_id)

    rows = {(d.channel, d.address): d for d in deliveries(harness, broadcast_id)}
    admin_sms, customer_sms = rows[("sms", phone(1))], rows[("sms", phone(2))]
    for row in (admin_sms, customer_sms):
        assert row.state == "failed" and row.attempts == 1 and row.last_error_code == "21211"
    failover = rows[("email", "oncall@example.com")]
    assert failover.failover_of == admin_sms.id and failover.state == "sent"
    assert ("email", "cust@example.com") not in rows  # failover is for the admin tier by default
    assert [m["recipient"] for m in harness.sandbox.messages("email")] == ["oncall@example.com"]


def test_the_provider_says_which_refusals_are_suppressions(harness: Harness) -> None:
    """Twilio's 21610 (opted out) ends `suppressed` and opts the person out of SMS; its 21211
    (invalid) ends `failed`; both go on the suppression list with the reason the adapter gave."""
    people = [
        SubscriberIn(external_id=f"c{i}", lists=["customers"], phone=phone(i), channels=["sms"])
        for i in (1, 2, 3)
    ]
    harness.subscribers(people)
    harness.sandbox.set_faults("twilio", opted_out=[phone(1)], invalid_numbers=[phone(2)])
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    harness.wait(broadcast_id)

    rows = {d.address: (d.state, d.last_error_code) for d in deliveries(harness, broadcast_id)}
    assert rows == {
        phone(1): ("suppressed", "21610"),
        phone(2): ("failed", "21211"),
        phone(3): ("sent", None),
    }
    with harness.database.session() as session:
        listed = dict(session.execute(select(Suppression.address, Suppression.reason)).all())
        opted = session.scalar(select(Subscriber.opt_outs).where(Subscriber.external_id == "c1"))
    assert listed == {phone(1): "opted_out", phone(2): "invalid_number"}
    assert opted == ["sms"]


def _sms_audience(harness: Harness, n: int) -> None:
    harness.subscribers(
        [SubscriberIn(external_id=f"k{i}", lists=["customers"], phone=phone(i)) for i in range(n)]
    )


def _lost_and_duplicates(harness: Harness, n: int) -> tuple[int, int]:
    received = Counter(m["recipient"] for m in harness.sandbox.messages("sms"))
    lost = n - len({phone(i) for i in range(n)} & set(received))
    return lost, sum(received.values()) - len(received)


def test_a_worker_killed_mid_broadcast_loses_nothing(harness: Harness) -> None:
    n = 400
    harness.configure(DISPATCHER_LEASE_S="3", DISPATCHER_SEND_CONCURRENCY="8")
    harness.sandbox.set_faults("twilio", latency_ms=60)
    _sms_audience(harness, n)
    worker = harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    deadline = time.monotonic() + 60
    while len(harness.sandbox.messages("sms")) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.kill()  # SIGKILL, pool children included
    with harness.database.session() as session:
        in_flight = session.scalars(
            select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.state == "sending")
        ).all()
    assert 0 < len(harness.sandbox.messages("sms")) < n, "the kill should land mid-broadcast"
    harness.worker()
    done = harness.wait(broadcast_id, sweep_every_s=1)

    lost, duplicates = _lost_and_duplicates(harness, n)
    assert lost == 0
    assert done["totals"]["sent"] == n
    with harness.database.session() as session:
        flagged = len(
            session.scalars(
                select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.sends > 1)
            ).all()
        )
    assert duplicates <= flagged <= len(in_flight)


def test_redis_restarted_mid_broadcast_loses_nothing(harness: Harness, tmp_path: Path) -> None:
    from dispatcher.engine.broker import make_celery
    from tests.conftest import free_port, start_redis_server

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    n = 300
    redis_proc = start_redis_server(port, tmp_path)
    try:
        harness.configure(
            REDIS_URL=url,
            DISPATCHER_LEASE_S="3",
            DISPATCHER_SWEEP_INTERVAL_S="1",
            DISPATCHER_RATE_TWILIO_PER_S="100",
        )
        harness.sandbox.set_faults("twilio", latency_ms=40)
        _sms_audience(harness, n)
        harness.worker()
        harness.beat()
        broadcast_id = harness.open(channels=["sms"], send=False)
        make_celery(harness.settings).send_task(
            "dispatcher.run_broadcast", args=[broadcast_id], queue="control"
        )
        deadline = time.monotonic() + 60
        while len(harness.sandbox.messages("sms")) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        redis_proc.send_signal(signal.SIGKILL)  # everything queued in Redis is gone
        redis_proc.wait()
        assert len(harness.sandbox.messages("sms")) < n, "the restart should land mid-broadcast"
        redis_proc = start_redis_server(port, tmp_path)
        done = harness.wait(broadcast_id, timeout_s=120)
    finally:
        redis_proc.kill()
        redis_proc.wait()
    lost, _ = _lost_and_duplicates(harness, n)
    assert lost == 0 and done["totals"]["sent"] == n, (
        done["totals"],
        [
            (d.state, d.last_error_code, d.last_error)
            for d in deliveries(harness, broadcast_id)
            if d.state != "sent"
        ][:3],
    )


def test_no_worker_no_sending(harness: Harness) -> None:
    """The API's promise rests on this: creating a broadcast sends nothing by itself."""
    harness.subscribers(tiered_audience(2, 0, 0))
    broadcast_id = harness.open(OutageMessage(title="quiet"), send=False)
    time.sleep(0.3)
    assert harness.sandbox.messages() == []
    assert harness.progress(broadcast_id)["state"] == "queued"


def _queued_tasks(queue: str) -> list[tuple[str, list[Any]]]:
    """Every task waiting in a queue, (name, args), taken out of it (no worker runs)."""
    import base64
    import json

    import redis as redis_lib

    from config import get_settings
    from dispatcher.engine.broker import queue_keys

    client = redis_lib.Redis.from_url(get_settings().redis_url or "")
    tasks = []
    for key in queue_keys(queue, get_settings()):  # one list per priority step
        for raw in reversed(client.lrange(key, 0, -1)):  # pushed on the left: oldest last
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            tasks.append((message["headers"]["task"], list(args)))
        client.delete(key)
    return tasks


def _queued_batches(channel: str) -> list[list[int]]:
    """The delivery ids of every send_batch task waiting in a channel's queue (no worker runs)."""
    return [list(args[2]) for task, args in _queued_tasks(channel) if task == "dispatcher.send_batch"]


def test_a_later_tier_is_planned_a_page_per_task_and_each_subscriber_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later tier's planning task writes one page and queues the rest of the tier as a task of its
    own, so no planning task holds a worker for a whole tier; the last one plans the next tier.
    Driven by hand, no worker."""
    from dispatcher.engine import planner
    from dispatcher.store.models import BroadcastTier

    monkeypatch.setattr(planner, "PAGE", 2)
    harness.subscribers(tiered_audience(admins=1, stakeholders=0, customers=5))
    broadcast_id = harness.open(OutageMessage(title="sliced", impact="major"), send=False)
    _queued_tasks("control")

    def planned() -> tuple[list[str], str]:
        with harness.database.session() as session:
            addresses = session.scalars(
                select(Delivery.address).where(Delivery.broadcast_id == broadcast_id, Delivery.tier == 2)
            ).all()
            state = session.scalar(
                select(BroadcastTier.state).where(
                    BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == 2
                )
            )
        return sorted(addresses), str(state)

    seen, after, tasks = [], 0, 0
    while True:
        planner.plan_tier(harness.database, harness.settings, broadcast_id, 2, after)
        tasks += 1
        [(task, args)] = [t for t in _queued_tasks("control") if t[0] == "dispatcher.plan_tier"]
        assert task == "dispatcher.plan_tier"
        if args[1] != 2:  # the tier is planned: the next tier's planning is queued
            assert args == [broadcast_id, 3]
            break
        assert args[0] == broadcast_id and args[2] > after  # the rest of this tier, from a cursor
        after = args[2]
        addresses, state = planned()
        assert state == "planning" and len(addresses) == min(len(seen) + 2, 5)
        seen = addresses
    addresses, state = planned()
    assert state != "planning"
    assert addresses == sorted(f"cus{i}@example.com" for i in range(5))
    assert tasks == 4  # pages of 2, 2 and 1, then the look that finds no more


def test_a_tier_whose_turn_has_come_is_sent_page_by_page_and_each_row_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Customers need not wait for the last page of their tier to be planned; the per-tier watermark
    keeps the pages and the final dispatch from enqueuing a row twice. Driven by hand, no worker."""
    from sqlalchemy import update

    from dispatcher.engine import planner
    from dispatcher.engine.outbox import Outbox
    from dispatcher.engine.planner import plan_pages
    from dispatcher.engine.tier_gates import try_dispatch
    from dispatcher.store.models import BroadcastGate, BroadcastTier

    monkeypatch.setattr(planner, "PAGE", 2)
    harness.subscribers(tiered_audience(admins=1, stakeholders=0, customers=5))
    settings = harness.settings
    _queued_batches("email")

    def customers_of(broadcast_id: int) -> set[int]:
        with harness.database.session() as session:
            return set(
                session.scalars(
                    select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.tier == 2)
                )
            )

    def release_tiers_before(broadcast_id: int, tier: int) -> None:  # as their gates would
        with harness.database.session() as session:
            session.execute(
                update(BroadcastTier)
                .where(BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier < tier)
                .values(state="done")
            )
            session.execute(
                update(BroadcastGate)
                .where(BroadcastGate.broadcast_id == broadcast_id, BroadcastGate.tier < tier)
                .values(started_at=utcnow(), opened_by="accepted", opened_at=utcnow())
            )

    def dispatch(broadcast_id: int) -> None:
        outbox = Outbox()
        with harness.database.session() as session:
            assert try_dispatch(session, settings, broadcast_id, 2, outbox)
        outbox.flush()

    # The tiers before have passed their gates: each page is enqueued as it is written.
    streamed = harness.open(OutageMessage(title="paged", impact="major"), send=False)
    release_tiers_before(streamed, 2)
    plan_pages(harness.database, settings, streamed, 2, 3)
    pages = _queued_batches("email")
    assert [len(ids) for ids in pages] == [2, 2, 1]
    assert sorted(i for ids in pages for i in ids) == sorted(customers_of(streamed))
    dispatch(streamed)  # planning done: nothing left to enqueue
    assert _queued_batches("email") == []

    # The tier before is still sending: nothing goes until it is released, then everything once.
    waiting = harness.open(OutageMessage(title="waiting", impact="major"), send=False)
    plan_pages(harness.database, settings, waiting, 2, 3)
    assert _queued_batches("email") == []
    release_tiers_before(waiting, 2)
    dispatch(waiting)
    assert [sorted(ids) for ids in _queued_batches("email")] == [sorted(customers_of(waiting))]
    with harness.database.session() as session:
        tier = session.get(BroadcastTier, (waiting, 2))
        assert tier is not None and (tier.planned, tier.outstanding) == (5, 5)
