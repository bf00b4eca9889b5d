"""Subscribers: addresses validated, preference and failover order derived, errors name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from channels.base import ChannelName
from dispatcher.domain.subscribers import SubscriberIn


def fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def test_phone_is_normalised_to_e164() -> None:
    sub = SubscriberIn(external_id="u1", phone="+1 (415) 555-0123")
    assert sub.phone == "+14155550123"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"external_id": "u1", "phone": "555-0123"}, "phone"),  # no country code
        ({"external_id": "u1", "phone": "+1415"}, "phone"),
        ({"external_id": "u1", "email": "not-an-email"}, "email"),
        ({"external_id": "u1", "email": "a@b.co", "timezone": "Mars/Olympus"}, "timezone"),
        ({"external_id": "u1", "email": "a@b.co", "slack_channel": "<!channel>"}, "slack_channel"),
        ({"external_id": "bad id/", "email": "a@b.co"}, "external_id"),
        ({"external_id": "u1", "email": "a@b.co", "lists": []}, "lists"),
        ({"external_id": "u1", "email": "a@b.co", "channels": ["pager"]}, "channels.0"),
        ({"external_id": "u1", "email": "a@b.co", "name": "nul\u0000"}, "name"),
        ({"external_id": "u1", "email": "a@b.co", "lists": ["ops\u0007"]}, "lists.0"),
    ],
)
def test_bad_subscribers_name_the_field(payload: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SubscriberIn.model_validate(payload)
    assert field in fields(caught.value)


def test_a_preferred_channel_needs_its_address() -> None:
    with pytest.raises(ValidationError, match=r"channels\[0\]: 'sms' needs phone"):
        SubscriberIn(external_id="u1", email="a@b.co", channels=["sms"])
    with pytest.raises(ValidationError, match="at least one of"):
        SubscriberIn(external_id="u1")


def test_preference_and_failover_order() -> None:
    sub = SubscriberIn(
        external_id="admin",
        email="a@b.co",
        phone="+14155550123",
        slack_channel="C0ADMIN",
        channels=["sms"],
        opt_outs=["chat"],
    )
    assert sub.preference() == [ChannelName.SMS]
    # SMS first, then the other reachable channels, never an opted-out one
    assert sub.failover_order() == [ChannelName.SMS, ChannelName.EMAIL]
    everyone = SubscriberIn(external_id="u2", email="a@b.co", phone="+14155550123")
    assert everyone.preference() == [ChannelName.EMAIL, ChannelName.SMS]
