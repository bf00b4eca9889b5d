"""Urgency across broadcasts and gates per channel, end to end: real Redis, a real worker, the
sandbox, SQLite and PostgreSQL. Ordering is read from the sandbox's recorded arrival order (`seq`),
never from wall-clock durations."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine.broker import PRIORITY_LATER, PRIORITY_URGENT, task_priority
from dispatcher.engine.ratelimit import busiest_window
from dispatcher.incidents.broadcasts import enqueue, post_update
from dispatcher.store.models import Broadcast, Delivery
from tests.harness import Harness


def test_first_tiers_and_gate_checks_are_urgent_and_later_tiers_are_not() -> None:
    from dispatcher.engine.broker import LANE_QUEUES, URGENT_QUEUE
    from dispatcher.engine.outbox import Outbox

    outbox = Outbox()
    outbox.plan_broadcast(1)
    outbox.check_gate(1, 0, 60)
    outbox.send_batch(1, "sms", [1], tier=0)
    outbox.send_batch(1, "sms", [2], tier=1)
    outbox.plan_tier(1, 1, 5000)
    outbox.finish_tier(1, 0)
    outbox.send_batch(1, "sms", [3], tier=0, countdown=1.2, slots={3: [0, 1.5]})  # a comeback
    queues = {(task, str(args[-1])): queue for task, args, queue, *_ in outbox.items}
    priorities = {(task, str(args[-1])): priority for task, args, _, _, priority in outbox.items}
    # everything urgent is on the one queue the lane takes; later work never is
    assert LANE_QUEUES == (URGENT_QUEUE,)
    assert queues[("dispatcher.run_broadcast", "1")] == URGENT_QUEUE
    assert queues[("dispatcher.check_gate", "0")] == URGENT_QUEUE
    assert queues[("dispatcher.send_batch", "[1]")] == URGENT_QUEUE
    assert queues[("dispatcher.send_batch", "[2]")] == "sms"
    assert queues[("dispatcher.plan_tier", "5000")] == "control"
    # the first tier's tail runs on the lane, behind its batches
    assert queues[("dispatcher.finish_tier", "0")] == URGENT_QUEUE
    # a first-tier batch that comes back later (with its kept slot) is the pool's, still first in line
    assert queues[("dispatcher.send_batch", "{'3': [0, 1.5]}")] == "sms"
    assert priorities[("dispatcher.send_batch", "{'3': [0, 1.5]}")] == PRIORITY_URGENT
    assert priorities[("dispatcher.send_batch", "[2]")] == PRIORITY_LATER

    assert task_priority("dispatcher.send_batch", "urgent") == PRIORITY_URGENT  # a first tier's batch
    assert task_priority("dispatcher.run_broadcast", "control") == PRIORITY_URGENT  # plans the first tier
    assert task_priority("dispatcher.check_gate", "control") == PRIORITY_URGENT
    assert task_priority("dispatcher.plan_tier", "control") == PRIORITY_LATER  # the tiers after it
    for queue in ("email", "sms", "chat", "social", "webhook"):
        assert task_priority("dispatcher.send_batch", queue) == PRIORITY_LATER
    assert PRIORITY_URGENT < PRIORITY_LATER  # kombu's Redis transport serves lower steps first


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def _arrivals(harness: Harness) -> dict[tuple[int, int, str], list[int]]:
    """The sandbox's arrival order (seq) of every email and SMS, by (broadcast, tier, channel)."""
    with harness.database.session() as session:
        where = {
            d.id: (d.broadcast_id, d.tier, d.channel)
            for d in session.execute(
                select(Delivery.id, Delivery.broadcast_id, Delivery.tier, Delivery.channel)
            )
        }
    found: dict[tuple[int, int, str], list[int]] = defaultdict(list)
    for message in harness.sandbox.messages():
        if message["channel"] in ("email", "sms") and message.get("delivery_id"):
            found[where[int(message["delivery_id"])]].append(int(message["seq"]))
    return found


def _gates(progress: dict[str, Any]) -> dict[tuple[int, str], str | None]:
    return {(t["tier"], c): g["opened_by"] for t in progress["tiers"] for c, g in t["gates"].items()}


