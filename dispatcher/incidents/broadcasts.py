"""Opening incidents, posting updates, and turning each into a broadcast.

Everything here happens inside the caller's transaction and sends nothing: the HTTP request (or
CLI call) returns as soon as the broadcast is recorded; `enqueue` is called after commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.base import ChannelName
from config import Settings
from dispatcher.domain.errors import NotFound
from dispatcher.domain.message import EventKind, Impact, Kind, OutageMessage, Status, check_transition
from dispatcher.domain.policy import channels_for, impact_rose
from dispatcher.domain.quiet_hours import QUIET_IMPACTS
from dispatcher.domain.states import BroadcastState, TierState
from dispatcher.engine.broker import app
from dispatcher.engine.snapshot import rebuild_snapshot
from dispatcher.engine.tier_gates import add_gates
from dispatcher.engine.variants import COMPENSATION_LOCALE, render_variants
from dispatcher.store.models import Broadcast, BroadcastTier, Incident, IncidentUpdate, SubscriberList


def open_incident(
    session: Session,
    settings: Settings,
    message: OutageMessage,
    *,
    channels: Iterable[ChannelName] | None = None,
) -> tuple[Incident, Broadcast]:
    posted = message.stamped()
    incident = Incident(
        kind=posted.kind.value,
        title=posted.title,
        status=posted.lifecycle_status.value,
        impact=posted.impact.value,
        message=posted.model_dump(mode="json"),
        starts_at=posted.starts_at,
        ends_at=posted.ends_at,
        last_update_at=posted.posted_at,
    )
    session.add(incident)
    session.flush()
    event = EventKind.INCIDENT_OPENED if posted.kind is Kind.INCIDENT else EventKind.MAINTENANCE_SCHEDULED
    update = _record_update(session, incident, posted, event)
    broadcast = create_broadcast(session, settings, incident, update, posted, event, channels=channels)
    rebuild_snapshot(session, settings)  # the status page shows it when this commits
    return incident, broadcast


def post_update(
    session: Session,
    settings: Settings,
    incident_id: int,
    changes: dict[str, object],
    *,
    reopen: bool = False,
    channels: Iterable[ChannelName] | None = None,
    event: EventKind | None = None,
    now: datetime | None = None,
) -> tuple[Incident, Broadcast]:
    """Applies a commander's changes to the current message; an invalid status move raises
    TransitionError (409) before anything is written. `event` overrides the notice kind derived from
    the status (a maintenance window moved while in progress is a reschedule, not a second start)."""
    incident = session.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        raise NotFound(f"incident {incident_id} not found", fields=["id"])
    current = OutageMessage.model_validate(incident.message)
    updated = current.merged(changes).stamped(now)
    check_transition(current.lifecycle_status, updated.lifecycle_status, reopen=reopen)
    event = event or _update_event(current, updated)
    incident.message = updated.model_dump(mode="json")
    incident.starts_at, incident.ends_at = updated.starts_at, updated.ends_at
    incident.status = updated.lifecycle_status.value
    incident.impact = updated.impact.value
    incident.title = updated.title
    incident.updated_at = incident.last_update_at = updated.posted_at or datetime.now(UTC)
    if updated.lifecycle_status is Status.RESOLVED:
        incident.resolved_at = updated.posted_at
    update = _record_update(session, incident, updated, event)
    rose = impact_rose(Impact(current.impact), Impact(updated.impact))
    broadcast = create_broadcast(
        session, settings, incident, update, updated, event, channels=channels, impact_rose=rose
    )
    rebuild_snapshot(session, settings)  # the status page shows it when this commits
    return incident, broadcast


def _update_event(before: OutageMessage, after: OutageMessage) -> EventKind:
    if after.kind is Kind.INCIDENT:
        return (
            EventKind.INCIDENT_RESOLVED
            if after.lifecycle_status is Status.RESOLVED
            else EventKind.INCIDENT_UPDATED
        )
    return {
        Status.IN_PROGRESS: EventKind.MAINTENANCE_STARTED,
        Status.COMPLETED: EventKind.MAINTENANCE_COMPLETED,
        Status.CANCELLED: EventKind.MAINTENANCE_CANCELLED,
    }.get(after.lifecycle_status, EventKind.MAINTENANCE_RESCHEDULED)


def _record_update(
    session: Session, incident: Incident, message: OutageMessage, event: EventKind
) -> IncidentUpdate:
    seq = (
        session.scalar(select(func.max(IncidentUpdate.seq)).where(IncidentUpdate.incident_id == incident.id))
        or 0
    ) + 1
    update = IncidentUpdate(
        incident_id=incident.id,
        seq=seq,
        event=event.value,
        status=message.lifecycle_status.value,
        message=message.model_dump(mode="json"),
        posted_at=message.posted_at,
    )
    session.add(update)
    session.flush()
    return update


def tier_layout(session: Session, settings: Settings) -> tuple[list[int], int]:
    """A broadcast's tiers, in order, and which of them is the public one: every configured or
    list tier, then one more for the public post. Broadcasts and previews must agree on this."""
    list_tiers = set(session.scalars(select(SubscriberList.tier).distinct())) | set(settings.tiers.values())
    public_tier = max(list_tiers, default=0) + 1
    return sorted(list_tiers | {public_tier}), public_tier


def sending_channels(
    settings: Settings,
    event: EventKind,
    *,
    override: Iterable[ChannelName] | None = None,
    impact_rose: bool = False,
) -> list[ChannelName]:
    """The channels a notice goes to under this service's settings: the one call a broadcast and
    its preview share, so a configured `channel_policy` counts the audience the broadcast plans."""
    return channels_for(
        event,
        enabled=[ChannelName(c) for c in settings.channels_enabled],  # strings in settings; callers get enums
        impact_rose=impact_rose,
        override=override,
        policy=settings.channel_policy,
    )


def create_broadcast(
    session: Session,
    settings: Settings,
    incident: Incident,
    update: IncidentUpdate | None,
    message: OutageMessage,
    event: EventKind,
    *,
    channels: Iterable[ChannelName] | None = None,
    impact_rose: bool = False,
) -> Broadcast:
    """Records the broadcast, its tiers and its rendered variants; planning happens in a task."""
    from channels.registry import build_channels

    sending_on = sending_channels(settings, event, override=channels, impact_rose=impact_rose)
    policy: dict[str, object] = {
        "channels": [c.value for c in sending_on],
        "scope": {"components": list(message.components), "regions": list(message.regions)},
        "quiet_hours": event is EventKind.MAINTENANCE_REMINDER and message.impact in QUIET_IMPACTS,
    }
    compensation = compensation_text(settings, incident, message, event)
    if compensation:
        policy["compensation_tiers"] = sorted(settings.compensation_tiers)
    broadcast = Broadcast(
        incident_id=incident.id,
        update_id=update.id if update else None,
        event=event.value,
        state=BroadcastState.QUEUED,
        policy=policy,
    )
    session.add(broadcast)
    session.flush()
    tiers, _ = tier_layout(session, settings)
    for tier in tiers:
        session.add(BroadcastTier(broadcast_id=broadcast.id, tier=tier, state=TierState.PLANNING))
    add_gates(session, broadcast.id, tiers)
    adapters = build_channels(settings)
    if compensation:
        without = message.model_copy(update={"compensation": None})
        render_variants(session, broadcast, without, adapters, settings)
        with_credit = message.model_copy(update={"compensation": compensation})
        render_variants(session, broadcast, with_credit, adapters, settings, locale=COMPENSATION_LOCALE)
    else:
        render_variants(session, broadcast, message, adapters, settings)
    session.flush()
    return broadcast


def compensation_text(
    settings: Settings, incident: Incident, message: OutageMessage, event: EventKind
) -> str | None:
    """The credit a resolved notice carries to the compensation tiers, or None.

    The message's own text when the commander wrote one; else the configured default once the
    outage lasted `compensation_after_s`. Either way only those tiers see it (their own variant,
    under COMPENSATION_LOCALE): customers outside them are not promised a credit.
    """
    if event is not EventKind.INCIDENT_RESOLVED or not settings.compensation_tiers:
        return None
    if message.compensation:
        return message.compensation
    ended = message.posted_at or datetime.now(UTC)
    lasted = (ended - incident.created_at).total_seconds() if incident.created_at else 0.0
    return settings.compensation_text if lasted >= settings.compensation_after_s else None


def enqueue(broadcast_id: int) -> None:
    """Hands the broadcast to the workers; call after the creating transaction committed."""
    app.send_task("dispatcher.run_broadcast", args=[broadcast_id], queue="control")
