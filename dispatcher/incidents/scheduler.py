"""The scheduler: each beat poll sends the maintenance notices that are due, exactly once.

No far-future Celery ETAs (Redis would redeliver them past its visibility timeout): notices are
rows, and every poll looks for the due ones. Each notice is claimed by a conditional
`UPDATE ... WHERE id = :id AND state = 'pending' RETURNING`, in the same transaction that creates
its broadcast, and the broadcast is enqueued only after that commit. So two pollers at once, a
poller restarted mid-way or a slow worker cannot send a notice twice: the loser's UPDATE matches
nothing (PostgreSQL re-checks the row after the winner commits; SQLite serialises the writers),
and a poller killed before its commit leaves the notice pending for the next poll. A broadcast
committed but never enqueued (killed between the two) is re-planned by the sweeper.

Notices that fell due while the service was down: a reminder more than `scheduler_grace_s` late
is skipped (a "starts in 24 hours" sent 20 hours late is wrong, and the start notice follows); a
start or end notice is always sent, marked `late`, because the status it carries is still news.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.domain.message import EventKind
from dispatcher.incidents import cadence
from dispatcher.incidents.maintenance import send_notice
from dispatcher.store.db import Database
from dispatcher.store.models import ScheduledNotice

log = logging.getLogger(__name__)
BATCH = 100  # notices per poll; the rest wait one poll interval


@dataclass
class PollReport:
    sent: list[int] = field(default_factory=list)  # notice ids
    skipped: list[int] = field(default_factory=list)
    late: list[int] = field(default_factory=list)
    broadcasts: list[int] = field(default_factory=list)
    reminded: list[int] = field(default_factory=list)  # incidents whose commanders were reminded


def scheduler_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def due_notice_ids(session: Session, now: datetime, limit: int = BATCH) -> list[int]:
    return list(
        session.scalars(
            select(ScheduledNotice.id)
            .where(ScheduledNotice.state == "pending", ScheduledNotice.due_at <= now)
            .order_by(ScheduledNotice.due_at, ScheduledNotice.id)
            .limit(limit)
        )
    )


def claim(session: Session, notice_id: int, now: datetime, by: str) -> ScheduledNotice | None:
    """Claims one due notice for this transaction; None when another poller has it, or it was
    withdrawn. Must be the transaction's first write (SQLite then takes its write lock here)."""
    claimed = session.execute(
        update(ScheduledNotice)
        .where(
            ScheduledNotice.id == notice_id,
            ScheduledNotice.state == "pending",
            ScheduledNotice.due_at <= now,
        )
        .values(state="claimed", claimed_by=by, claimed_at=now)
        .returning(ScheduledNotice.id)
    ).first()
    if claimed is None:
        return None
    return session.get(ScheduledNotice, notice_id, populate_existing=True)


def fire(
    session: Session, settings: Settings, notice_id: int, now: datetime, by: str
) -> ScheduledNotice | None:
    """Claim, decide and record one notice, all in the caller's transaction."""
    notice = claim(session, notice_id, now, by)
    if notice is None:
        return None
    late = now - notice.due_at > timedelta(seconds=settings.scheduler_grace_s)
    if late and EventKind(notice.event) is EventKind.MAINTENANCE_REMINDER:
        notice.state = "skipped"
        notice.late = True
        return notice
    broadcast = send_notice(session, settings, notice, now)
    if broadcast is None:
        notice.state = "skipped"
        return notice
    notice.state, notice.late, notice.sent_at, notice.broadcast_id = "sent", late, now, broadcast.id
    session.flush()
    return notice


def poll_schedule(
    database: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    by: str | None = None,
    enqueue: Callable[[int], None] | None = None,
) -> PollReport:
    """One scheduler pass: due notices, then commander reminders. `enqueue` (the task passes
    `broadcasts.enqueue`) runs after each notice's commit; tests leave it out and plan by hand."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    by = by or scheduler_id()
    report = PollReport()
    with database.session() as session:
        ids = due_notice_ids(session, now)
    for notice_id in ids:
        try:
            with database.session() as session:
                notice = fire(session, settings, notice_id, now, by)
                outcome = (notice.state, notice.late, notice.broadcast_id) if notice else None
        except Exception:  # one bad notice must not hold up the others; it stays pending
            log.exception("scheduled notice %s could not be sent; it stays pending", notice_id)
            continue
        if outcome is None:
            continue
        state, late, broadcast_id = outcome
        (report.sent if state == "sent" else report.skipped).append(notice_id)
        if late:
            report.late.append(notice_id)
        if broadcast_id is not None and state == "sent":
            report.broadcasts.append(broadcast_id)
            if enqueue is not None:
                enqueue(broadcast_id)
    report.reminded = cadence.remind_due(database, settings, now=now)
    return report
