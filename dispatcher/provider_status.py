"""Providers' status reports (Twilio status callbacks, SendGrid Event Webhook events) applied to
deliveries, matched by the delivery id we sent along. Idempotent and order-proof (see receipts).

Signature checks happen at the HTTP edge (dispatcher/api); this module trusts what it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.fanout import Outbox, check_gates, utcnow
from dispatcher.receipts import State, apply_provider_status
from dispatcher.store.models import Delivery

TWILIO_STATES = {
    "sent": State.SENT,
    "delivered": State.DELIVERED,
    "undelivered": State.UNDELIVERED,
    "failed": State.FAILED,
}
SENDGRID_STATES = {
    "processed": State.SENT,
    "delivered": State.DELIVERED,
    "bounce": State.BOUNCED,
    "blocked": State.BOUNCED,
    "dropped": State.SUPPRESSED,  # SendGrid refused it: an earlier bounce, unsubscribe or spam report
}


def _delivery_id(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def apply_twilio(
    session: Session, delivery_id: Any, params: Mapping[str, str], now: datetime | None = None
) -> bool:
    """One Twilio status callback; `delivery_id` comes from the callback URL we gave Twilio."""
    target = TWILIO_STATES.get(params.get("MessageStatus", "").lower())
    ident = _delivery_id(delivery_id)
    if target is None or ident is None:
        return False  # queued / sending / accepted: nothing a receipt needs
    code = params.get("ErrorCode") or None
    return apply_provider_status(
        session,
        ident,
        target,
        now or utcnow(),
        provider_message_id=params.get("MessageSid"),
        error_code=code,
        error=f"twilio error {code}" if code else None,
    )


def apply_sendgrid(session: Session, events: Iterable[Mapping[str, Any]], now: datetime | None = None) -> int:
    """A batch of SendGrid events; returns how many moved a delivery."""
    moved = 0
    for event in events:
        target = SENDGRID_STATES.get(str(event.get("event", "")).lower())
        ident = _delivery_id(event.get("delivery_id"))
        if target is None or ident is None:
            continue
        reason = event.get("reason") or event.get("response")
        moved += apply_provider_status(
            session,
            ident,
            target,
            now or utcnow(),
            error_code=str(event["event"]) if target in (State.BOUNCED, State.SUPPRESSED) else None,
            error=str(reason)[:2000] if reason and target is not State.DELIVERED else None,
        )
    return moved


def after_status(session: Session, settings: Settings, delivery_ids: Iterable[int], outbox: Outbox) -> None:
    """An event can be the first news that a delivery left `sending`; re-check those tiers' gates."""
    broadcasts = session.scalars(
        select(Delivery.broadcast_id).where(Delivery.id.in_(list(delivery_ids))).distinct()
    ).all()
    for broadcast_id in broadcasts:
        check_gates(session, settings, broadcast_id, outbox)
