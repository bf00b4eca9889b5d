"""The real scheduler loop: a real beat and worker (Celery on Redis), PostgreSQL and SQLite, the
provider sandbox. A maintenance a few seconds ahead with second-long offsets and a 1 s poll."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.incidents import maintenance as mnt
from dispatcher.incidents.broadcasts import enqueue
from dispatcher.store.models import Broadcast, Delivery, Incident, ScheduledNotice
from tests.harness import Harness

pytestmark = pytest.mark.slow

POLL_S = 1.0
LOOP = {
    "DISPATCHER_SCHEDULER_POLL_S": str(POLL_S),
    "DISPATCHER_MAINTENANCE_REMINDER_OFFSETS_S": "[4, 2]",
    "DISPATCHER_SCHEDULER_GRACE_S": "60",
}
PEOPLE = 3


def _audience(harness: Harness) -> None:
    harness.subscribers(
        [
            SubscriberIn(
                external_id=f"c{i}", lists=["customers"], email=f"c{i}@example.com", phone=f"+1415555{i:04d}"
            )
            for i in range(PEOPLE)
        ]
    )


def _running(*workers) -> None:  # type: ignore[no-untyped-def]
    """Until beat's poll has run on every worker's log at least once: processes take seconds to boot."""
    deadline = time.monotonic() + 60
    while not all("poll_schedule" in w.output() and "succeeded" in w.output() for w in workers):
        assert time.monotonic() < deadline, "the scheduler loop did not start"
        time.sleep(0.2)


def _schedule(harness: Harness, lead_s: float = 7, length_s: float = 3) -> int:
    starts = datetime.now(UTC) + timedelta(seconds=lead_s)
    with harness.database.session() as session:
        incident, broadcast, _ = mnt.schedule(
            session,
            harness.settings,
            mnt_message(starts, starts + timedelta(seconds=length_s)),
        )
        maintenance_id, broadcast_id = incident.id, broadcast.id
    enqueue(broadcast_id)
    return maintenance_id


def mnt_message(starts: datetime, ends: datetime):  # type: ignore[no-untyped-def]
    from dispatcher.domain.message import OutageMessage

    return OutageMessage(title="Database upgrade", kind="maintenance", starts_at=starts, ends_at=ends)


def _notices(harness: Harness, maintenance_id: int) -> list[ScheduledNotice]:
    with harness.database.session() as session:
        return list(
            session.scalars(
                select(ScheduledNotice)
                .where(ScheduledNotice.incident_id == maintenance_id)
                .order_by(ScheduledNotice.due_at)
            )
        )


def _wait_all_sent(harness: Harness, maintenance_id: int, timeout_s: float = 60) -> list[ScheduledNotice]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _notices(harness, maintenance_id)
        if all(n.state == "sent" for n in rows):
            for n in rows:
                assert n.broadcast_id is not None
                harness.wait(n.broadcast_id)
            return rows
        time.sleep(0.2)
    raise AssertionError([(n.event, n.state) for n in _notices(harness, maintenance_id)])


def _assert_each_notice_reached_each_person_once(harness: Harness, rows: list[ScheduledNotice]) -> None:
    assert [n.event for n in rows] == [
        "maintenance_scheduled",
        "maintenance_reminder",
        "maintenance_reminder",
        "maintenance_started",
        "maintenance_completed",
    ]
    with harness.database.session() as session:
        assert session.scalar(select(Broadcast.id).order_by(Broadcast.id.desc()).limit(1)) == max(
            n.broadcast_id for n in rows
        )
        assert len(session.scalars(select(Broadcast.id)).all()) == len(rows)  # one broadcast per notice
        status = session.scalar(select(Incident.status))
    assert status == "completed"
    emails = Counter(m["recipient"] for m in harness.sandbox.messages("email"))
    assert emails == {f"c{i}@example.com": len(rows) for i in range(PEOPLE)}
    texts = Counter(m["recipient"] for m in harness.sandbox.messages("sms"))
    assert texts == {f"+1415555{i:04d}": 1 for i in range(PEOPLE)}  # maintenance SMS: at the start only


def test_each_notice_is_sent_once_within_a_poll_interval(harness: Harness) -> None:
    harness.configure(**LOOP)
    _audience(harness)
    worker = harness.worker()
    harness.beat()
    _running(worker)
    mid = _schedule(harness)
    rows = _wait_all_sent(harness, mid)
    _assert_each_notice_reached_each_person_once(harness, rows)
    for notice in rows[1:]:
        assert notice.claimed_at is not None and not notice.late
        # beat's 1 s tick, plus the worker picking the poll task up
        assert timedelta(0) <= notice.claimed_at - notice.due_at <= timedelta(seconds=POLL_S + 1.5), (
            notice.event
        )


def test_a_scheduler_killed_and_restarted_sends_each_notice_once(harness: Harness) -> None:
    # a short lease: what the kill interrupts (a broadcast mid-planning) is the sweeper's to recover
    harness.configure(**LOOP, DISPATCHER_LEASE_S="3", DISPATCHER_SWEEP_INTERVAL_S="1")
    _audience(harness)
    worker = harness.worker()
    beat = harness.beat()
    _running(worker)
    mid = _schedule(harness, lead_s=8)
    deadline = time.monotonic() + 30
    while not any(n.event == "maintenance_reminder" and n.state == "sent" for n in _notices(harness, mid)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    worker.kill()  # SIGKILL, mid-flight, with whatever it was doing
    os.killpg(beat.pid, 9)
    beat.wait()
    time.sleep(6)  # the second reminder and the start fall due while nothing runs
    harness.worker()
    harness.beat()
    rows = _wait_all_sent(harness, mid)
    _assert_each_notice_reached_each_person_once(harness, rows)
    assert all(n.claimed_at - n.due_at <= timedelta(seconds=60) for n in rows)  # within the grace


def test_two_schedulers_at_once_send_each_notice_once(harness: Harness) -> None:
    harness.configure(**LOOP)
    _audience(harness)
    workers = [harness.worker(), harness.worker()]
    harness.beat()
    harness.beat()  # two beats: every poll runs twice, in parallel on two workers
    _running(*workers)
    mids = [_schedule(harness, lead_s=7 + i) for i in range(2)]
    for mid in mids:
        rows = _wait_all_sent(harness, mid)
        assert len({n.claimed_by for n in rows[1:]}) >= 1
    with harness.database.session() as session:
        notices = session.scalars(select(ScheduledNotice)).all()
        per_broadcast = Counter(
            session.scalars(select(Delivery.broadcast_id).where(Delivery.channel == "email")).all()
        )
    assert len(notices) == 10 and all(n.state == "sent" for n in notices)
    assert set(per_broadcast.values()) == {PEOPLE}
    emails = Counter(m["recipient"] for m in harness.sandbox.messages("email"))
    assert emails == {f"c{i}@example.com": 10 for i in range(PEOPLE)}
