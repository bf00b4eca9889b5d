"""WebhookChannel: signed JSON POSTs to subscriber URLs (the sandbox's receiver)."""

from __future__ import annotations

import json
from collections.abc import Callable

from channels.base import Failure
from channels.sandbox import SandboxServer
from channels.webhook.adapter import WebhookChannel
from channels.webhook.signing import verify_webhook_signature
from config.settings import Settings

from .helpers import recipients, webhook_variant


def test_payload_is_posted_signed_to_each_url(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(webhook_signing_secret="s3cret")
    variant = webhook_variant()
    urls = [f"{sandbox.url}/hooks/a", f"{sandbox.url}/hooks/b"]
    outcomes = WebhookChannel(settings).send(variant, recipients(urls, start=7))
    assert [(o.delivery_id, o.accepted) for o in outcomes] == [(7, True), (8, True)]
    records = {r["recipient"]: r for r in sandbox.messages("webhook")}
    assert set(records) == {"a", "b"}
    for name, delivery in (("a", "7"), ("b", "8")):
        record = records[name]
        headers = record["headers"]
        assert record["body"] == variant.payload and json.loads(record["body_raw"]) == variant.payload
        assert headers["x-dispatcher-delivery"] == delivery
        timestamp, signature = headers["x-dispatcher-timestamp"], headers["x-dispatcher-signature"]
        assert signature.startswith("v1=")
        assert verify_webhook_signature("s3cret", timestamp, record["body_raw"].encode(), signature)
        assert not verify_webhook_signature("other", timestamp, record["body_raw"].encode(), signature)


def test_statuses_and_transport_errors_are_classified(
    sandbox: SandboxServer, make_settings: Callable[..., Settings]
) -> None:
    channel = WebhookChannel(make_settings(provider_timeout_s=0.5))
    hook = recipients([f"{sandbox.url}/hooks/a"])
    sandbox.set_faults("webhook", error_rate=1.0, error_status=502)
    assert [(o.failure, o.code) for o in channel.send(webhook_variant(), hook)] == [
        (Failure.RETRYABLE, "502")
    ]
    sandbox.set_faults("webhook", rate_429=1.0, retry_after_s=9)
    [outcome] = channel.send(webhook_variant(), hook)
    assert (outcome.failure, outcome.retry_after) == (Failure.RATE_LIMITED, 9.0)
    sandbox.set_faults("webhook", timeout_rate=1.0, hang_s=2)
    [outcome] = channel.send(webhook_variant(), hook)
    assert (outcome.failure, outcome.code) == (Failure.RETRYABLE, "timeout")
    sandbox.clear_faults()
    outcomes = channel.send(
        webhook_variant(),
        recipients([f"{sandbox.url}/no-such-hook", "http://127.0.0.1:9/x", "ftp://example.com/"]),
    )
    assert [(o.failure, o.code) for o in outcomes] == [
        (Failure.PERMANENT, "404"),
        (Failure.RETRYABLE, "connection"),
        (Failure.PERMANENT, "unsafe_url"),  # refused before any connection: not https or http
    ]
