"""Preview: every channel's variant and the audience per tier and channel, sending and writing nothing."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from channels import locales
from channels.base import ChannelName
from channels.locales import SHIPPED_LOCALES
from channels.registry import build_channels
from channels.rendering import templates_for
from config import Settings
from dispatcher.api.deps import BROADCAST, Caller, get_db, get_settings
from dispatcher.api.schemas import ERRORS, PreviewIn
from dispatcher.domain.errors import ValidationFailed
from dispatcher.domain.message import EventKind, Kind
from dispatcher.domain.variant_key import available_locales, is_zone, reader_key
from dispatcher.engine.audience_count import count_planned
from dispatcher.engine.variants import render_key
from dispatcher.incidents.broadcasts import sending_channels, tier_layout
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1", tags=["preview"], responses=ERRORS)


@router.post("/preview", summary="Render every channel's variant and count the audience; sends nothing")
def preview(
    body: PreviewIn,
    locale: Annotated[
        str | None, Query(description="render as a reader of this language would get it (e.g. de-AT)")
    ] = None,
    timezone: Annotated[str | None, Query(description="and in this time zone (e.g. Asia/Tokyo)")] = None,
    _: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    message = body.message().stamped()
    event = EventKind.INCIDENT_OPENED if message.kind is Kind.INCIDENT else EventKind.MAINTENANCE_SCHEDULED
    if locale is not None and locales.normalize(locale) is None:
        raise ValidationFailed(
            f"locale: {locale!r} is not a language tag (e.g. de, pt-BR)", fields=["locale"]
        )
    if timezone is not None and not is_zone(timezone):
        raise ValidationFailed(
            f"timezone: {timezone!r} is not a known time zone (e.g. Asia/Tokyo)", fields=["timezone"]
        )
    templates = templates_for(settings)
    templates.check()  # a broken override is a TemplateError naming the template, here, not at send time
    languages = available_locales(SHIPPED_LOCALES, message.translations)
    key = reader_key(locale or settings.default_locale, timezone, languages, settings.default_locale)
    sending_on = sending_channels(settings, event, override=body.channels)
    rendered = render_key(event, {}, message, key, build_channels(settings, templates), settings)
    variants = {name.value: variant for name, variant in rendered.items()}
    readers: Counter[tuple[str, str]] = Counter()
    with database.session() as session:
        audience = count_audience(session, settings, sending_on, message.components, message.regions, readers)
        session.rollback()  # read only, whatever happens
    audience["readers"] = reader_combinations(readers, languages, settings.default_locale)
    return {
        "event": event.value,
        "channels": [c.value for c in sending_on],
        "message": message.model_dump(mode="json"),
        "rendered_for": {"locale": key.locale, "timezone": key.timezone},
        "variants": variants,
        "audience": audience,
    }


def reader_combinations(
    readers: Counter[tuple[str, str]], languages: tuple[str, ...], default_locale: str
) -> dict[str, Any]:
    """The audience's locale x time zone combinations with their subscribers, and the variant each
    reads: one rendering per channel and distinct variant, never one per recipient."""
    rows = []
    keys = set()
    for (tag, zone), n in sorted(readers.items(), key=lambda item: (-item[1], item[0])):
        key = reader_key(tag, zone, languages, default_locale)
        keys.add(key)
        rows.append(
            {
                "locale": tag,
                "timezone": zone,
                "subscribers": n,
                "reads": {"locale": key.locale, "timezone": key.timezone},
            }
        )
    return {"combinations": rows, "variants_per_channel": len(keys)}


def count_audience(
    session: Session,
    settings: Settings,
    sending_on: list[ChannelName],
    components: list[str],
    regions: list[str],
    readers: Counter[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The broadcast's tiers with what planning would write on each, counted by the engine's own
    walk (dispatcher/engine/audience_count.py); here only put in the response's shape."""
    tiers, public_tier = tier_layout(session, settings)
    counts = count_planned(session, tiers, public_tier, sending_on, components, regions, readers)
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
