"""The sandbox's SendGrid: validates like SendGrid, records per recipient, signs Event Webhook posts
exactly as SendGrid does (checked with SendGrid's own verifier)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from sendgrid.helpers.eventwebhook import EventWebhook

from channels.sandbox import SandboxServer
from channels.sandbox.secret import event_webhook_public_key

# the sandbox account's key is the session sandbox's per-run secret (tests/conftest.py)
AUTH = {"Authorization": f"Bearer {os.environ['DISPATCHER_SANDBOX_SECRET']}"}


def mail(personalizations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "personalizations": personalizations,
        "from": {"email": "status@example.com"},
        "subject": "Outage",
        "content": [{"type": "text/plain", "value": "Hello %name%"}],
        **extra,
    }


def post(sandbox: SandboxServer, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{sandbox.url}/v3/mail/send", json=body, headers=AUTH if headers is None else headers)


def test_accepts_and_records_one_message_per_recipient_with_substitutions(sandbox: SandboxServer) -> None:
    body = mail(
        [
            {
                "to": [{"email": "a@example.com"}],
                "substitutions": {"%name%": "Ann"},
                "custom_args": {"d": "1"},
            },
            {"to": [{"email": "b@example.com"}], "cc": [{"email": "c@example.com"}], "substitutions": {}},
        ]
    )
    response = post(sandbox, body)
    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    records = {r["recipient"]: r for r in sandbox.messages("email")}
    assert set(records) == {"a@example.com", "b@example.com", "c@example.com"}
    assert records["a@example.com"]["text"] == "Hello Ann"
    assert records["b@example.com"]["text"] == "Hello %name%"
    assert records["a@example.com"]["custom_args"] == {"d": "1"}
    assert {r["provider_message_id"] for r in records.values()} == {message_id}


def test_more_than_1000_personalizations_is_a_400_in_sendgrids_shape(sandbox: SandboxServer) -> None:
    body = mail([{"to": [{"email": f"u{i}@example.com"}]} for i in range(1001)])
    response = post(sandbox, body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "personalizations"
    assert sandbox.messages("email") == []
    assert post(sandbox, mail(body["personalizations"][:1000])).status_code == 202


def test_an_address_twice_in_one_request_is_a_400(sandbox: SandboxServer) -> None:
    body = mail([{"to": [{"email": "a@example.com"}]}, {"to": [{"email": "A@example.com"}]}])
    response = post(sandbox, body)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "personalizations.1.to"
    assert "duplicate" in error["message"]


def test_missing_from_subject_or_content_and_missing_auth(sandbox: SandboxServer) -> None:
    personalizations = [{"to": [{"email": "a@example.com"}]}]
    for missing, field in (("from", "from.email"), ("subject", "subject"), ("content", "content")):
        body = mail(personalizations)
        del body[missing]
        response = post(sandbox, body)
        assert response.status_code == 400, missing
        assert field in [e["field"] for e in response.json()["errors"]]
    per_personalization_subject = mail([{"to": [{"email": "a@example.com"}], "subject": "Hi"}])
    del per_personalization_subject["subject"]
    assert post(sandbox, per_personalization_subject).status_code == 202
    assert post(sandbox, mail(personalizations), headers={}).status_code == 401


def test_event_webhook_posts_are_signed_as_sendgrid_signs_them(sandbox: SandboxServer) -> None:
    sandbox.event_webhook_url = f"{sandbox.url}/hooks/sendgrid-events"
    sandbox.set_faults("sendgrid", bounce=["bad@example.com"])
    body = mail(
        [
            {"to": [{"email": "ok@example.com"}], "custom_args": {"delivery_id": "7"}},
            {"to": [{"email": "bad@example.com"}], "custom_args": {"delivery_id": "8"}},
        ]
    )
    message_id = post(sandbox, body).headers["X-Message-Id"]
    sandbox.drain_callbacks()
    posts = sandbox.messages("webhook")
    assert len(posts) == 1
    hook = posts[0]
    key = httpx.get(f"{sandbox.url}/sandbox/keys").json()["sendgrid_event_webhook_public_key"]
    assert key == sandbox.public_key == event_webhook_public_key(sandbox.secret)  # derived from the secret
    verifier = EventWebhook(key)
    signature = hook["headers"]["x-twilio-email-event-webhook-signature"]
    timestamp = hook["headers"]["x-twilio-email-event-webhook-timestamp"]
    assert verifier.verify_signature(hook["body_raw"], signature, timestamp)
    assert not verifier.verify_signature(hook["body_raw"].replace("ok@", "ok2@"), signature, timestamp)

    events = json.loads(hook["body_raw"])
    seen = {(e["email"], e["event"], e["delivery_id"]) for e in events}
    assert seen == {
        ("ok@example.com", "processed", "7"),
        ("ok@example.com", "delivered", "7"),
        ("bad@example.com", "processed", "8"),
        ("bad@example.com", "bounce", "8"),
    }
    for event in events:
        assert event["sg_message_id"].startswith(message_id)
        assert event["sg_event_id"] and isinstance(event["timestamp"], int)
