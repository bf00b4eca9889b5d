"""Who hears about an outage, where, and in which order of preference. Pure validation."""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, HttpUrl, model_validator

from channels.base import ChannelName
from dispatcher.domain import audience
from dispatcher.domain.audience import PERSONAL_CHANNELS
from dispatcher.domain.message import Plain

_ADDRESS_FIELD = {
    ChannelName.EMAIL: "email",
    ChannelName.CHAT: "slack_channel",
    ChannelName.SMS: "phone",
    ChannelName.WEBHOOK: "webhook_url",
}


def e164(value: str) -> str:
    """A phone number in E.164, checked as a real, dialable number (not just digits)."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("must be an E.164 phone number like +14155550123") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{value}' (use an IANA name like Europe/Berlin)") from None
    return value


Phone = Annotated[str, AfterValidator(e164)]
TimeZone = Annotated[str, AfterValidator(time_zone)]
Label = Annotated[Plain, Field(min_length=1, max_length=100)]
_SLACK_CHANNEL = re.compile(r"^#?[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def slack_destination(value: str) -> str:
    if not _SLACK_CHANNEL.match(value):
        raise ValueError("must be a Slack channel id (C0123ABC) or name (#status)")
    return value


class QuietHours(BaseModel):
    """Local time window in the subscriber's zone when low-impact notices wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time
    end: time


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    external_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]
    name: Annotated[Plain, Field(max_length=200)] | None = None
    org: Annotated[Plain, Field(max_length=200)] | None = None
    lists: Annotated[list[Label], Field(min_length=1, max_length=50)] = ["customers"]
    email: EmailStr | None = None
    phone: Phone | None = None
    slack_channel: Annotated[str, AfterValidator(slack_destination)] | None = None
    webhook_url: HttpUrl | None = None
    channels: list[ChannelName] = []  # preference order; empty = every channel with an address
    components: Annotated[list[Label], Field(max_length=100)] = []  # empty = everything
    regions: Annotated[list[Label], Field(max_length=100)] = []
    opt_outs: list[ChannelName] = []
    locale: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] = "en"
    timezone: TimeZone = "UTC"
    quiet_hours: QuietHours | None = None

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        for index, channel in enumerate(self.channels):
            if channel not in _ADDRESS_FIELD:
                raise ValueError(f"channels[{index}]: '{channel}' is not a per-subscriber channel")
            if getattr(self, _ADDRESS_FIELD[channel]) is None:
                raise ValueError(f"channels[{index}]: '{channel}' needs {_ADDRESS_FIELD[channel]}")
        if not any(self.address(c) for c in PERSONAL_CHANNELS):
            raise ValueError("a subscriber needs at least one of email, phone, slack_channel, webhook_url")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each channel at most once")
        return self

    def address(self, channel: ChannelName) -> str | None:
        field = _ADDRESS_FIELD.get(channel)
        value = getattr(self, field) if field else None
        return str(value) if value is not None else None

    def addresses(self) -> dict[ChannelName, str | None]:
        return {c: self.address(c) for c in PERSONAL_CHANNELS}

    def preference(self) -> list[ChannelName]:
        """Channels to receive on, best first (the rule lives in `planning`)."""
        return audience.preference(self.channels, self.opt_outs, self.addresses())

    def failover_order(self) -> list[ChannelName]:
        return audience.failover_order(self.channels, self.opt_outs, self.addresses())
