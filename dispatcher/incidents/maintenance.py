"""Scheduled maintenance: a window announced in advance, reminded, started and completed on its own.

A maintenance is an Incident row of kind maintenance. Scheduling it sends the "scheduled" notice at
once and writes every later notice as a ScheduledNotice row (reminders before the start, the start,
the end); the scheduler (`dispatcher.incidents.scheduler`) polls those rows and claims each one atomically,
so nothing here relies on far-future Celery ETAs.

With `maintenance_auto_transition` (the default) the start and end notices also move the status
(scheduled -> in_progress -> completed). Without it no start or end notice is scheduled: the
commander posts those status changes, and each such update is its own notice, so customers never
hear "started" twice.

Lock order, everywhere: notice rows first, then the incident row. The scheduler claims a notice
and then locks its incident; reschedule and cancel withdraw the notices before touching the
incident. One order means two of them racing wait for each other instead of deadlocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.domain.errors import Conflict, NotFound, ValidationFailed
from dispatcher.domain.message import EventKind, Kind, OutageMessage, Status
from dispatcher.incidents.broadcasts import create_broadcast, open_incident, post_update
from dispatcher.store.models import Broadcast, Incident, ScheduledNotice


@dataclass(frozen=True)
class PlannedNotice:
    event: EventKind
    due_at: datetime
    state: str  # "pending", or "skipped" for a reminder whose moment has already passed


def notice_plan(
    now: datetime,
    starts_at: datetime,
    ends_at: datetime | None,
    offsets_s: list[float],
    *,
    started: bool = False,
    edges: bool = True,
) -> list[PlannedNotice]:
    """The notices a window gets after its announcement, in time order. Pure.

    A reminder `offset` seconds before the start is skipped when that moment has passed (a window
    scheduled 10 hours ahead gets no 24-hour reminder). The start and end notices (`edges`) are
    always planned: due in the past only means the next poll sends them. A window already
    `started` gets neither reminders nor a start notice.
    """
    plan: list[PlannedNotice] = []
    if not started:
        for offset in sorted({o for o in offsets_s if o > 0}, reverse=True):
            due = starts_at - timedelta(seconds=offset)
            plan.append(
                PlannedNotice(EventKind.MAINTENANCE_REMINDER, due, "pending" if due > now else "skipped")
            )
        if edges:
            plan.append(PlannedNotice(EventKind.MAINTENANCE_STARTED, starts_at, "pending"))
    if edges and ends_at is not None:
        plan.append(PlannedNotice(EventKind.MAINTENANCE_COMPLETED, ends_at, "pending"))
    return sorted(plan, key=lambda n: n.due_at)


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def schedule(
    session: Session, settings: Settings, message: OutageMessage, *, now: datetime | None = None
) -> tuple[Incident, Broadcast, list[ScheduledNotice]]:
    """Records the maintenance, its "scheduled" broadcast (enqueue it after commit) and its notices."""
    now = _now(now)
    if message.kind is not Kind.MAINTENANCE:
        raise ValidationFailed("kind must be 'maintenance'", fields=["kind"])
    if message.lifecycle_status is not Status.SCHEDULED:
        raise ValidationFailed("a new maintenance starts as 'scheduled'", fields=["status"])
    assert message.starts_at is not None  # the message validator requires it for maintenance
    if message.ends_at is None:
        raise ValidationFailed("a maintenance window needs ends_at", fields=["ends_at"])
    if message.ends_at <= now:
        raise ValidationFailed("the maintenance window has already ended", fields=["ends_at"])
    incident, broadcast = open_incident(session, settings, message)
    notices = [_sent(session, incident.id, EventKind.MAINTENANCE_SCHEDULED, now, broadcast)]
    notices += _write_plan(session, settings, incident.id, now, message.starts_at, message.ends_at, False)
    return incident, broadcast, notices


def reschedule(
    session: Session,
    settings: Settings,
    maintenance_id: int,
    *,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[Incident, Broadcast, list[ScheduledNotice]]:
    """Moves the window: pending notices are withdrawn and planned again, a "rescheduled" notice
    is recorded (enqueue its broadcast after commit). A maintenance in progress may only move its end."""
    now = _now(now)
    withdraw_pending(session, maintenance_id)
    incident = get_maintenance(session, maintenance_id)
    status = Status(incident.status)
    if status not in (Status.SCHEDULED, Status.IN_PROGRESS):
        raise Conflict(f"maintenance {maintenance_id} is {status.value}; it cannot move", fields=["id"])
    new_start = (starts_at or incident.starts_at or now).astimezone(UTC)
    new_end = (ends_at or incident.ends_at or now).astimezone(UTC)
    started = status is Status.IN_PROGRESS
    if started and incident.starts_at is not None and new_start != incident.starts_at:
        raise Conflict("the maintenance has started; only ends_at can change", fields=["starts_at"])
    if new_end <= now:
        raise ValidationFailed("the new window has already ended", fields=["ends_at"])
    changes: dict[str, object] = {"starts_at": new_start.isoformat(), "ends_at": new_end.isoformat()}
    incident, broadcast = post_update(
        session, settings, maintenance_id, changes, event=EventKind.MAINTENANCE_RESCHEDULED
    )
    notices = [_sent(session, incident.id, EventKind.MAINTENANCE_RESCHEDULED, now, broadcast)]
    notices += _write_plan(session, settings, incident.id, now, new_start, new_end, started)
    return incident, broadcast, notices


def cancel(
    session: Session, settings: Settings, maintenance_id: int, *, now: datetime | None = None
) -> tuple[Incident, Broadcast, list[ScheduledNotice]]:
    """Withdraws every pending notice and records the "cancelled" notice (enqueue after commit)."""
    now = _now(now)
    withdrawn = withdraw_pending(session, maintenance_id)
    status = Status(get_maintenance(session, maintenance_id).status)
    if status not in (Status.SCHEDULED, Status.IN_PROGRESS):
        raise Conflict(f"maintenance {maintenance_id} is already {status.value}", fields=["id"])
    incident, broadcast = post_update(session, settings, maintenance_id, {"status": Status.CANCELLED.value})
    notice = _sent(session, incident.id, EventKind.MAINTENANCE_CANCELLED, now, broadcast)
    return incident, broadcast, [*withdrawn, notice]


def send_notice(
    session: Session, settings: Settings, notice: ScheduledNotice, now: datetime
) -> Broadcast | None:
    """The broadcast for a claimed notice, or None when the maintenance has moved past it (its
    start was posted by hand, it was cancelled meanwhile): then the notice is skipped."""
    incident = session.get(Incident, notice.incident_id, with_for_update=True, populate_existing=True)
    if incident is None:
        return None
    status = Status(incident.status)
    event = EventKind(notice.event)
    if event is EventKind.MAINTENANCE_REMINDER and status is Status.SCHEDULED:
        message = OutageMessage.model_validate(incident.message).stamped(now)
        return create_broadcast(session, settings, incident, None, message, event)
    if event is EventKind.MAINTENANCE_STARTED and status is Status.SCHEDULED:
        return post_update(session, settings, incident.id, {"status": Status.IN_PROGRESS.value})[1]
    if event is EventKind.MAINTENANCE_COMPLETED and status is Status.IN_PROGRESS:
        return post_update(session, settings, incident.id, {"status": Status.COMPLETED.value})[1]
    return None


def get_maintenance(session: Session, maintenance_id: int) -> Incident:
    incident = session.get(Incident, maintenance_id, populate_existing=True)
    if incident is None or incident.kind != Kind.MAINTENANCE.value:
        raise NotFound(f"maintenance {maintenance_id} not found", fields=["id"])
    return incident


def withdraw_pending(session: Session, maintenance_id: int) -> list[ScheduledNotice]:
    """Pending notices -> withdrawn, in one conditional UPDATE: a notice the scheduler has already
    claimed is not pending any more, so it is either sent (before this) or never."""
    ids = session.scalars(
        update(ScheduledNotice)
        .where(ScheduledNotice.incident_id == maintenance_id, ScheduledNotice.state == "pending")
        .values(state="withdrawn")
        .returning(ScheduledNotice.id)
    ).all()
    if not ids:
        return []
    return list(
        session.scalars(
            select(ScheduledNotice)
            .where(ScheduledNotice.id.in_(ids))
            .order_by(ScheduledNotice.due_at)
            .execution_options(populate_existing=True)
        )
    )


def notices_of(session: Session, maintenance_id: int) -> list[ScheduledNotice]:
    return list(
        session.scalars(
            select(ScheduledNotice)
            .where(ScheduledNotice.incident_id == maintenance_id)
            .order_by(ScheduledNotice.due_at, ScheduledNotice.id)
            .execution_options(populate_existing=True)
        )
    )


def _write_plan(
    session: Session,
    settings: Settings,
    incident_id: int,
    now: datetime,
    starts_at: datetime,
    ends_at: datetime,
    started: bool,
) -> list[ScheduledNotice]:
    plan = notice_plan(
        now,
        starts_at,
        ends_at,
        settings.maintenance_reminder_offsets_s,
        started=started,
        edges=settings.maintenance_auto_transition,
    )
    rows = [
        ScheduledNotice(incident_id=incident_id, event=p.event.value, due_at=p.due_at, state=p.state)
        for p in plan
    ]
    session.add_all(rows)
    session.flush()
    return rows


def _sent(
    session: Session, incident_id: int, event: EventKind, now: datetime, broadcast: Broadcast
) -> ScheduledNotice:
    """A notice sent at once (scheduled / rescheduled / cancelled), kept so the timeline is whole."""
    notice = ScheduledNotice(
        incident_id=incident_id,
        event=event.value,
        due_at=now,
        state="sent",
        claimed_by="request",
        claimed_at=now,
        sent_at=now,
        broadcast_id=broadcast.id,
    )
    session.add(notice)
    session.flush()
    return notice


def describe(notice: ScheduledNotice) -> dict[str, object]:
    """A notice as the API and CLI show it."""
    return {
        "id": notice.id,
        "event": notice.event,
        "due_at": notice.due_at.isoformat(),
        "state": notice.state,
        "late": notice.late,
        "sent_at": notice.sent_at.isoformat() if notice.sent_at else None,
        "broadcast_id": notice.broadcast_id,
    }
