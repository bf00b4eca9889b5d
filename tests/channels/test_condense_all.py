"""Rules every channel keeps: the timestamp with its zone, no unconfirmed ETA worded as a promise,
prevention on a resolved incident, variants that survive a JSON round trip."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings

from channels.base import RenderContext, Variant
from channels.chat.condense import ChatVariant, condense_chat
from channels.email.condense import EmailVariant, condense_email
from channels.sms.condense import SmsVariant, condense_sms
from channels.social.condense import SocialVariant, condense_social
from channels.webhook.condense import WebhookVariant, condense_webhook
from dispatcher.domain.message import EventKind, OutageMessage
from tests.channels.samples import sample_message
from tests.channels.strategies import message_and_context
from tests.channels.wording import clocks_without_zone, has_stamp, promise_words, user_strings

Condenser = Callable[[OutageMessage, RenderContext], Any]
CONDENSERS: dict[str, tuple[Condenser, type[Variant]]] = {
    "email": (condense_email, EmailVariant),
    "chat": (condense_chat, ChatVariant),
    "sms": (condense_sms, SmsVariant),
    "social": (condense_social, SocialVariant),
    "webhook": (condense_webhook, WebhookVariant),
}
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
PROMISES = ("will be restored", "(confirmed)", "Back by")


def texts(variant: Any) -> list[str]:
    """Everything a reader could see in a variant."""
    out = [variant.text]
    if isinstance(variant, EmailVariant):
        out += [variant.subject, variant.html]
    if isinstance(variant, ChatVariant):
        out += [b["text"]["text"] for b in variant.blocks]
    return out


def clock(when: datetime, tz: str) -> str:
    """'22 Nov 14:05' in the reader's zone, computed here independently of the production code."""
    local = when.astimezone(ZoneInfo(tz))
    return f"{local.day} {MONTHS[local.month - 1]} {local:%H:%M}"


@settings(max_examples=100, deadline=None)
@given(message_and_context())
def test_every_variant_carries_its_timestamp_and_no_false_promise(
    case: tuple[OutageMessage, RenderContext],
) -> None:
    """In every language: the posted time with its zone, and an unconfirmed ETA never in the words
    of a confirmed one."""
    message, ctx = case
    assert message.posted_at is not None
    promises = promise_words(ctx.locale)
    for name, (condense, cls) in CONDENSERS.items():
        variant = condense(message, ctx)
        assert has_stamp(variant.text, message.posted_at, ctx.timezone, ctx.locale), (name, variant.text)
        if message.eta is not None and not message.eta_confirmed:
            for seen in texts(variant):
                for promise in promises:
                    assert promise not in seen, (name, promise)
        assert cls(**json.loads(json.dumps(variant.to_json()))) == variant


@settings(max_examples=100, deadline=None)
@given(message_and_context())
def test_every_time_shown_carries_its_zone(case: tuple[OutageMessage, RenderContext]) -> None:
    """Each 'HH:MM' a reader sees (posted, ETA, next update, window) is followed by its zone."""
    message, ctx = case
    assume(not any(re.search(r"\d:\d", value) for value in user_strings(message)))
    for name, (condense, _cls) in CONDENSERS.items():
        for seen in texts(condense(message, ctx)):
            assert clocks_without_zone(seen) == [], (name, ctx.locale, seen)


ETA = datetime(2025, 11, 22, 16, 30, tzinfo=UTC)


@pytest.mark.parametrize("channel", list(CONDENSERS))
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Asia/Kolkata"])
@pytest.mark.parametrize("budget", [1, 2, 3])
def test_an_unconfirmed_eta_is_never_a_promise(channel: str, zone: str, budget: int) -> None:
    message = sample_message(EventKind.INCIDENT_UPDATED).model_copy(
        update={"eta": ETA, "eta_confirmed": False}
    )
    variant = CONDENSERS[channel][0](
        message, RenderContext(EventKind.INCIDENT_UPDATED, timezone=zone, sms_segment_budget=budget)
    )
    eta_clock = clock(ETA, zone)
    for seen in texts(variant):
        for promise in PROMISES:
            assert promise not in seen
        for line in seen.splitlines():
            if eta_clock in line and "Next update" not in line and "Posted" not in line:
                assert "(estimate, not confirmed)" in line, line


@pytest.mark.parametrize("channel", ["email", "chat", "webhook", "social"])
def test_a_confirmed_eta_is_worded_as_one(channel: str) -> None:
    message = sample_message(EventKind.INCIDENT_UPDATED).model_copy(
        update={"eta": ETA, "eta_confirmed": True}
    )
    variant = CONDENSERS[channel][0](message, RenderContext(EventKind.INCIDENT_UPDATED))
    assert "not confirmed" not in variant.text
    assert (
        "Service will be restored by" in variant.text
        or "Back by 22 Nov 16:30 UTC (confirmed)" in variant.text
    )


def test_sms_says_a_confirmed_eta_when_it_fits() -> None:
    message = sample_message(EventKind.INCIDENT_UPDATED).model_copy(
        update={"eta": ETA, "eta_confirmed": True}
    )
    sms = condense_sms(message, RenderContext(EventKind.INCIDENT_UPDATED, sms_segment_budget=3))
    assert "Back by 22 Nov 16:30 UTC (confirmed)" in sms.text


@pytest.mark.parametrize("channel", ["email", "chat", "sms"])
def test_resolved_carries_prevention(channel: str) -> None:
    message = sample_message(EventKind.INCIDENT_RESOLVED)
    assert message.prevention
    variant = CONDENSERS[channel][0](
        message, RenderContext(EventKind.INCIDENT_RESOLVED, sms_segment_budget=3)
    )
    assert message.prevention in variant.text
    if isinstance(variant, EmailVariant):
        assert message.prevention in variant.html
    if isinstance(variant, ChatVariant):
        assert any(message.prevention in b["text"]["text"] for b in variant.blocks)


@pytest.mark.parametrize("channel", list(CONDENSERS))
@pytest.mark.parametrize("event", list(EventKind), ids=lambda e: e.value)
def test_an_unstamped_message_renders_without_a_time(channel: str, event: EventKind) -> None:
    message = sample_message(event).model_copy(update={"posted_at": None})
    variant = CONDENSERS[channel][0](message, RenderContext(event))
    assert "Posted" not in variant.text and "()" not in variant.text


@pytest.mark.parametrize("channel", list(CONDENSERS))
def test_variant_channel_is_fixed(channel: str) -> None:
    condense, cls = CONDENSERS[channel]
    variant = condense(sample_message(EventKind.INCIDENT_OPENED), RenderContext(EventKind.INCIDENT_OPENED))
    assert variant.channel == channel
    data = {**variant.to_json(), "channel": "sms" if channel != "sms" else "email"}
    with pytest.raises(ValueError):
        cls(**data)
