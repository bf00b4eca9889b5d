"""Recipients and variants as the condensers build them, for the adapter tests."""

from __future__ import annotations

from typing import Any

from channels.base import ChannelName, Recipient


def recipients(addresses: list[str], start: int = 1, **kwargs: Any) -> list[Recipient]:
    return [Recipient(delivery_id=start + i, address=a, **kwargs) for i, a in enumerate(addresses)]


def email_variant(text: str = "Text %unsubscribe_url%", html: str = "<p>Html %unsubscribe_url%</p>") -> Any:
    from channels.email.condense import EmailVariant

    return EmailVariant(channel=ChannelName.EMAIL, text=text, subject="[Investigating] API down", html=html)


def sms_variant(text: str = "Investigating: API down. Next update 14:00 UTC") -> Any:
    from channels.sms.condense import SmsVariant

    return SmsVariant(channel=ChannelName.SMS, text=text, encoding="GSM-7", segments=1)


def chat_variant(text: str = "Investigating: API down") -> Any:
    from channels.chat.condense import ChatVariant

    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Investigating*: API down"}}]
    return ChatVariant(channel=ChannelName.CHAT, text=text, blocks=blocks)


def social_variant(text: str) -> Any:
    from channels.social.condense import SocialVariant

    return SocialVariant(channel=ChannelName.SOCIAL, text=text, weight=len(text))


def webhook_variant(payload: dict[str, Any] | None = None) -> Any:
    from channels.webhook.condense import WebhookVariant

    payload = payload or {"event": "incident_opened", "title": "API down", "status": "investigating"}
    return WebhookVariant(channel=ChannelName.WEBHOOK, text="API down", payload=payload)
