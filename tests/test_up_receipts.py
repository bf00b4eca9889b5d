"""`up` wires the sandbox's per-run secret: it makes one at start and gives it to the sandbox and the
service (environment only), so the sandbox's genuine callbacks move receipts to delivered, and a
callback signed with any other secret (or the old public constant) is refused."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from channels.sandbox.signing import EventWebhookSigner
from tests.processes import Up, newcomer_env

pytestmark = pytest.mark.slow

COMMANDER = "c" * 40
ADMIN = "a" * 40


def _receipts(url: str, broadcast_id: int) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{url}/v1/broadcasts/{broadcast_id}/receipts", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    return list(response.json()["receipts"])


def test_up_passes_the_sandbox_its_per_run_secret_and_refuses_any_other(tmp_path: Path) -> None:
    env = newcomer_env(
        drop={"DISPATCHER_SANDBOX_SECRET"},
        DISPATCHER_REDIS_PREFIX="",
        DISPATCHER_API_KEYS=f"commander:{COMMANDER},admin:{ADMIN}",
    )
    up = Up(tmp_path, env)
    url = up.url
    try:
        up.wait_ready(120)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        subscriber = {"lists": ["customers"], "phone": "+14155550142", "email": "pat@example.com"}
        assert httpx.put(f"{url}/v1/subscribers/pat", json=subscriber, headers=admin).status_code == 201
        message = {
            "title": "Checkout is failing",
            "impact": "major",
            "status_page_url": "https://status.example.com",
            "channels": ["sms", "email"],
        }
        created = httpx.post(
            f"{url}/v1/incidents", json=message, headers={"Authorization": f"Bearer {COMMANDER}"}
        )
        assert created.status_code == 201, created.text
        broadcast_id = created.json()["broadcast"]["id"]

        deadline = time.monotonic() + 90
        receipts = _receipts(url, broadcast_id)
        while time.monotonic() < deadline and {r["state"] for r in receipts} != {"delivered"}:
            time.sleep(0.5)
            receipts = _receipts(url, broadcast_id)
        assert sorted((r["channel"], r["state"]) for r in receipts) == [
            ("email", "delivered"),
            ("sms", "delivered"),
        ]

        sms = next(r for r in receipts if r["channel"] == "sms")
        path = f"/v1/webhooks/twilio?delivery_id={sms['delivery_id']}"
        params = {
            "MessageSid": sms["provider_message_id"],
            "MessageStatus": "undelivered",
            "ErrorCode": "30003",
        }
        for token in (secrets.token_urlsafe(32), "sandbox-twilio-auth-token"):
            signature = RequestValidator(token).compute_signature(url + path, params)
            forged = httpx.post(
                url + path,
                content=urlencode(params),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                },
            )
            assert forged.status_code == 403, forged.text
        email = next(r for r in receipts if r["channel"] == "email")
        events = json.dumps(
            [
                {
                    "event": "bounce",
                    "delivery_id": str(email["delivery_id"]),
                    "sg_message_id": email["provider_message_id"],
                }
            ]
        ).encode()
        stamp = str(int(time.time()))
        forged = httpx.post(
            f"{url}/v1/webhooks/sendgrid",
            content=events,
            headers={
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": EventWebhookSigner().sign(stamp, events),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            },
        )
        assert forged.status_code == 403, forged.text
        assert {r["state"] for r in _receipts(url, broadcast_id)} == {"delivered"}
    finally:
        up.stop()
