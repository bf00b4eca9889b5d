"""Pacing end to end (real Redis, worker, database and sandbox): no batch sleeps through a rate
limit, so a second incident's admins are not held behind the first one's SMS crawling at 1/s, and
Twilio sender pools and messaging services send at their own rates.

No wall-clock assertions: order and counts, the per-second maxima of the sandbox's arrival times,
and what each task did."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable

import pytest
import redis
from sqlalchemy import select

from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine import provider_metrics
from dispatcher.store.models import Delivery
from tests.harness import Harness

pytestmark = pytest.mark.slow

# Twilio at its shipped default, one long code at 1/s. Headroom 0.75 leaves room for arrivals to
# bunch on a loaded machine, so the sandbox's per-second maxima stay a sound assertion.
ONE_PER_S = {"DISPATCHER_RATE_TWILIO_PER_S": "1", "DISPATCHER_RATE_HEADROOM": "0.75"}


def phone(i: int) -> str:
    return f"+1415556{i:04d}"


def admins(n: int) -> list[SubscriberIn]:
    return [
        SubscriberIn(external_id=f"adm{i}", lists=["admins"], email=f"adm{i}@example.com", phone=phone(i))
        for i in range(n)
    ]


def ids_of(harness: Harness, broadcast_id: int, channel: str) -> set[str]:
    with harness.database.session() as session:
        found = session.scalars(
            select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.channel == channel)
        )
        return {str(i) for i in found}


def arrived(harness: Harness, channel: str, ids: set[str]) -> list[float]:
    return sorted(m["received_at"] for m in harness.sandbox.messages(channel) if m["delivery_id"] in ids)


def busiest_second(times: Iterable[float]) -> int:
    """The most arrivals in any one-second window."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def twilio_stats(harness: Harness) -> dict[str, float]:
    client = redis.Redis.from_url(harness.settings.redis_url or "")
    return provider_metrics.read(client, harness.settings, ("twilio",)).get("twilio", {})


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_second_incidents_admins_are_not_held_behind_the_first_ones_paced_sms(
    harness: Harness, processes: int
) -> None:
    n = 40
    harness.configure(**ONE_PER_S)
    harness.subscribers(admins(n))
    harness.worker(concurrency=processes)
    first = harness.open(OutageMessage(title="Checkout is failing", impact="major"))
    wait_for(lambda: len(ids_of(harness, first, "sms")) == n, 60, "A's planning")
    a_sms = ids_of(harness, first, "sms")
    wait_for(lambda: len(arrived(harness, "sms", a_sms)) >= 2, 60, "A's SMS to start pacing")

    second = harness.open(OutageMessage(title="Login is failing", impact="major"))
    wait_for(lambda: len(ids_of(harness, second, "email")) == n, 60, "B's planning")
    b_email = ids_of(harness, second, "email")
    wait_for(lambda: len(arrived(harness, "email", b_email)) == n, 60, "B's admin emails")

    # B's 40 admin emails all reached the sandbox while A still had SMS to send at 1/s
    a_sent = arrived(harness, "sms", a_sms)
    assert len(a_sent) < n, "A's SMS should still be pacing"
    assert busiest_second(arrived(harness, "sms", a_sms | ids_of(harness, second, "sms"))) <= 1


def test_a_paced_batch_hands_back_what_it_has_no_slots_for(harness: Harness) -> None:
    n = 8
    harness.configure(**ONE_PER_S)
    harness.subscribers(admins(n))
    worker = harness.worker()
    before = twilio_stats(harness)  # the run's totals: other tests share its Redis prefix
    broadcast_id = harness.open(channels=["sms"])
    done = harness.wait(broadcast_id, timeout_s=120)

    assert done["totals"]["sent"] == n
    with harness.database.session() as session:
        rows = list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))
    # handing back is not an attempt and not a failure
    assert [(r.state, r.attempts, r.last_error_code) for r in rows] == [("sent", 1, None)] * n
    # all eight rows were one batch of the plan; it went out over many short tasks, one message each
    # at 1/s (two at most: the window may hold a slot at each end), never a task pacing all of them
    after = twilio_stats(harness)
    recipients, batches = (after[k] - before.get(k, 0) for k in ("recipients", "batches"))
    assert recipients == n and batches >= n / 2
    runtimes = [
        float(s)
        for s in re.findall(r"dispatcher\.send_batch\[[^\]]+\] succeeded in ([0-9.]+)s", worker.output())
    ]
    assert len(runtimes) >= n / 2
    # the old pacing held a worker about ten seconds per batch at 1/s; now none holds it past its
    # one-second window plus the call and the bookkeeping
    assert max(runtimes) < 5, runtimes
    assert busiest_second(m["received_at"] for m in harness.sandbox.messages("sms")) <= 1


def test_several_sender_numbers_each_keep_their_own_rate_and_add_up(harness: Harness) -> None:
    numbers = ["+15005550006", "+15005550007", "+15005550008"]
    n = 15
    harness.configure(**ONE_PER_S, DISPATCHER_TWILIO_FROM=",".join(numbers))
    harness.sandbox.set_faults("twilio", senders=numbers)
    harness.subscribers(admins(n))
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    done = harness.wait(broadcast_id, timeout_s=120)

    assert done["totals"]["sent"] == n
    by_sender: dict[str, list[float]] = defaultdict(list)
    for message in harness.sandbox.messages("sms"):
        by_sender[message["from"]].append(message["received_at"])
    assert set(by_sender) == set(numbers)
    for number, times in by_sender.items():
        assert busiest_second(times) <= 1, number  # never more than 1/s from any one number
        assert len(times) >= n // 3 - 1, {k: len(v) for k, v in by_sender.items()}  # spread evenly
    everything = [t for times in by_sender.values() for t in times]
    assert 2 <= busiest_second(everything) <= len(numbers)  # together: more than one number's rate


def test_a_messaging_service_sends_through_its_sid_at_its_own_rate(harness: Harness) -> None:
    service = "MG" + "0123456789abcdef" * 2
    n = 9
    harness.configure(
        **ONE_PER_S,
        DISPATCHER_TWILIO_MESSAGING_SERVICE_SID=service,
        DISPATCHER_RATE_TWILIO_MESSAGING_SERVICE_PER_S="4",
    )
    harness.subscribers(admins(n))
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    done = harness.wait(broadcast_id, timeout_s=120)

    assert done["totals"]["sent"] == n
    records = harness.sandbox.messages("sms")
    assert {r["messaging_service_sid"] for r in records} == {service}
    # the service's rate (4/s at headroom 0.75: 3/s), not the long code's 1/s
    assert 2 <= busiest_second(r["received_at"] for r in records) <= 4
