"""`up` wires the sandbox's per-run secret: it makes one at start and gives it to the sandbox and the
service (environment only), so the sandbox's genuine callbacks move receipts to delivered, and a
callback signed with any other secret (or the old public constant) is refused."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from channels.sandbox.signing import EventWebhookSigner
from tests.conftest import free_port

pytestmark = pytest.mark.slow

COMMANDER = "c" * 40
ADMIN = "a" * 40


def _receipts(url: str, broadcast_id: int) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{url}/v1/broadcasts/{broadcast_id}/receipts", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    return list(response.json()["receipts"])


def test_up_passes_the_sandbox_its_per_run_secret_and_refuses_any_other(tmp_path: Path) -> None:
    port, sandbox_port = free_port(), free_port()
    drop = {"REDIS_URL", "DATABASE_URL", "DISPATCHER_DATA_DIR", "DISPATCHER_SANDBOX_SECRET"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["DISPATCHER_REDIS_PREFIX"] = ""
    env["DISPATCHER_API_KEYS"] = f"commander:{COMMANDER},admin:{ADMIN}"
    argv = [
        sys.executable,
        "-m",
        "dispatcher.cli",
        "up",
        "--port",
        str(port),
        "--sandbox-port",
        str(sandbox_port),
    ]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "ready" not in lines:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert "ready" in lines, "\n".join(lines)
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
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
