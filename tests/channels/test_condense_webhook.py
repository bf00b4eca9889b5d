"""Webhook: the whole message as JSON plus the notice kind and a short text."""

from __future__ import annotations

import json

from hypothesis import given, settings

from channels.base import RenderContext
from channels.webhook.condense import WebhookVariant, condense_webhook
from dispatcher.domain.message import EventKind, OutageMessage
from tests.channels.samples import sample_message
from tests.channels.strategies import message_and_context


@settings(max_examples=100, deadline=None)
@given(message_and_context())
def test_payload_is_json_and_holds_the_whole_message(case: tuple[OutageMessage, RenderContext]) -> None:
    message, ctx = case
    hook = condense_webhook(message, ctx)
    payload = json.loads(json.dumps(hook.payload))
    assert payload["event"] == ctx.event.value
    assert OutageMessage.model_validate(payload["message"]) == message
    assert payload["text"] == hook.text and "\n" not in hook.text
    assert WebhookVariant(**json.loads(json.dumps(hook.to_json()))) == hook


def test_sample_text() -> None:
    hook = condense_webhook(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    assert hook.text.startswith("Investigating: Elevated API error rates. We are investigating a problem.")
    assert "Posted Sat 22 Nov 2025 14:05 UTC." in hook.text
    assert hook.payload["version"] == 1
