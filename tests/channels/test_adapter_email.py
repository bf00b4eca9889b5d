"""EmailChannel through the real SendGrid SDK against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from channels.base import ChannelName, Failure, Recipient, RenderContext
from channels.email.adapter import EmailChannel
from channels.email.condense import EmailVariant
from channels.sandbox import SandboxServer
from config.settings import Settings
from dispatcher.domain.message import EventKind, OutageMessage

from .helpers import email_variant, recipients

UNSUB = "https://status.example.com/unsubscribe"


def test_a_batch_is_one_request_with_per_recipient_substitution(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = EmailChannel(make_settings())
    batch = [
        Recipient(11, "ann@example.com", name="Ann", unsubscribe_token="tok-a"),
        Recipient(12, "bob@example.com", unsubscribe_token="tok b/1"),
        Recipient(13, "cy@example.com"),
    ]
    throttled: list[Recipient] = []
    outcomes = channel.send(email_variant(), batch, throttle=throttled.append)

    assert [o.delivery_id for o in outcomes] == [11, 12, 13]
    assert all(o.accepted for o in outcomes)
    assert len({o.provider_message_id for o in outcomes}) == 1 and outcomes[0].provider_message_id
    assert throttled == [batch[0]]
    assert sandbox.stats()["sendgrid"]["calls"] == 1

    records = {r["recipient"]: r for r in sandbox.messages("email", include_html=True)}
    links = {
        "ann@example.com": f"{UNSUB}?token=tok-a",
        "bob@example.com": f"{UNSUB}?token=tok%20b%2F1",
        "cy@example.com": UNSUB,
    }
    for address, link in links.items():
        record = records[address]
        assert record["text"] == f"Text {link}"
        assert record["html"] == f"<p>Html {link}</p>"
        assert record["subject"] == "[Investigating] API down"
        assert record["headers"]["List-Unsubscribe"] == f"<{link}>"
        assert record["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert record["provider_message_id"] == outcomes[0].provider_message_id
    assert [records[a]["delivery_id"] for a in links] == ["11", "12", "13"]


def test_the_same_address_twice_goes_out_in_a_second_request(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = EmailChannel(make_settings())
    batch = recipients(["a@example.com", "b@example.com", "A@Example.com"])
    outcomes = channel.send(email_variant(), batch)
    assert all(o.accepted for o in outcomes)
    assert outcomes[0].provider_message_id == outcomes[1].provider_message_id
    assert outcomes[2].provider_message_id != outcomes[0].provider_message_id
    assert sandbox.stats()["sendgrid"]["calls"] == 2
    assert sorted(r["delivery_id"] for r in sandbox.messages("email")) == ["1", "2", "3"]


def test_more_than_1000_recipients_are_split_into_requests(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = EmailChannel(make_settings())
    batch = recipients([f"user{i}@example.com" for i in range(1500)])
    throttled: list[Recipient] = []
    outcomes = channel.send(email_variant(), batch, throttle=throttled.append)
    assert all(o.accepted for o in outcomes) and len(outcomes) == 1500
    assert throttled == [batch[0], batch[1000]]
    assert len(sandbox.messages("email")) == 1500


def test_faults_are_classified(sandbox: SandboxServer, make_settings: Callable[..., Settings]) -> None:
    channel = EmailChannel(make_settings(provider_timeout_s=0.5))
    batch = recipients(["a@example.com", "b@example.com"])

    sandbox.set_faults("sendgrid", error_rate=1.0, error_status=503)
    outcomes = channel.send(email_variant(), batch)
    assert [(o.accepted, o.failure, o.code) for o in outcomes] == [(False, Failure.RETRYABLE, "503")] * 2

    sandbox.set_faults("sendgrid", rate_429=1.0, retry_after_s=7)
    [outcome] = channel.send(email_variant(), batch[:1])
    assert (outcome.failure, outcome.code, outcome.retry_after) == (Failure.RATE_LIMITED, "429", 7.0)

    sandbox.set_faults("sendgrid", timeout_rate=1.0, hang_s=2)
    [outcome] = channel.send(email_variant(), batch[:1])
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "timeout")

    sandbox.clear_faults()
    [outcome] = channel.send(email_variant(), recipients(["not-an-address"]))
    assert (outcome.failure, outcome.code) == (Failure.PERMANENT, "400")
    assert sandbox.messages("email") == []


def test_an_unreachable_provider_is_retryable(make_settings: Callable[..., Settings]) -> None:
    channel = EmailChannel(make_settings(sendgrid_host="http://127.0.0.1:9"))
    [outcome] = channel.send(email_variant(), recipients(["a@example.com"]))
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "connection")


def test_a_bounce_is_reported_by_the_event_webhook_with_the_delivery_id(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    sandbox.event_webhook_url = f"{sandbox.url}/hooks/events"
    sandbox.set_faults("sendgrid", bounce=["gone@example.com"])
    outcomes = EmailChannel(make_settings()).send(email_variant(), recipients(["gone@example.com"], start=5))
    assert outcomes[0].accepted
    sandbox.drain_callbacks()
    [hook] = sandbox.messages("webhook")
    events = json.loads(hook["body_raw"])
    assert [(e["event"], e["delivery_id"]) for e in events] == [("processed", "5"), ("bounce", "5")]


def test_condensed_message_round_trips_and_is_sent(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = EmailChannel(make_settings())
    message = OutageMessage(title="Checkout is down", summary="Payments fail.").stamped(
        datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    )
    variant = channel.condense(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    assert isinstance(variant, EmailVariant) and variant.channel is ChannelName.EMAIL
    assert channel.load_variant(json.loads(json.dumps(variant.to_json()))) == variant

    [outcome] = channel.send(variant, [Recipient(1, "ann@example.com", unsubscribe_token="t1")])
    assert outcome.accepted
    [record] = sandbox.messages("email", include_html=True)
    assert "%unsubscribe_url%" not in record["text"] + record["html"]
    assert f"{UNSUB}?token=t1" in record["text"] and f"{UNSUB}?token=t1" in record["html"]
    assert "Checkout is down" in record["subject"]
