"""Urgency across broadcasts and gates per channel, end to end: real Redis, a real worker, the
sandbox, SQLite and PostgreSQL. Ordering is read from the sandbox's recorded arrival order (`seq`),
never from wall-clock durations."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine.broker import PRIORITY_LATER, PRIORITY_URGENT, task_priority
from dispatcher.incidents.broadcasts import enqueue, post_update
from dispatcher.store.models import Broadcast, Delivery
from tests.harness import Harness


def test_first_tiers_and_gate_checks_are_urgent_and_later_tiers_are_not() -> None:
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
