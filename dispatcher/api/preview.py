"""Preview: every channel's variant and the audience per tier and channel, sending and writing nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from channels.base import ChannelName, RenderContext
from channels.registry import build_channels
from channels.rendering import Templates, default_templates
from config import Settings
from dispatcher.api.deps import BROADCAST, Caller, get_db, get_settings
from dispatcher.api.schemas import ERRORS, PreviewIn
from dispatcher.domain import audience
from dispatcher.domain.message import EventKind, Kind
from dispatcher.engine.planner import PAGE, PLANNING_COLUMNS, SCOPE_COLUMNS
from dispatcher.incidents.broadcasts import sending_channels, tier_layout
from dispatcher.store.db import Database
from dispatcher.store.models import Membership, Subscriber, SubscriberList

router = APIRouter(prefix="/v1", tags=["preview"], responses=ERRORS)


def templates_for(settings: Settings) -> Templates:
    if settings.templates_override_dir is None:
        return default_templates()
    return Templates(settings.templates_override_dir)


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
    """What planning would write, counted: each subscriber at the earliest tier of their lists,
    scoped, by preference and opt-outs, de-duplicated by (channel, address) at the earlier tier."""
    first_tier: dict[tuple[ChannelName, str], int] = {}
    after = 0
    while True:
        page = session.execute(
            select(*PLANNING_COLUMNS, *SCOPE_COLUMNS, func.min(SubscriberList.tier).label("tier"))
            .join(Membership, Membership.subscriber_id == Subscriber.id)
            .join(SubscriberList, SubscriberList.id == Membership.list_id)
            .where(Subscriber.id > after)
            .group_by(Subscriber.id)
            .order_by(Subscriber.id)
            .limit(PAGE)
        ).all()
        if not page:
            break
        for row in page:
            after, tier = row.id, row.tier
            if not audience.in_scope(row.components, row.regions, components, regions):
                continue
            for target in audience.targets(
                row.channels, row.opt_outs, audience.addresses_of(row), sending_on
            ):
                key = (target.channel, target.address)
                first_tier[key] = min(tier, first_tier.get(key, tier))
    counts: Counter[tuple[int, str]] = Counter((tier, ch.value) for (ch, _), tier in first_tier.items())
    tiers, public_tier = tier_layout(session, settings)
    if ChannelName.SOCIAL in sending_on:
        counts[(public_tier, ChannelName.SOCIAL.value)] += 1
    tiers = [
        {
            "tier": tier,
            "public": tier == public_tier,
            "channels": {ch: n for (t, ch), n in sorted(counts.items()) if t == tier},
            "total": sum(n for (t, _), n in counts.items() if t == tier),
        }
        for tier in tiers
    ]
    return {"total": sum(counts.values()), "tiers": tiers}