@pytest.mark.slow
def test_gates_are_per_channel_slow_admin_sms_do_not_hold_customers_email(harness: Harness) -> None:
    admins, customers = 10, 30
    harness.configure(DISPATCHER_RATE_TWILIO_PER_S="2")  # the admins' SMS crawl: ~5 s for ten
    harness.subscribers(
        [
            SubscriberIn(external_id=f"a{i}", lists=["admins"], email=f"a{i}@example.com", phone=phone(i))
            for i in range(admins)
        ]
        + [
            SubscriberIn(
                external_id=f"c{i}", lists=["customers"], email=f"c{i}@example.com", phone=phone(100 + i)
            )
            for i in range(customers)
        ]
    )
    harness.worker()
    broadcast_id = harness.open(channels=["email", "sms"])
    done = harness.wait(broadcast_id, timeout_s=120)

    arrivals = _arrivals(harness)
    b = broadcast_id
    assert len(arrivals[(b, 0, "sms")]) == admins and len(arrivals[(b, 2, "email")]) == customers
    # customers' email started while the admins' SMS were still crawling
    assert min(arrivals[(b, 2, "email")]) < max(arrivals[(b, 0, "sms")])
    # and on every channel, every tier-0 message arrived before the first message of a later tier
    for channel in ("email", "sms"):
        later = [s for (bid, tier, ch), seqs in arrivals.items() if ch == channel and tier > 0 for s in seqs]
        assert max(arrivals[(b, 0, channel)]) < min(later), channel
    gates = _gates(done)
    assert gates[(0, "email")] == gates[(0, "sms")] == "accepted"  # by acceptance, not timeout
    tier0 = done["tiers"][0]["gates"]
    assert tier0["email"]["opened_at"] < tier0["sms"]["opened_at"]  # email's gate did not wait for SMS
    assert done["tiers"][0]["gate"] == "accepted"


@pytest.mark.slow
def test_later_updates_do_not_starve_the_first_broadcasts_sms(harness: Harness) -> None:
    """The probe of issue 11, scaled down: updates posted during a broadcast. Their email (the
    updates go to email only) must not keep the first broadcast's later-tier SMS waiting: those
    go out while the updates are still being sent, its gates open by acceptance, and it completes
    before the last update does. One worker process: urgency must not depend on a spare one."""
    admins, stakeholders, customers, updates = 10, 40, 450, 12
    subs = [
        SubscriberIn(external_id=f"a{i}", lists=["admins"], email=f"a{i}@example.com", phone=phone(i))
        for i in range(admins)
    ]
    subs += [
        SubscriberIn(
            external_id=f"s{i}", lists=["stakeholders"], email=f"s{i}@example.com", phone=phone(1000 + i)
        )
        for i in range(stakeholders)
    ]
    subs += [  # a third of the customers also by SMS
        SubscriberIn(
            external_id=f"c{i}",
            lists=["customers"],
            email=f"c{i}@example.com",
            phone=phone(2000 + i) if i % 3 == 0 else None,
        )
        for i in range(customers)
    ]
    harness.subscribers(subs)
    harness.worker(concurrency=1)
    first = harness.open()
    with harness.database.session() as session:
        incident_id = session.scalar(select(Broadcast.incident_id).where(Broadcast.id == first))
    later: list[int] = []
    for n in range(updates):
        with harness.database.session() as session:
            _, broadcast = post_update(session, harness.settings, incident_id, {"summary": f"update {n}"})
            later.append(broadcast.id)
        enqueue(later[-1])
    last = later[-1]
    done = harness.wait(first, timeout_s=300)
    deadline = time.monotonic() + 300
    while harness.progress(last)["state"] != "completed":
        assert time.monotonic() < deadline, harness.progress(last)
        time.sleep(0.5)

    arrivals = _arrivals(harness)
    sms_later_tiers = arrivals[(first, 1, "sms")] + arrivals[(first, 2, "sms")]
    assert len(sms_later_tiers) == stakeholders + len(range(0, customers, 3))
    # the first broadcast's later-tier SMS were all out before the last update's customers' email
    assert max(sms_later_tiers) < max(arrivals[(last, 2, "email")])
    # every gate of the first broadcast opened because its tier was accepted, none by timeout
    assert set(_gates(done).values()) == {"accepted"}, _gates(done)
    assert done["completed_at"] <= harness.progress(last)["completed_at"]
    # first tiers first: every update's admins heard before any update's customers' email
    first_tiers = [max(arrivals[(b, 0, "email")]) for b in later]
    assert max(first_tiers) < max(arrivals[(last, 2, "email")])


