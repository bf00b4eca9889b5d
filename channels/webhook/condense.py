"""Webhook: the whole canonical message as JSON, the notice kind, and a short text.

Pure. The receiver is a machine: it gets every field of the notice, as JSON, and decides itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.base import ChannelName, RenderContext, Variant
from channels.notice import Notice
from channels.rendering import Templates, build_facts, collapse_whitespace, default_templates

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
    message: Notice, ctx: RenderContext, templates: Templates | None = None
) -> WebhookVariant:
    templates = templates or default_templates()
    facts = build_facts(message, ctx, escape_text=collapse_whitespace, long_times=True)
    text = collapse_whitespace(templates.render(ChannelName.WEBHOOK, ctx.event, "txt", facts, ctx.locale))
    payload: dict[str, Any] = {
        "version": PAYLOAD_VERSION,
        "event": str(ctx.event),
        "text": text,
        "message": notice_json(message),
    }
    return WebhookVariant(text=text, payload=payload)


def _time(value: datetime | None) -> str | None:
    """ISO 8601, UTC written as `Z`: the form the payload has always had."""
    if value is None:
        return None
    text = value.isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def _url(value: object | None) -> str | None:
    return str(value) if value is not None else None


def notice_json(message: Notice) -> dict[str, Any]:
    """Every field of the notice, read one by one (not a model dump), so the payload's shape is
    this channel's contract whatever object the service passes in."""
    return {
        "title": message.title,
        "kind": str(message.kind),
        "status": str(message.lifecycle_status),
        "impact": str(message.impact),
        "components": list(message.components),
        "regions": list(message.regions),
        "summary": message.summary,
        "details": message.details,
        "cause": message.cause,
        "workarounds": list(message.workarounds),
        "eta": _time(message.eta),
        "eta_confirmed": message.eta_confirmed,
        "next_update_at": _time(message.next_update_at),
        "data_safety": message.data_safety,
        "compensation": message.compensation,
        "prevention": message.prevention,
        "status_page_url": _url(message.status_page_url),
        "support_contacts": [
            {
                "label": contact.label,
                "email": contact.email,
                "phone": contact.phone,
                "url": _url(contact.url),
            }
            for contact in message.support_contacts
        ],
        "starts_at": _time(message.starts_at),
        "ends_at": _time(message.ends_at),
        "posted_at": _time(message.posted_at),
    }
