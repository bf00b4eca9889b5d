"""Update cadence: an open incident that goes quiet reminds its commanders to post an update.

Customers who were told "next update in 30 minutes" and hear nothing assume the worst. So an open
incident with no update for its cadence (per impact level, `update_cadence_s`), or whose promised
`next_update_at` passes without an update, reminds the `commander_contacts` (emails and Slack
channels), and again every cadence until an update is posted; resolving ends it.

Driven by the scheduler's beat poll, never by long countdowns. Idempotent across pollers: each
reminder is a compare-and-set of `incidents.last_reminded_at` (and of `last_update_at`, so an update
posted meanwhile cancels it); only the poller whose UPDATE matched records the reminder.

A reminder is a small broadcast of its own, recorded in that same transaction: one tier (tier 0,
so its sends take the urgent queue), a delivery row per commander contact, and the engine's
guarantees: throttle, breaker, retries, receipts, the sweeper. It is queued after commit.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from channels.base import ChannelName, Variant
from config import Settings
from dispatcher.domain.message import FINAL_STATUSES, Impact, Kind, OutageMessage
from dispatcher.domain.states import BroadcastState, TierState
from dispatcher.engine.tier_gates import add_gates
from dispatcher.incidents.broadcasts import enqueue
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, BroadcastTier, BroadcastVariant, Incident

log = logging.getLogger(__name__)
DEFAULT_CADENCE_S = 1800.0
REMINDER_EVENT = "update_reminder"  # the broadcast's event: not a notice to subscribers
REMINDER_TIER = 0  # the first tier: its sends take the urgent queue
_SLACK = re.compile(r"^(#[\w.-]+|[CGD][A-Z0-9]{6,})$")


def cadence_for(settings: Settings, impact: str) -> timedelta:
    return timedelta(seconds=settings.update_cadence_s.get(Impact(impact), DEFAULT_CADENCE_S))


def reminder_due(
    now: datetime,
    last_update_at: datetime,
    last_reminded_at: datetime | None,
    cadence: timedelta,
    next_update_at: datetime | None = None,
) -> bool:
    """Pure: whether commanders should be reminded now.

    Due when a cadence has passed since the later of the last update and the last reminder, or
    when the promised next update time has passed since either of them.
    """
    since = max(last_update_at, last_reminded_at) if last_reminded_at else last_update_at
    if now - since >= cadence:
        return True
    return next_update_at is not None and since < next_update_at <= now


def remind_due(database: Database, settings: Settings, *, now: datetime | None = None) -> list[int]:
    """Reminds commanders of every open incident that is due; returns those incidents' ids."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if not settings.commander_contacts:
        return []
    final = [s.value for s in FINAL_STATUSES]
    with database.session() as session:
        candidates = session.execute(
            select(
                Incident.id,
                Incident.impact,
                Incident.last_update_at,
                Incident.last_reminded_at,
                Incident.message,
            ).where(Incident.kind == Kind.INCIDENT.value, Incident.status.not_in(final))
        ).all()
    reminded: list[int] = []
    for incident_id, impact, last_update_at, last_reminded_at, message in candidates:
        next_update = OutageMessage.model_validate(message).next_update_at if message else None
        if not reminder_due(
            now, last_update_at, last_reminded_at, cadence_for(settings, impact), next_update
        ):
            continue
        with database.session() as session:
            won = session.execute(
                update(Incident)
                .where(
                    Incident.id == incident_id,
                    Incident.last_update_at == last_update_at,
                    Incident.last_reminded_at.is_(None)
                    if last_reminded_at is None
                    else Incident.last_reminded_at == last_reminded_at,
                    Incident.status.not_in(final),
                )
                .values(last_reminded_at=now)
                .returning(Incident.title, Incident.status)
            ).first()
            if won is None:
                continue  # another poller reminded, or an update arrived meanwhile
            broadcast_id = record_reminder(
                session, settings, incident_id, won.title, won.status, now - last_update_at
            )
        reminded.append(incident_id)
        if broadcast_id is not None:
            enqueue(broadcast_id)
    return reminded


def reminder_contacts(settings: Settings, enabled: Collection[ChannelName]) -> list[tuple[ChannelName, str]]:
    """Each commander contact with the channel that reaches it (Slack channels by their look)."""
    contacts = []
    for contact in settings.commander_contacts:
        channel = ChannelName.CHAT if _SLACK.match(contact) else ChannelName.EMAIL
        if channel not in enabled:
            log.warning("cannot remind %s: channel %s is not enabled", contact, channel.value)
            continue
        contacts.append((channel, contact))
    return contacts


def record_reminder(
    session: Session, settings: Settings, incident_id: int, title: str, status: str, quiet_for: timedelta
) -> int | None:
    """Records the reminder as a broadcast to the commander contacts, in the caller's transaction;
    returns its id (None when no contact's channel is enabled)."""
    from channels.chat.condense import ChatVariant
    from channels.email.condense import EmailVariant

    contacts = reminder_contacts(settings, settings.channels_enabled)
    if not contacts:
        return None
    minutes = int(quiet_for.total_seconds() // 60)
    text = (
        f'Incident {incident_id} "{title}" ({status}) has had no update for {minutes} minutes. '
        "Customers are waiting: post an update, even if nothing has changed."
    )
    channels = sorted({c for c, _ in contacts})
    broadcast = Broadcast(
        incident_id=incident_id,
        update_id=None,
        event=REMINDER_EVENT,
        state=BroadcastState.QUEUED,
        policy={"channels": [c.value for c in channels], "contacts": [[c.value, a] for c, a in contacts]},
    )
    session.add(broadcast)
    session.flush()
    session.add(BroadcastTier(broadcast_id=broadcast.id, tier=REMINDER_TIER, state=TierState.PLANNING))
    add_gates(session, broadcast.id, [REMINDER_TIER])
    for channel in channels:
        variant: Variant
        if channel is ChannelName.CHAT:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
            variant = ChatVariant(text=text, blocks=blocks)
        else:
            subject = f"Update due: {title}"[:200]
            variant = EmailVariant(text=text + "\n", subject=subject, html=f"<p>{html.escape(text)}</p>")
        session.add(
            BroadcastVariant(
                broadcast_id=broadcast.id, channel=channel.value, locale="en", variant=variant.to_json()
            )
        )
    session.flush()
    return broadcast.id