def _states(harness: Harness, broadcast_id: int, tier: int, channel: str) -> list[str]:
    with harness.database.session() as session:
        return list(
            session.scalars(
                select(Delivery.state).where(
                    Delivery.broadcast_id == broadcast_id, Delivery.tier == tier, Delivery.channel == channel
                )
            )
        )


def _until(check: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("lane", [True, False], ids=["lane", "pool-alone"])
def test_the_urgent_lane_serves_a_new_incident_while_the_pool_is_held(harness: Harness, lane: bool) -> None:
    """Priority orders what waits; it cannot stop a task that is running. The pool's one process is
    held by a later tier's slow Slack batch (6 s a post): with the urgent lane, a second incident's
    admins are sent while that batch is still in flight; with the pool alone they wait for it (the
    control case: it shows the first assertion could fail)."""
    admins, stakeholders = 5, 10
    harness.configure(DISPATCHER_PROVIDER_TIMEOUT_S="20")
    harness.sandbox.set_faults("slack", latency_ms=6000)
    harness.subscribers(
        [
            SubscriberIn(external_id=f"a{i}", lists=["admins"], email=f"a{i}@example.com")
            for i in range(admins)
        ]
        + [
            SubscriberIn(external_id=f"s{i}", lists=["stakeholders"], slack_channel=f"C{i:08d}")
            for i in range(stakeholders)
        ]
    )
    harness.worker(concurrency=1)
    if lane:
        harness.worker(concurrency=1, queues="urgent")
    first = harness.open(channels=["email", "chat"])
    _until(lambda: "sending" in _states(harness, first, 1, "chat"), "the Slack batch never started")
    second = harness.open(
        OutageMessage(title="Search is down", impact="major", status_page_url="https://status.example.com"),
        channels=["email"],
    )
    _until(lambda: _states(harness, second, 0, "email") == ["sent"] * admins, "the admins were never sent")
    held = _states(harness, first, 1, "chat").count("sending")
    if lane:
        assert held == stakeholders  # the pool's batch was still in flight: nobody waited for it
    else:
        assert held == 0  # the admins' planning waited for the batch to end
    harness.sandbox.clear_faults()


@pytest.mark.slow
def test_on_the_lane_a_batch_sleeps_for_no_slot(harness: Harness) -> None:
    """A first-tier SMS batch on the urgent lane whose next slot is not due at once keeps it and
    hands its row to the pool, rather than sleeping in the lane: the next incident's admin email,
    queued behind it, goes out first. At 1/s with a 3 s window, the batch's second slot is 1.25 s
    out; a lane that slept for it would send that SMS before the email (the ordering could fail)."""
    harness.configure(DISPATCHER_RATE_TWILIO_PER_S="1", DISPATCHER_RATE_PACE_WINDOW_S="3")
    harness.subscribers(
        [SubscriberIn(external_id=f"p{i}", lists=["admins"], phone=phone(i)) for i in range(2)]
        + [SubscriberIn(external_id="e0", lists=["admins"], email="e0@example.com")]
    )
    harness.worker(concurrency=1, queues="urgent")  # the lane alone, for now
    first = harness.open(channels=["sms"])
    second = harness.open(
        OutageMessage(title="Search is down", impact="major", status_page_url="https://status.example.com"),
        channels=["email"],
    )
    _until(lambda: _states(harness, second, 0, "email") == ["sent"], "the second incident's admin email")
    # one SMS went out at once; the other kept its slot and waits for the pool, not in the lane
    assert sorted(_states(harness, first, 0, "sms")) == ["pending", "sent"]
    harness.worker(concurrency=1)  # the pool: it takes the handed-back row
    done = harness.wait(first, timeout_s=60)
    assert done["totals"]["sent"] == 2
    arrivals = _arrivals(harness)
    assert len(arrivals[(first, 0, "sms")]) == 2
    assert arrivals[(second, 0, "email")][0] < max(arrivals[(first, 0, "sms")])
    times = [m["received_at"] for m in harness.sandbox.messages() if m["channel"] == "sms"]
    assert busiest_window(times) <= 1  # and the limit held: never two in one second
