"""Each channel's variant of a broadcast, condensed once per broadcast and locale (never once per
recipient): tasks load it back by id."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from channels.base import ChannelName, RenderContext
from config import Settings
from dispatcher.domain.message import EventKind, OutageMessage
from dispatcher.store.models import Broadcast, BroadcastVariant

# The variant key for tiers whose resolved notice carries compensation (see broadcasts.compensation_text).
COMPENSATION_LOCALE = "en+compensation"


def render_variants(
    session: Session,
    broadcast: Broadcast,
    message: OutageMessage,
    adapters: dict[ChannelName, Any],
    settings: Settings,
    locale: str = "en",
) -> None:
    """Renders each channel's variant once per broadcast and locale (never once per recipient)."""
    ctx = RenderContext(
        event=EventKind(broadcast.event),
        locale=locale,
        sms_segment_budget=settings.sms_segment_budget,
        unsubscribe_url=settings.unsubscribe_url,
    )
    for name, adapter in adapters.items():
        if session.get(BroadcastVariant, (broadcast.id, name.value, locale)) is None:
            variant = adapter.condense(message, ctx)
            session.add(
                BroadcastVariant(
                    broadcast_id=broadcast.id, channel=name.value, locale=locale, variant=variant.to_json()
                )
            )
