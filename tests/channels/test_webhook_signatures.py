"""The providers' webhook signature checks, pure: which key, which header is at fault, how old.

The API's routes around them (403 `signature_invalid`, the reports applied) are tests/api/test_webhooks.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from channels.base import SignatureMismatch
from channels.email import webhook as sendgrid_webhook
from channels.sandbox.secret import event_webhook_key
from channels.sandbox.signing import EventWebhookSigner, twilio_signature
from channels.sms import webhook as twilio_webhook
from config.settings import Settings

SECRET = "per-run-secret-for-these-tests"


def sandboxed(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sandbox_secret": SECRET,
        "sendgrid_api_key": None,
        "twilio_account_sid": None,
        "twilio_auth_token": None,
        "public_url": "https://status.example.com/",
        **overrides,
    }
    return Settings(**values)


def sendgrid_headers(body: bytes, signer: EventWebhookSigner, at: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if at is None else at))
    return {
        sendgrid_webhook.SIGNATURE_HEADER.lower(): signer.sign(ts, body),  # any case: a plain dict
        sendgrid_webhook.TIMESTAMP_HEADER: ts,
    }


def test_sendgrid_accepts_the_sandbox_key_and_names_the_header_at_fault() -> None:
    settings, body = sandboxed(), b'[{"event":"delivered"}]'
    signer = EventWebhookSigner(event_webhook_key(SECRET))
    sendgrid_webhook.verify_events(settings, body, sendgrid_headers(body, signer))

    def fault(body: bytes, headers: dict[str, str]) -> str:
        with pytest.raises(SignatureMismatch) as caught:
            sendgrid_webhook.verify_events(settings, body, headers)
        assert isinstance(caught.value, ValueError)
        return caught.value.header

    assert fault(body, {}) == sendgrid_webhook.SIGNATURE_HEADER
    assert fault(body.replace(b"delivered", b"bounce"), sendgrid_headers(body, signer)) == (
        sendgrid_webhook.SIGNATURE_HEADER
    )
    assert fault(body, sendgrid_headers(body, EventWebhookSigner())) == sendgrid_webhook.SIGNATURE_HEADER
    stale = time.time() - sendgrid_webhook.MAX_AGE_S - 5
    assert fault(body, sendgrid_headers(body, signer, stale)) == sendgrid_webhook.TIMESTAMP_HEADER
    bad_time = {**sendgrid_headers(body, signer), sendgrid_webhook.TIMESTAMP_HEADER: "soon"}
    assert fault(body, bad_time) == sendgrid_webhook.TIMESTAMP_HEADER


def test_a_live_sendgrid_without_its_verification_key_refuses_everything() -> None:
    settings = sandboxed(sendgrid_api_key="SG.live", sendgrid_webhook_public_key=None)
    with pytest.raises(SignatureMismatch, match="no SendGrid verification key"):
        sendgrid_webhook.verification_key(settings)
    assert sendgrid_webhook.verification_key(sandboxed()) == (
        EventWebhookSigner(event_webhook_key(SECRET)).public_key_b64
    )


def test_twilio_checks_the_url_it_called_through_our_public_url() -> None:
    settings = sandboxed()
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    body = b"MessageSid=SM1&MessageStatus=delivered"
    url = "https://status.example.com/v1/webhooks/twilio?delivery_id=7"
    assert twilio_webhook.called_url(settings, "/v1/webhooks/twilio", "delivery_id=7") == url
    good = {twilio_webhook.SIGNATURE_HEADER: twilio_signature(SECRET, url, params)}
    form = twilio_webhook.verified_form(settings, "/v1/webhooks/twilio", "delivery_id=7", body, good)
    assert form == params
    for path, query, raw, headers in (
        ("/v1/webhooks/twilio", "delivery_id=8", body, good),  # another delivery's URL
        ("/v1/webhooks/twilio", "delivery_id=7", body + b"&To=x", good),  # tampered form
        ("/v1/webhooks/twilio", "delivery_id=7", b"\xff", good),  # not UTF-8
        ("/v1/webhooks/twilio", "delivery_id=7", body, {}),  # unsigned
    ):
        with pytest.raises(SignatureMismatch) as caught:
            twilio_webhook.verified_form(settings, path, query, raw, headers)
        assert caught.value.header == twilio_webhook.SIGNATURE_HEADER


def test_twilio_signed_over_the_url_with_its_port_is_accepted_too() -> None:
    """Twilio's signing is not consistent about the port: one over `:443` is as good, as the SDK's
    check says; a wrong one, or one in characters no signature has, is refused either way."""
    settings = sandboxed()
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    body = b"MessageSid=SM1&MessageStatus=delivered"
    with_port = "https://status.example.com:443/v1/webhooks/twilio?delivery_id=7"
    headers = {twilio_webhook.SIGNATURE_HEADER: twilio_signature(SECRET, with_port, params)}
    assert (
        twilio_webhook.verified_form(settings, "/v1/webhooks/twilio", "delivery_id=7", body, headers)
        == params
    )
    for bad in (twilio_signature("another-secret", with_port, params), "sïgnature"):
        with pytest.raises(SignatureMismatch):
            twilio_webhook.verified_form(
                settings, "/v1/webhooks/twilio", "delivery_id=7", body, {twilio_webhook.SIGNATURE_HEADER: bad}
            )


def test_twilio_sandboxed_without_the_secret_refuses() -> None:
    with pytest.raises(SignatureMismatch, match="DISPATCHER_SANDBOX_SECRET is unset"):
        twilio_webhook.auth_token(sandboxed(sandbox_secret=None))
    assert twilio_webhook.auth_token(sandboxed(twilio_account_sid="AC1", twilio_auth_token="live")) == "live"
