"""The receiver-side check of the outgoing webhook signature (pure)."""

from __future__ import annotations

from channels.webhook.signing import sign_webhook, verify_webhook_signature

BODY = b'{"event":"incident_opened"}'


def test_valid_signature_within_tolerance() -> None:
    signature = sign_webhook("key", 1_700_000_000, BODY)
    assert verify_webhook_signature("key", "1700000000", BODY, signature, now=1_700_000_100)
    assert verify_webhook_signature("key", 1_700_000_000, BODY.decode(), signature, now=1_700_000_000)


def test_tampering_wrong_secret_and_replays_are_rejected() -> None:
    signature = sign_webhook("key", 1_700_000_000, BODY)
    assert not verify_webhook_signature("key", 1_700_000_000, BODY + b" ", signature, now=1_700_000_000)
    assert not verify_webhook_signature("nope", 1_700_000_000, BODY, signature, now=1_700_000_000)
    assert not verify_webhook_signature("key", 1_700_000_001, BODY, signature, now=1_700_000_001)
    assert not verify_webhook_signature("key", 1_700_000_000, BODY, signature, now=1_700_000_301)
    assert not verify_webhook_signature("key", "soon", BODY, signature, now=1_700_000_000)


def test_any_of_several_signatures_during_secret_rotation() -> None:
    old, new = sign_webhook("old", 10, BODY), sign_webhook("new", 10, BODY)
    assert verify_webhook_signature("new", 10, BODY, f"{old}, {new}", now=10)
    assert not verify_webhook_signature("other", 10, BODY, f"{old},{new}", now=10)
