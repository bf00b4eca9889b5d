"""Which channel adapters this process runs, which provider each talks to, and whether for real.

The service reports `provider_modes` at start, so nobody mistakes a sandboxed run for a live one.
"""

from __future__ import annotations

from channels.base import Channel, ChannelName
from channels.chat.adapter import ChatChannel
from channels.email.adapter import EmailChannel
from channels.rendering import Templates, templates_for
from channels.sms.adapter import SmsChannel
from channels.social.adapter import SocialChannel
from channels.webhook.adapter import WebhookChannel
from config.settings import Settings

CHANNEL_CLASSES: dict[
    ChannelName, type[EmailChannel | ChatChannel | SmsChannel | SocialChannel | WebhookChannel]
] = {
    ChannelName.EMAIL: EmailChannel,
    ChannelName.CHAT: ChatChannel,
    ChannelName.SMS: SmsChannel,
    ChannelName.SOCIAL: SocialChannel,
    ChannelName.WEBHOOK: WebhookChannel,
}

PROVIDERS: dict[ChannelName, str] = {
    ChannelName.EMAIL: "sendgrid",
    ChannelName.SMS: "twilio",
    ChannelName.CHAT: "slack",
    ChannelName.SOCIAL: "x",
    ChannelName.WEBHOOK: "webhook",
}


def provider_for(channel: ChannelName | str) -> str:
    """The provider whose (global) rate limit a channel's sends count against."""
    return PROVIDERS[ChannelName(channel)]


def build_channels(settings: Settings, templates: Templates | None = None) -> dict[ChannelName, Channel]:
    """An adapter per enabled channel. Cheap: SDK clients are created at first send, per process."""
    templates = templates or templates_for(settings)
    # settings name channels as strings (config imports none of ours): keys become ChannelName here
    return {ChannelName(n): CHANNEL_CLASSES[n](settings, templates) for n in settings.channels_enabled}


def provider_modes(settings: Settings) -> dict[ChannelName, str]:
    """ "live" or "sandbox" per enabled channel (webhooks go to subscriber URLs: always "live")."""
    modes: dict[ChannelName, str] = {}
    for name in settings.channels_enabled:
        adapter = CHANNEL_CLASSES[name](settings)
        modes[ChannelName(name)] = "live" if getattr(adapter, "live", True) else "sandbox"  # str in settings
    return modes
