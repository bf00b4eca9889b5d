"""Which adapters run, against which provider, live or sandboxed."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from channels.base import Channel, ChannelName
from channels.registry import build_channels, provider_for, provider_modes
from config.settings import Settings


def test_builds_the_enabled_channels(make_settings: Callable[..., Settings]) -> None:
    channels = build_channels(make_settings())
    assert set(channels) == set(ChannelName)
    for name, channel in channels.items():
        assert isinstance(channel, Channel) and channel.name is name
    only = build_channels(make_settings(channels_enabled=[ChannelName.SMS, ChannelName.EMAIL]))
    assert set(only) == {ChannelName.SMS, ChannelName.EMAIL}


def test_provider_modes_say_which_are_sandboxed(make_settings: Callable[..., Settings]) -> None:
    modes = provider_modes(make_settings(sendgrid_api_key=SecretStr("SG.real")))
    assert modes[ChannelName.EMAIL] == "live"
    assert modes[ChannelName.SMS] == modes[ChannelName.CHAT] == modes[ChannelName.SOCIAL] == "sandbox"
    half_twilio = provider_modes(make_settings(twilio_account_sid=SecretStr("AC1")))
    assert half_twilio[ChannelName.SMS] == "sandbox"


def test_provider_names_for_rate_limits() -> None:
    assert {c: provider_for(c) for c in ChannelName} == {
        ChannelName.EMAIL: "sendgrid",
        ChannelName.SMS: "twilio",
        ChannelName.CHAT: "slack",
        ChannelName.SOCIAL: "x",
        ChannelName.WEBHOOK: "webhook",
    }
    assert provider_for("sms") == "twilio"
