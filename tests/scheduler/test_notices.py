"""Maintenance notices against PostgreSQL and SQLite, with time passed in explicitly (no clock
freezing): each notice sent once, at its time; late rules; two pollers; a poller killed mid-way;
reschedule and cancel."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.domain.errors import Conflict
from dispatcher.domain.message import EventKind
from dispatcher.incidents import maintenance as mnt
from dispatcher.incidents.scheduler import fire, poll_schedule
from dispatcher.store.db import Database
from dispatcher.store.models import Incident
from tests.scheduler.conftest import broadcast_events, maintenance, notices, settings_for

T0 = datetime.now(UTC).replace(microsecond=0)
START = T0 + timedelta(days=4)
END = START + timedelta(hours=2)
S = timedelta(seconds=1)


def _schedule(db: Database, **overrides: object) -> int:
    settings = settings_for(db, **overrides)
    with db.session() as session:
        incident, _, _ = mnt.schedule(session, settings, maintenance(START), now=T0)
        return incident.id


def _status(db: Database, maintenance_id: int) -> str:
    with db.session() as session:
        return session.get(Incident, maintenance_id).status


def test_scheduling_sends_the_announcement_and_plans_every_notice(db: Database) -> None:
    mid = _schedule(db)
    rows = [(n.event, n.due_at, n.state) for n in notices(db, mid)]
    assert rows == [
        ("maintenance_scheduled", T0, "sent"),
        ("maintenance_reminder", START - timedelta(hours=72), "pending"),
        ("maintenance_reminder", START - timedelta(hours=24), "pending"),
        ("maintenance_reminder", START - timedelta(hours=1), "pending"),
        ("maintenance_started", START, "pending"),
        ("maintenance_completed", END, "pending"),
    ]
    assert broadcast_events(db) == ["maintenance_scheduled"]


def test_each_notice_is_sent_once_at_its_time_and_moves_the_status(db: Database) -> None:
    settings = settings_for(db)
    mid = _schedule(db)
    moments = [n.due_at for n in notices(db, mid) if n.state == "pending"]
    sent_at: Counter[str] = Counter()
    for moment in moments:
        assert poll_schedule(db, settings, now=moment - S).sent == []  # a second early: nothing
        for _ in range(3):  # repeated polls at the same moment send it once
            for notice_id in poll_schedule(db, settings, now=moment).sent:
                sent_at[str(notice_id)] += 1
        if moment == START:
            assert _status(db, mid) == "in_progress"
    assert len(sent_at) == 5 and set(sent_at.values()) == {1}
    assert _status(db, mid) == "completed"
    assert broadcast_events(db) == [
        "maintenance_scheduled",
        *["maintenance_reminder"] * 3,
        "maintenance_started",
        "maintenance_completed",
    ]
    assert all(n.state == "sent" and not n.late for n in notices(db, mid))


def test_after_an_outage_reminders_are_skipped_and_start_and_end_sent_late(db: Database) -> None:
    settings = settings_for(db)
    mid = _schedule(db)
    report = poll_schedule(db, settings, now=END + timedelta(hours=3))
    by_event = {(n.event, n.due_at): n for n in notices(db, mid)}
    reminders = [n for (event, _), n in by_event.items() if event == "maintenance_reminder"]
    assert [n.state for n in reminders] == ["skipped"] * 3
    assert by_event[("maintenance_started", START)].state == "sent"
    assert by_event[("maintenance_completed", END)].late is True
    assert len(report.sent) == 2 and len(report.late) == 5
    assert _status(db, mid) == "completed"
    # within the grace a reminder is still worth sending
    mid2 = _schedule(db)
    one_hour = START - timedelta(hours=1)
    poll_schedule(
        db, settings, now=START - timedelta(hours=24) + timedelta(seconds=settings.scheduler_grace_s)
    )
    assert [n.state for n in notices(db, mid2) if n.event == "maintenance_reminder"] == [
        "skipped",  # 72 h: 48 h late
        "sent",  # 24 h: exactly at the grace
        "pending",
    ]
    pending_reminders = [n.due_at for n in notices(db, mid2) if n.state == "pending"]
    assert pending_reminders[0] == one_hour


def test_two_pollers_at_once_send_each_notice_once(db: Database) -> None:
    settings = settings_for(db)
    ids = [_schedule(db) for _ in range(3)]
    moments = sorted({n.due_at for n in notices(db) if n.state == "pending"})
    sent: Counter[int] = Counter()
    lock = threading.Lock()
    for moment in moments:
        barrier = threading.Barrier(2)

        def run(name: str, moment: datetime = moment, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            report = poll_schedule(db, settings, now=moment, by=name)
            with lock:
                sent.update(report.sent)

        threads = [threading.Thread(target=run, args=(f"poller-{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(sent) == 15 and set(sent.values()) == {1}
    assert Counter(broadcast_events(db))["maintenance_reminder"] == 9
    assert {_status(db, mid) for mid in ids} == {"completed"}


def test_a_poller_killed_before_its_commit_leaves_the_notice_for_the_next(db: Database) -> None:
    settings = settings_for(db)
    mid = _schedule(db)
    first = next(n for n in notices(db, mid) if n.state == "pending")
    session = db._sessions()  # a poller's transaction, as `poll` opens it...
    assert fire(session, settings, first.id, first.due_at, "doomed") is not None
    session.rollback()  # ...killed before commit: the database undoes the claim and the broadcast
    session.close()
    assert broadcast_events(db) == ["maintenance_scheduled"]
    assert poll_schedule(db, settings, now=first.due_at + S).sent == [first.id]
    assert poll_schedule(db, settings, now=first.due_at + 2 * S).sent == []
    assert broadcast_events(db) == ["maintenance_scheduled", "maintenance_reminder"]


def test_reschedule_replans_and_nothing_withdrawn_is_sent(db: Database) -> None:
    settings = settings_for(db)
    mid = _schedule(db)
    poll_schedule(db, settings, now=START - timedelta(hours=72))  # the first reminder went out
    new_start = START + timedelta(days=7)
    now = START - timedelta(hours=60)
    with db.session() as session:
        incident, broadcast, _ = mnt.reschedule(
            session, settings, mid, starts_at=new_start, ends_at=new_start + timedelta(hours=3), now=now
        )
        assert broadcast.event == "maintenance_rescheduled"
        assert incident.starts_at == new_start
    states = Counter((n.event, n.state) for n in notices(db, mid))
    assert states[("maintenance_reminder", "withdrawn")] == 2
    assert states[("maintenance_started", "withdrawn")] == 1
    assert states[("maintenance_rescheduled", "sent")] == 1
    # the old moments pass in silence; the new ones send
    for old in (START - timedelta(hours=24), START - timedelta(hours=1), START, END):
        assert poll_schedule(db, settings, now=old).sent == []
    pending = [n for n in notices(db, mid) if n.state == "pending"]
    assert [n.due_at for n in pending] == [
        new_start - timedelta(hours=72),
        new_start - timedelta(hours=24),
        new_start - timedelta(hours=1),
        new_start,
        new_start + timedelta(hours=3),
    ]
    for notice in pending:
        assert poll_schedule(db, settings, now=notice.due_at).sent == [notice.id]
    assert _status(db, mid) == "completed"
    assert all(n.sent_at is None for n in notices(db, mid) if n.state == "withdrawn")


def test_a_running_maintenance_may_only_move_its_end(db: Database) -> None:
    settings = settings_for(db)
    mid = _schedule(db)
    poll_schedule(db, settings, now=START)
    with pytest.raises(Conflict), db.session() as session:
        mnt.reschedule(session, settings, mid, starts_at=START + S, now=START + S)
    with db.session() as session:
        _, broadcast, _ = mnt.reschedule(session, settings, mid, ends_at=END + timedelta(hours=1), now=START)
        assert broadcast.event == "maintenance_rescheduled"
    assert [(n.event, n.due_at) for n in notices(db, mid) if n.state == "pending"] == [
        ("maintenance_completed", END + timedelta(hours=1))
    ]
    assert _status(db, mid) == "in_progress"


def test_cancel_withdraws_pending_notices_and_sends_the_cancellation(db: Database) -> None:
    settings = settings_for(db)
    mid = _schedule(db)
    poll_schedule(db, settings, now=START - timedelta(hours=72))
    with db.session() as session:
        _, broadcast, _ = mnt.cancel(session, settings, mid, now=START - timedelta(hours=70))
        assert broadcast.event == EventKind.MAINTENANCE_CANCELLED.value
    assert poll_schedule(db, settings, now=END + timedelta(days=1)).sent == []
    assert Counter(n.state for n in notices(db, mid)) == {"sent": 3, "withdrawn": 4}
    assert _status(db, mid) == "cancelled"
    with pytest.raises(Conflict), db.session() as session:
        mnt.cancel(session, settings, mid)  # once is enough: no second cancellation goes out
    assert Counter(broadcast_events(db))["maintenance_cancelled"] == 1


def test_without_auto_transition_only_reminders_are_scheduled(db: Database) -> None:
    mid = _schedule(db, maintenance_auto_transition=False, maintenance_reminder_offsets_s=[3600])
    assert [(n.event, n.state) for n in notices(db, mid)] == [
        ("maintenance_scheduled", "sent"),
        ("maintenance_reminder", "pending"),
    ]
