"""Each channel's variant of a broadcast, condensed once per channel and variant key (the reader's
language, time zone and credit: dispatcher/domain/variant_key.py), never once per recipient. Tasks
load them back by key.

The broadcast keeps the message it was created with (`policy["message"]`), so a key first met while
planning a later tier (the first reader in Tokyo) is rendered then, once, by whichever worker meets
it first (insert-or-ignore: two workers rendering the same key write one row).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.base import ChannelName, RenderContext
from channels.locales import SHIPPED_LOCALES, is_known
from config import Settings
from dispatcher.domain.message import EventKind, OutageMessage
from dispatcher.domain.variant_key import VariantKey, available_locales, reader_key
from dispatcher.store.bulk import insert_ignoring
from dispatcher.store.models import Broadcast, BroadcastVariant

log = logging.getLogger(__name__)


def default_key(settings: Settings, *, compensated: bool = False) -> VariantKey:
    """The variant of a reader we know nothing about: the default locale, in UTC."""
    return reader_key(settings.default_locale, None, SHIPPED_LOCALES, settings.default_locale, compensated)


def broadcast_locales(policy: dict[str, Any]) -> tuple[str, ...]:
    """The languages this broadcast can be read in: the shipped catalogs and the commander's own."""
    translated = (policy.get("message") or {}).get("translations") or {}
    return available_locales(SHIPPED_LOCALES, translated)


_judged: set[str] = set()  # tags already judged known, or logged as unknown
_judged_lock = threading.Lock()


def note_unknown_locale(tag: str | None, got: str) -> None:
    """Logs, once per process, a subscriber locale we have no wording for (not once per recipient).
    Each distinct tag is judged once: planning calls this for every row of a page."""
    if tag is None or tag in _judged:
        return
    known = is_known(tag)
    with _judged_lock:
        if tag in _judged:
            return
        _judged.add(tag)
    if not known:
        log.warning("no wording for locale %r: its readers get %s", tag, got)


def variant_message(policy: dict[str, Any], message: OutageMessage, key: VariantKey) -> OutageMessage:
    """The message as readers of `key` get it: in their language (the commander's translations,
    field by field), with the credit only for the compensation tiers."""
    localized = message.localized(key.locale)
    credit = policy.get("compensation")
    if credit is None:
        return localized
    if key.compensated:  # the commander's own (translated) words, else the configured default
        return localized.model_copy(update={"compensation": localized.compensation or credit})
    return localized.model_copy(update={"compensation": None})


def reader_context(event: str, key: VariantKey, settings: Settings) -> RenderContext:
    """What a condenser needs to render for readers of `key`: their language and zone, the limits."""
    return RenderContext(
        event=EventKind(event),
        locale=key.locale,
        timezone=key.timezone,
        sms_segment_budget=settings.sms_segment_budget,
        unsubscribe_url=settings.unsubscribe_url,
    )


def readers_adapters(adapters: dict[ChannelName, Any], *, public: bool) -> dict[ChannelName, Any]:
    """The channels a key is rendered for: the social post is the public tier's alone, so only the
    public key renders it."""
    return {c: a for c, a in adapters.items() if public or c is not ChannelName.SOCIAL}


def render_key(
    event: str,
    policy: dict[str, Any],
    message: OutageMessage,
    key: VariantKey,
    adapters: dict[ChannelName, Any],
    settings: Settings,
) -> dict[ChannelName, dict[str, Any]]:
    """Each channel's variant for readers of `key`, as stored (pure: the condensers only)."""
    ctx = reader_context(event, key, settings)
    readable = variant_message(policy, message, key)
    return {name: adapter.condense(readable, ctx).to_json() for name, adapter in adapters.items()}


def render_variants(
    session: Session,
    broadcast: Broadcast,
    message: OutageMessage,
    adapters: dict[ChannelName, Any],
    settings: Settings,
    keys: Iterable[VariantKey],
    *,
    stored: Collection[str] | None = None,
) -> int:
    """Renders and stores each channel's variant for every key of `keys` not yet stored; returns how
    many it wrote. Safe to run in two workers at once. `stored`: the keys known to be stored already
    (`()` for a broadcast recorded in this transaction: nothing to read); None reads them."""
    wanted = {str(k): k for k in keys}
    if stored is None:
        stored = session.scalars(
            select(BroadcastVariant.locale).where(
                BroadcastVariant.broadcast_id == broadcast.id, BroadcastVariant.locale.in_(list(wanted))
            )
        ).all()
    have = set(stored)
    rows = [
        {"broadcast_id": broadcast.id, "channel": name.value, "locale": text, "variant": variant}
        for text, key in sorted(wanted.items())
        if text not in have
        for name, variant in render_key(
            broadcast.event, broadcast.policy, message, key, adapters, settings
        ).items()
    ]
    # one statement, not one per row: an incident's own request stores five, and a broadcast in six
    # languages and twenty zones some 2,400
    insert_ignoring(session, BroadcastVariant.__table__, rows, ["broadcast_id", "channel", "locale"])
    return len(rows)


def stored_variant(
    session: Session, broadcast_id: int, channel: str, key: str
) -> tuple[str, dict[str, Any]] | None:
    """The variant a delivery keyed `key` is sent (and shown), with the key it is stored under: its
    own, else its language's in UTC, else the default language's (every broadcast has one)."""
    wanted = VariantKey.parse(key)
    for candidate in dict.fromkeys(
        [key, str(VariantKey(wanted.locale, compensated=wanted.compensated)), str(VariantKey()), "en"]
    ):
        row = session.get(BroadcastVariant, (broadcast_id, channel, candidate))
        if row is not None:
            return row.locale, dict(row.variant)
    row = session.scalars(
        select(BroadcastVariant).where(
            BroadcastVariant.broadcast_id == broadcast_id, BroadcastVariant.channel == channel
        )
    ).first()
    return (row.locale, dict(row.variant)) if row is not None else None


def stored_message(broadcast: Broadcast) -> OutageMessage | None:
    """The message the broadcast was created with; None for one created before it was kept."""
    data = broadcast.policy.get("message")
    return OutageMessage.model_validate(data) if data is not None else None
