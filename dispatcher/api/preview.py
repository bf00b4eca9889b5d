"""Preview: every channel's variant and the audience per tier and channel, sending and writing nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from channels.base import ChannelName, RenderContext
from channels.registry import build_channels
from channels.rendering import templates_for
from config import Settings
from dispatcher.api.deps import BROADCAST, Caller, get_db, get_settings
from dispatcher.api.schemas import ERRORS, PreviewIn
from dispatcher.domain.message import EventKind, Kind
from dispatcher.engine.audience_count import count_planned
from dispatcher.incidents.broadcasts import sending_channels, tier_layout
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1", tags=["preview"], responses=ERRORS)


@router.post("/preview", summary="Render every channel's variant and count the audience; sends nothing")
def preview(
    body: PreviewIn,
    _: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    message = body.message().stamped()
    event = EventKind.INCIDENT_OPENED if message.kind is Kind.INCIDENT else EventKind.MAINTENANCE_SCHEDULED
    templates = templates_for(settings)
    templates.check()  # a broken override is a TemplateError naming the template, here, not at send time
    ctx = RenderContext(
        event=event, sms_segment_budget=settings.sms_segment_budget, unsubscribe_url=settings.unsubscribe_url
    )
    sending_on = sending_channels(settings, event, override=body.channels)
    variants = {
        name.value: adapter.condense(message, ctx).to_json()
        for name, adapter in build_channels(settings, templates).items()
    }
    with database.session() as session:
        audience = count_audience(session, settings, sending_on, message.components, message.regions)
        session.rollback()  # read only, whatever happens
    return {
        "event": event.value,
        "channels": [c.value for c in sending_on],
        "message": message.model_dump(mode="json"),
        "variants": variants,
        "audience": audience,
    }


def count_audience(
    session: Session,
    settings: Settings,
    sending_on: list[ChannelName],
    components: list[str],
    regions: list[str],
) -> dict[str, Any]:
    """The broadcast's tiers with what planning would write on each, counted by the engine's own
    walk (dispatcher/engine/audience_count.py); here only put in the response's shape."""
    tiers, public_tier = tier_layout(session, settings)
    counts = count_planned(session, tiers, public_tier, sending_on, components, regions)
    by_tier = [
        {
            "tier": tier,
            "public": tier == public_tier,
            "channels": {ch.value: n for (t, ch), n in sorted(counts.items()) if t == tier},
            "total": sum(n for (t, _), n in counts.items() if t == tier),
        }
        for tier in tiers
    ]
    return {"total": sum(counts.values()), "tiers": by_tier}
