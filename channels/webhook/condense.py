"""Webhook: the whole canonical message as JSON, the notice kind, and a short text.

Pure. The receiver is a machine: it gets every field (model_dump in JSON mode) and decides itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from channels.base import ChannelName, RenderContext, Variant
from channels.rendering import Templates, build_facts, collapse_whitespace, default_templates
from dispatcher.domain.message import OutageMessage

PAYLOAD_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class WebhookVariant(Variant):
    channel: ChannelName = ChannelName.WEBHOOK
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", ChannelName(self.channel))
        if self.channel is not ChannelName.WEBHOOK:
            raise ValueError(f"a WebhookVariant's channel is webhook, not {self.channel}")


def condense_webhook(
    message: OutageMessage, ctx: RenderContext, templates: Templates | None = None
) -> WebhookVariant:
    templates = templates or default_templates()
    facts = build_facts(message, ctx, escape_text=collapse_whitespace, long_times=True)
    text = collapse_whitespace(templates.render(ChannelName.WEBHOOK, ctx.event, "txt", facts))
    payload: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "event": ctx.event.value,
        "text": text,
        "message": message.model_dump(mode="json"),
    }
    return WebhookVariant(text=text, payload=payload)
