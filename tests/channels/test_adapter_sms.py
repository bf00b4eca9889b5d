"""SmsChannel through the real Twilio SDK against the sandbox."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from twilio.request_validator import RequestValidator

from channels.base import Failure, Recipient
from channels.sandbox import SandboxServer
from channels.sms.adapter import SmsChannel
from config.settings import Settings

from .helpers import recipients, sms_variant


def test_each_recipient_gets_a_message_with_its_status_callback(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    channel = SmsChannel(settings)
    batch = recipients([f"+1415555{i:04d}" for i in range(30)], start=100)
    throttled: list[Recipient] = []
    outcomes = channel.send(sms_variant(), batch, throttle=throttled.append)

    assert [o.delivery_id for o in outcomes] == [r.delivery_id for r in batch]
    assert all(o.accepted and o.provider_message_id.startswith("SM") for o in outcomes)  # type: ignore[union-attr]
    assert sorted(throttled, key=lambda r: r.delivery_id) == batch
    records = {r["recipient"]: r for r in sandbox.messages("sms")}
    for recipient, outcome in zip(batch, outcomes, strict=True):
        record = records[recipient.address]
        assert record["text"] == sms_variant().text
        assert record["provider_message_id"] == outcome.provider_message_id
        assert record["delivery_id"] == str(recipient.delivery_id)
        assert record["from"] == settings.twilio_from

    sandbox.drain_callbacks()
    callbacks = sandbox.messages("webhook")
    assert len(callbacks) == 60  # sent + delivered for each
    validator = RequestValidator(sandbox.secret)  # the per-run secret signs them
    for hook in callbacks:
        assert hook["url"].startswith(f"{settings.public_url}/v1/webhooks/twilio?delivery_id=")
        assert validator.validate(hook["url"], hook["form"], hook["headers"]["x-twilio-signature"])
        delivery_id = parse_qs(urlsplit(hook["url"]).query)["delivery_id"][0]
        assert records[hook["form"]["To"]]["delivery_id"] == delivery_id


def test_invalid_and_opted_out_numbers_are_permanent(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    sandbox.set_faults("twilio", opted_out=["+14155550002"])
    channel = SmsChannel(make_settings())
    outcomes = channel.send(sms_variant(), recipients(["+14155550001", "+1 not a number", "+14155550002"]))
    assert outcomes[0].accepted
    assert (outcomes[1].failure, outcomes[1].code) == (Failure.PERMANENT, "21211")
    assert (outcomes[2].failure, outcomes[2].code) == (Failure.PERMANENT, "21610")
    assert [r["recipient"] for r in sandbox.messages("sms")] == ["+14155550001"]


def test_faults_are_classified(sandbox: SandboxServer, make_settings: Callable[..., Settings]) -> None:
    channel = SmsChannel(make_settings(provider_timeout_s=0.5))
    one = recipients(["+14155550001"])

    sandbox.set_faults("twilio", error_rate=1.0, error_status=500)
    [outcome] = channel.send(sms_variant(), one)
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "20500")

    sandbox.set_faults("twilio", rate_429=1.0, retry_after_s=3)
    [outcome] = channel.send(sms_variant(), one)
    assert (outcome.failure, outcome.retry_after) == (Failure.RATE_LIMITED, 3.0)

    sandbox.set_faults("twilio", timeout_rate=1.0, hang_s=2)
    [outcome] = channel.send(sms_variant(), one)
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "timeout")
    assert sandbox.messages("sms") == []


def test_a_refused_connection_is_retryable_and_not_a_timeout(make_settings: Callable[..., Settings]) -> None:
    """urllib3 files a refused connection under connect timeouts too; it is told apart here."""
    import socket

    with socket.socket() as closed:  # a port bound and never listened on refuses at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        channel = SmsChannel(make_settings(twilio_base_url=f"http://127.0.0.1:{port}"))
        [outcome] = channel.send(sms_variant(), recipients(["+14155550001"]))
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "connection")


def test_outcomes_keep_the_order_under_concurrency_and_partial_failure(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    sandbox.set_faults("twilio", latency_ms=20, invalid_numbers=[f"+1415555{i:04d}" for i in range(0, 40, 3)])
    channel = SmsChannel(make_settings(send_concurrency=8))
    batch = recipients([f"+1415555{i:04d}" for i in range(40)])
    outcomes = channel.send(sms_variant(), batch)
    assert [o.delivery_id for o in outcomes] == [r.delivery_id for r in batch]
    assert [o.accepted for o in outcomes] == [i % 3 != 0 for i in range(40)]


def test_each_message_goes_from_the_number_whose_slot_it_got(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    numbers = ["+15005550006", "+15005550007", "+15005550008"]
    sandbox.set_faults("twilio", senders=numbers)
    channel = SmsChannel(make_settings(twilio_from=",".join(numbers)))
    batch = recipients([f"+1415555{i:04d}" for i in range(9)], start=1)
    slot_sender = {r.delivery_id: numbers[i % 3] for i, r in enumerate(batch)}
    outcomes = channel.send(sms_variant(), batch, throttle=lambda r: slot_sender[r.delivery_id])
    assert all(o.accepted for o in outcomes)
    sent_from = {int(m["delivery_id"]): m["from"] for m in sandbox.messages("sms")}
    assert sent_from == slot_sender


def test_a_messaging_service_sends_with_its_sid_instead_of_from(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    service = "MG" + "f" * 32
    channel = SmsChannel(make_settings(twilio_messaging_service_sid=service))
    outcomes = channel.send(sms_variant(), recipients(["+14155550001", "+14155550002"]))
    assert all(o.accepted for o in outcomes)
    records = sandbox.messages("sms")
    assert [r["messaging_service_sid"] for r in records] == [service, service]


def test_a_request_without_a_slot_is_not_made(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    from channels.base import NoSlot

    channel = SmsChannel(make_settings())
    batch = recipients(["+14155550001", "+14155550002"])

    def throttle(recipient: Recipient) -> None:
        if recipient.delivery_id == batch[1].delivery_id:
            raise NoSlot("test-bucket")

    first, second = channel.send(sms_variant(), batch, throttle=throttle)
    assert first.accepted and (second.failure, second.code) == (Failure.NO_SLOT, "no_slot")
    assert [r["recipient"] for r in sandbox.messages("sms")] == ["+14155550001"]


def test_requests_to_the_sandbox_carry_the_slot_they_were_given(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    """The pacing benchmark's measurement: the throttle notes each request's slot, the transport
    stamps it with the moment it sends, and the sandbox keeps both with the arrival."""
    from channels.base import note_slot

    sandbox.clear_messages()
    channel = SmsChannel(make_settings())
    batch = recipients(["+14155550001", "+14155550002", "+14155550003"])
    slots = {r.delivery_id: 1_700_000_000.0 + r.delivery_id / 1000 for r in batch}

    def throttle(recipient: Recipient) -> None:
        note_slot(slots[recipient.delivery_id])

    assert all(o.accepted for o in channel.send(sms_variant(), batch, throttle=throttle))
    seen = sandbox.arrivals("twilio")
    assert sorted(slot for _, slot, _ in seen) == sorted(slots.values())
    assert all(isinstance(sent, float) for _, _, sent in seen)


def test_a_request_without_a_noted_slot_carries_no_stamp(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    sandbox.clear_messages()
    channel = SmsChannel(make_settings())
    assert channel.send(sms_variant(), recipients(["+14155550001"]), throttle=lambda r: None)[0].accepted
    [(_, slot, sent)] = sandbox.arrivals("twilio")
    assert (slot, sent) == (None, None)


def test_the_sandbox_reads_the_slot_stamp_under_the_name_the_adapter_writes() -> None:
    """The sandbox imports nothing of the service, so it names the header itself."""
    from channels import base
    from channels.sandbox import providers

    assert providers.SLOT_HEADER == base.SLOT_HEADER
