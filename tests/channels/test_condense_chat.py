"""Chat: no text can mention anyone or broadcast to a channel; Block Kit limits hold."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings

from channels.base import RenderContext
from channels.catalogs import translations
from channels.chat.condense import ChatVariant, condense_chat
from channels.locales import SHIPPED_LOCALES
from dispatcher.domain.message import EventKind, OutageMessage, Status
from tests.channels.samples import sample_message
from tests.channels.strategies import message_and_context

# Our status link, labelled "Status page" in the reader's language (and only that label).
_LABELS = "|".join(re.escape(translations(loc).gettext("Status page")) for loc in SHIPPED_LOCALES)
OUR_LINK = re.compile(rf"<https?://[^<>\s|]+\|(?:{_LABELS})>")
BROADCAST = re.compile(r"[@＠](channel|here|everyone)", re.IGNORECASE)
MENTION = re.compile(r"[@＠][\w.\-]")


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def assert_cannot_notify(text: str) -> None:
    outside = OUR_LINK.sub("", text)
    for control in ("<!", "<@", "<#"):
        assert control not in text, text
    assert "<" not in outside and ">" not in outside, outside
    assert not BROADCAST.search(outside), outside
    assert not MENTION.search(outside), outside


@settings(max_examples=200, deadline=None)
@given(message_and_context())
def test_no_chat_text_can_mention_or_broadcast(case: tuple[OutageMessage, RenderContext]) -> None:
    message, ctx = case
    chat = condense_chat(message, ctx)
    assert 1 <= len(chat.blocks) <= 50
    for block in chat.blocks:
        assert block["type"] == "section"
        assert block["text"]["type"] == "mrkdwn"
        assert 0 < len(block["text"]["text"]) <= 3000
    for text in [chat.text, *strings(chat.blocks)]:
        assert_cannot_notify(text)
    assert ChatVariant(**json.loads(json.dumps(chat.to_json()))) == chat


def test_hostile_title_is_escaped_not_dropped() -> None:
    message = OutageMessage(
        title="<!channel> @here <@U123> <#C1> <https://evil.example|click> & more",
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    chat = condense_chat(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    first = chat.blocks[0]["text"]["text"]
    assert (
        first == "*Investigating: &lt;!channel&gt; @\u200dhere &lt;@\u200dU123&gt; &lt;#C1&gt; "
        "&lt;https://evil.example|click&gt; &amp; more*"
    )


def test_sample_has_status_title_impact_scope_next_update_link() -> None:
    chat = condense_chat(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    texts = [b["text"]["text"] for b in chat.blocks]
    assert texts[0] == "*Investigating: Elevated API error rates*"
    assert "*Impact:* Major · API, Dashboard in eu-west" in texts
    assert "Posted 22 Nov 14:05 UTC · Next update by 22 Nov 15:00 UTC" in texts
    assert texts[-1] == "<https://status.example.com/incidents/42|Status page>"
    assert chat.text == "\n".join(texts)


def test_resolved_carries_prevention_and_open_does_not() -> None:
    resolved = condense_chat(
        sample_message(EventKind.INCIDENT_RESOLVED), RenderContext(event=EventKind.INCIDENT_RESOLVED)
    )
    assert "We are adding a canary stage to configuration rollouts." in resolved.text
    still_open = sample_message(EventKind.INCIDENT_UPDATED)
    assert still_open.status is Status.IDENTIFIED and still_open.prevention
    assert "canary" not in condense_chat(still_open, RenderContext(event=EventKind.INCIDENT_UPDATED)).text


def test_huge_scope_is_clipped_to_a_section() -> None:
    message = OutageMessage(
        title="Wide outage",
        components=[f"component-{i:03d} " + "x" * 80 for i in range(50)],
        regions=[f"region-{i:03d} " + "y" * 80 for i in range(50)],
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    chat = condense_chat(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    impact = next(b["text"]["text"] for b in chat.blocks if b["text"]["text"].startswith("*Impact:*"))
    assert len(impact) <= 3000 and impact.endswith("…")


def test_variant_round_trips_through_json() -> None:
    chat = condense_chat(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    assert ChatVariant(**json.loads(json.dumps(chat.to_json()))) == chat
