"""Opening incidents, posting updates, and turning each into a broadcast.

Everything here happens inside the caller's transaction and sends nothing: the HTTP request (or
CLI call) returns as soon as the broadcast is recorded; `enqueue` is called after commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import HttpUrl
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.base import ChannelName
from config import Settings
from dispatcher.domain import audience
from dispatcher.domain.errors import NotFound
from dispatcher.domain.message import (
    EventKind,
    Impact,
    Kind,
    OutageMessage,
    Publication,
    Status,
    check_transition,
)
from dispatcher.domain.policy import channels_for, impact_rose
from dispatcher.domain.quiet_hours import QUIET_IMPACTS
from dispatcher.domain.states import BroadcastState, TierState
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.snapshot import rebuild_snapshot
from dispatcher.engine.tier_gates import gate_rows
from dispatcher.engine.variants import default_key, render_variants
from dispatcher.store.models import Broadcast, BroadcastTier, Incident, IncidentUpdate, SubscriberList


def open_incident(
    session: Session,
    settings: Settings,
    message: OutageMessage,
    *,
    channels: Iterable[ChannelName] | None = None,
) -> tuple[Incident, Broadcast]:
    incident, _, broadcast = publish_incident(session, settings, message, channels=channels)
    assert broadcast is not None  # a default publication always notifies
    return incident, broadcast


def publish_incident(
    session: Session,
    settings: Settings,
    message: OutageMessage,
    *,
    channels: Iterable[ChannelName] | None = None,
    publication: Publication | None = None,
) -> tuple[Incident, IncidentUpdate, Broadcast | None]:
    """Opens the incident; its broadcast, or None for a silent opening (`notify: false`): recorded
    and shown on the status page, sent to nobody."""
    layout = tier_layout(session, settings)
    publication = (publication or Publication()).checked(private_of(layout), opening=True)
    posted = message.stamped()
    incident = Incident(
        kind=posted.kind.value,
        title=posted.title,
        status=posted.lifecycle_status.value,
        impact=posted.impact.value,
        message={},
        starts_at=posted.starts_at,
        ends_at=posted.ends_at,
        last_update_at=posted.posted_at,
    )
    session.add(incident)
    session.flush()
    posted = with_page_link(settings, incident.id, posted)
    incident.message = posted.model_dump(mode="json")
    event = EventKind.INCIDENT_OPENED if posted.kind is Kind.INCIDENT else EventKind.MAINTENANCE_SCHEDULED
    update = _record_update(session, incident, posted, event, publication, first=True)
    rebuild_snapshot(session, settings)  # the status page shows it when this commits
    if not publication.notify:
        return incident, update, None
    broadcast = create_broadcast(
        session, settings, incident, update, posted, event, channels=channels, layout=layout
    )
    return incident, update, broadcast


def with_page_link(settings: Settings, incident_id: int, message: OutageMessage) -> OutageMessage:
    """The message linking to this service's own incident page when the commander gave no
    `status_page_url` and DISPATCHER_PUBLIC_URL is set, so every channel's link points somewhere
    real. Stored on the incident, so every update carries it on."""
    if message.status_page_url is not None or "public_url" not in settings.model_fields_set:
        return message
    link = f"{settings.public_url.rstrip('/')}/status/incidents/{incident_id}"
    return message.model_copy(update={"status_page_url": HttpUrl(link)})


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
    incident, _, broadcast = publish_update(
        session, settings, incident_id, changes, reopen=reopen, channels=channels, event=event, now=now
    )
    assert broadcast is not None  # a default publication always notifies
    return incident, broadcast


def publish_update(
    session: Session,
    settings: Settings,
    incident_id: int,
    changes: dict[str, object],
    *,
    reopen: bool = False,
    channels: Iterable[ChannelName] | None = None,
    event: EventKind | None = None,
    now: datetime | None = None,
    publication: Publication | None = None,
) -> tuple[Incident, IncidentUpdate, Broadcast | None]:
    """post_update with a choice of publication: `notify: false` records the update (the page shows
    it) and returns no broadcast; `public: false` sends it to the chosen tiers only and leaves the
    incident's public state (its message, status, impact, title) as the last public update left it,
    so nothing internal leaks to the status page through the incident itself."""
    layout = tier_layout(session, settings)
    known = private_of(layout)
    publication = (publication or Publication()).checked(known)
    incident = session.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        raise NotFound(f"incident {incident_id} not found", fields=["id"])
    current = OutageMessage.model_validate(incident.message)
    updated = current.merged(changes).stamped(now)
    check_transition(current.lifecycle_status, updated.lifecycle_status, reopen=reopen)
    event = event or _update_event(current, updated)
    if publication.public:
        incident.message = updated.model_dump(mode="json")
        incident.starts_at, incident.ends_at = updated.starts_at, updated.ends_at
        incident.status = updated.lifecycle_status.value
        incident.impact = updated.impact.value
        incident.title = updated.title
        incident.updated_at = incident.last_update_at = updated.posted_at or datetime.now(UTC)
        if updated.lifecycle_status is Status.RESOLVED:
            incident.resolved_at = updated.posted_at
    audience_tiers = None if publication.public else publication.internal_tiers(known)
    update = _record_update(session, incident, updated, event, publication, audience_tiers)
    rebuild_snapshot(session, settings)  # the status page shows it (if public) when this commits
    if not publication.notify:
        return incident, update, None
    rose = impact_rose(Impact(current.impact), Impact(updated.impact))
    broadcast = create_broadcast(
        session,
        settings,
        incident,
        update,
        updated,
        event,
        channels=channels,
        impact_rose=rose,
        only_tiers=audience_tiers,
        layout=layout,
    )
    return incident, update, broadcast


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
    session: Session,
    incident: Incident,
    message: OutageMessage,
    event: EventKind,
    publication: Publication | None = None,
    tiers: list[int] | None = None,
    *,
    first: bool = False,
) -> IncidentUpdate:
    """The update row; `tiers`, an internal update's audience as resolved (the default made explicit).
    `first`: the incident was opened in this transaction, so this is its update 1 (no read)."""
    publication = publication or Publication()
    seq = 1
    if not first:
        latest = select(func.max(IncidentUpdate.seq)).where(IncidentUpdate.incident_id == incident.id)
        seq = (session.scalar(latest) or 0) + 1
    update = IncidentUpdate(
        incident_id=incident.id,
        seq=seq,
        event=event.value,
        status=message.lifecycle_status.value,
        message=message.model_dump(mode="json"),
        posted_at=message.posted_at,
        notify=publication.notify,
        public=publication.public,
        tiers=tiers,
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


def private_of(layout: tuple[list[int], int]) -> list[int]:
    """The tiers of a `tier_layout` an internal (`public: false`) update may go to: all but the public one."""
    tiers, public_tier = layout
    return [t for t in tiers if t != public_tier]


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
    only_tiers: Iterable[int] | None = None,
    layout: tuple[list[int], int] | None = None,
) -> Broadcast:
    """Records the broadcast, its tiers and its rendered variants; planning happens in a task.

    `only_tiers`: an internal broadcast (a `public: false` update) to those tiers alone, with no
    public tier and never on social (audience.internal_channels). `layout`: the `tier_layout` the
    caller already read in this transaction (read here when None)."""
    from channels.registry import build_channels

    sending_on = sending_channels(settings, event, override=channels, impact_rose=impact_rose)
    internal = only_tiers is not None
    if internal:
        sending_on = audience.internal_channels(sending_on)
    policy: dict[str, object] = {
        "channels": [c.value for c in sending_on],
        "scope": {"components": list(message.components), "regions": list(message.regions)},
        "quiet_hours": event is EventKind.MAINTENANCE_REMINDER and message.impact in QUIET_IMPACTS,
    }
    if internal:
        policy["internal"] = True  # no public tier: public_tier_of answers None
    compensation = compensation_text(settings, incident, message, event)
    if compensation:
        policy["compensation_tiers"] = sorted(settings.compensation_tiers)
        policy["compensation"] = compensation
    # kept so planning can render the variant of each language and zone it meets (engine/variants.py)
    policy["message"] = message.model_dump(mode="json")
    if only_tiers is not None:
        tiers = sorted(set(only_tiers))
    else:
        tiers = (layout or tier_layout(session, settings))[0]
    broadcast = Broadcast(
        incident_id=incident.id,
        update_id=update.id if update else None,
        event=event.value,
        state=BroadcastState.QUEUED,
        policy=policy,
        # held by the broadcast, so the request's answer needs no read (progress.opening_progress)
        tiers=[BroadcastTier(tier=tier, state=TierState.PLANNING) for tier in tiers],
        gates=gate_rows(tiers),
    )
    session.add(broadcast)
    session.flush()
    # The default language's variants now, so a reader the planner cannot place always has one;
    # every other language and zone is rendered when planning first meets it.
    keys = [default_key(settings)] + ([default_key(settings, compensated=True)] if compensation else [])
    render_variants(session, broadcast, message, build_channels(settings), settings, keys, stored=())
    session.flush()
    return broadcast


def compensation_text(
    settings: Settings, incident: Incident, message: OutageMessage, event: EventKind
) -> str | None:
    """The credit a resolved notice carries to the compensation tiers, or None.

    The message's own text when the commander wrote one; else the configured default once the
    outage lasted `compensation_after_s`. Either way only those tiers see it (their own variants,
    keyed `+compensation`): customers outside them are not promised a credit.
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
    outbox = Outbox()
    outbox.plan_broadcast(broadcast_id)
    outbox.flush()
