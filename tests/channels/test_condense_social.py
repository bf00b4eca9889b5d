"""Social: at most 280 weighted characters by X's own counter, and nothing private ever."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given, settings
from twitter_text import parse_tweet

from channels.base import RenderContext
from channels.social.condense import SocialVariant, condense_social
from dispatcher.domain.message import EventKind, Impact, OutageMessage
from tests.channels.samples import sample_message
from tests.channels.strategies import message_and_context


@settings(max_examples=200, deadline=None)
@given(message_and_context())
def test_every_post_weighs_at_most_280_and_is_public_safe(case: tuple[OutageMessage, RenderContext]) -> None:
    message, ctx = case
    post = condense_social(message, ctx)
    parsed = parse_tweet(post.text)
    assert parsed.weightedLength <= 280, post.text
    assert parsed.valid, post.text
    assert post.weight == parsed.weightedLength
    for contact in message.support_contacts:
        assert not (contact.email and contact.email in post.text)
        assert not (contact.phone and contact.phone in post.text)
        assert not (contact.url and str(contact.url) in post.text)
    assert "help.example.org" not in post.text
    assert not re.search(r"[@＠][A-Za-z0-9_]", post.text), "a post must not mention anyone"


SENTINELS = {
    "summary": "SENTINEL-SUMMARY",
    "details": "SENTINEL-DETAILS",
    "cause": "SENTINEL-CAUSE",
    "data_safety": "SENTINEL-DATA",
    "compensation": "SENTINEL-CREDIT",
    "prevention": "SENTINEL-PREVENTION",
    "workarounds": ["SENTINEL-WORKAROUND"],
    "support_contacts": [
        {"label": "SENTINEL-LABEL", "email": "vip@customer.example", "phone": "+1 555 0100"}
    ],
}


def test_private_fields_never_reach_the_post() -> None:
    message = OutageMessage(
        title="Checkout errors",
        impact=Impact.MAJOR,
        components=["Checkout"],
        status_page_url="https://status.example.com/i/7",
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
        **SENTINELS,
    )
    for event in (EventKind.INCIDENT_OPENED, EventKind.INCIDENT_UPDATED):
        post = condense_social(message, RenderContext(event=event))
        assert "SENTINEL" not in post.text
        assert "customer.example" not in post.text and "555" not in post.text
        assert "Checkout errors" in post.text and "https://status.example.com/i/7" in post.text


def test_sample_post_has_status_title_impact_time_link() -> None:
    post = condense_social(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    assert post.text.startswith("Investigating: Elevated API error rates\nImpact: Major")
    assert "Posted 22 Nov 14:05 UTC" in post.text
    assert post.text.endswith("https://status.example.com/incidents/42")


def test_a_long_cjk_title_is_shortened_with_an_ellipsis_and_keeps_the_link() -> None:
    message = OutageMessage(
        title="データベース障害 " * 22,
        components=["API"] * 40,
        status_page_url="https://status.example.com/" + "p" * 200,
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    post = condense_social(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    assert parse_tweet(post.text).weightedLength <= 280
    assert "データベース障害…" in post.text
    assert post.text.endswith("p" * 200)  # a URL weighs 23 however long it is


def test_handles_are_defused() -> None:
    message = OutageMessage(
        title="Ping @acme_support now", posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC)
    )
    post = condense_social(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    assert "@acme_support" not in post.text
    assert "@\u200dacme_support" in post.text


def test_variant_round_trips() -> None:
    post = condense_social(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    assert SocialVariant(**post.to_json()) == post
