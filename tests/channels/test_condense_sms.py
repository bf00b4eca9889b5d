"""SMS: always within the segment budget, by a counter written here rather than the production one."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings

from channels.base import RenderContext
from channels.sms.condense import SmsVariant, condense_sms
from channels.sms.segments import transliterate
from dispatcher.domain.message import EventKind, Impact, Kind, OutageMessage
from tests.channels.samples import sample_message
from tests.channels.strategies import message_and_context
from tests.channels.wording import headline, stamp_pattern

# GSM 03.38, written out again here on purpose: an independent check of channels/sms/segments.py.
BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENDED = set("\f^{}\\[~]|€")


def independent_count(text: str) -> tuple[str, int]:
    """(encoding, segments) the naive way: ceil(length / per-segment)."""
    if all(c in BASIC or c in EXTENDED for c in text):
        units = sum(2 if c in EXTENDED else 1 for c in text)
        return "GSM-7", 1 if units <= 160 else math.ceil(units / 153)
    units = len(text.encode("utf-16-le")) // 2
    return "UCS-2", 1 if units <= 70 else math.ceil(units / 67)


@settings(max_examples=300, deadline=None)
@given(message_and_context())
def test_every_sms_fits_its_budget(case: tuple[OutageMessage, RenderContext]) -> None:
    check_sms(*case)


def test_a_first_word_that_transliteration_splits_is_cut_inside_like_any_first_word() -> None:
    """Found by the property above: "´" transliterates to a space, inside the sender's first word."""
    message = sample_message(EventKind.MAINTENANCE_SCHEDULED)
    message = message.model_copy(update={"title": "0000000000000000000®´𐀀𐀀 <!channel>"})
    check_sms(message, RenderContext(event=EventKind.MAINTENANCE_SCHEDULED, sms_segment_budget=1))


def check_sms(message: OutageMessage, ctx: RenderContext) -> None:
    sms = condense_sms(message, ctx)
    encoding, segments = independent_count(sms.text)
    assert segments <= ctx.sms_segment_budget, (sms.text, encoding, segments)
    assert sms.encoding == encoding
    assert sms.segments >= segments  # production never under-counts
    # status and the posted time are never dropped; the title is at most shortened, with an ellipsis
    first_line = sms.text.split("\n", 1)[0]
    assert first_line.startswith(transliterate(headline(message, ctx.event, ctx.locale)) + " (")
    assert message.posted_at is not None
    assert re.search(stamp_pattern(message.posted_at, ctx.timezone, ctx.locale), first_line)
    # control characters are dropped by transliteration, so a title can shrink (even to nothing)
    title = transliterate(" ".join(message.title.split())).rstrip()
    after = first_line.split("):", 1)[1]
    shown = after.removeprefix(" ")
    if shown != title:
        assert shown.endswith("..."), shown
        kept = shown[: -len("...")]
        assert title.startswith(kept)
        rest = title[len(kept) :]
        # cut at a word boundary (trailing punctuation may be trimmed), or inside the first word only.
        # Words are the sender's: transliteration can turn a character inside one into a space
        # ("´" becomes " "), so the first word is taken before transliterating.
        first_word = transliterate(message.title.split()[0]) if message.title.split() else ""
        assert rest[:1] in {" ", ",", ";", ":", "-"} or first_word.startswith(kept), (kept, rest)


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_sample_fits_and_keeps_status_and_link(budget: int) -> None:
    message = sample_message(EventKind.INCIDENT_OPENED)
    sms = condense_sms(message, RenderContext(event=EventKind.INCIDENT_OPENED, sms_segment_budget=budget))
    assert independent_count(sms.text)[1] <= budget
    assert sms.text.startswith("Investigating (22 Nov 14:05 UTC): Elevated API error rates")
    assert sms.text.endswith("https://status.example.com/incidents/42")


def test_fields_are_dropped_in_the_documented_order() -> None:
    message = sample_message(EventKind.INCIDENT_RESOLVED).model_copy(
        update={"eta": None, "next_update_at": datetime(2025, 11, 22, 15, 0, tzinfo=UTC)}
    )
    ctx3 = RenderContext(event=EventKind.INCIDENT_RESOLVED, sms_segment_budget=3)
    ctx1 = RenderContext(event=EventKind.INCIDENT_RESOLVED, sms_segment_budget=1)
    roomy, tight = condense_sms(message, ctx3).text, condense_sms(message, ctx1).text
    assert "Prevention: We are adding a canary stage" in roomy  # resolved carries prevention when it fits
    assert "API, Dashboard in eu-west" in roomy
    assert "Prevention" not in tight  # first to go
    assert "API, Dashboard" not in tight  # scope before next update and impact
    assert "Next update 22 Nov 15:00 UTC" in tight
    assert "Impact: Major" in tight
    assert tight.endswith("https://status.example.com/incidents/42")


def test_long_title_is_cut_at_a_word_with_an_ellipsis_and_the_link_stays() -> None:
    title = " ".join(["Replication"] * 18)  # 215 chars -> model max is 200
    message = OutageMessage(
        title=title[:200].strip(),
        impact=Impact.CRITICAL,
        status_page_url="https://status.example.com/i/1",
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    sms = condense_sms(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    first = sms.text.split("\n")[0]
    assert first.endswith("Replication...")
    assert sms.text.endswith("https://status.example.com/i/1")
    assert len(sms.text) <= 160 and sms.segments == 1


def test_typography_is_transliterated_to_stay_gsm7() -> None:
    message = OutageMessage(
        title="“Checkout” – it’s down… • retry",
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    sms = condense_sms(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    assert sms.encoding == "GSM-7"
    assert '"Checkout" - it\'s down... * retry' in sms.text


def test_emoji_forces_ucs2_and_the_70_limit() -> None:
    message = OutageMessage(
        title="🔥 Everything is on fire, please stand by while we investigate the cause of this outage",
        status_page_url="https://status.example.com",
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    sms = condense_sms(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    assert sms.encoding == "UCS-2"
    assert len(sms.text.encode("utf-16-le")) // 2 <= 70
    assert "..." in sms.text


def test_maintenance_window_is_kept_before_impact() -> None:
    message = sample_message(EventKind.MAINTENANCE_SCHEDULED)
    assert message.kind is Kind.MAINTENANCE
    sms = condense_sms(message, RenderContext(event=EventKind.MAINTENANCE_SCHEDULED))
    assert "When: 23 Nov 02:00-04:00 UTC" in sms.text


def test_variant_round_trips() -> None:
    sms = condense_sms(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    assert SmsVariant(**sms.to_json()) == sms
