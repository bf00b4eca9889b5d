"""The sandbox's status webhooks to its own `/hooks/` receiver are handed over in-process, not over
loopback HTTP (channels/sandbox/callbacks.py); what the receiver records and counts must be what the
same POST over HTTP gives. `localhost` names the same receiver without matching the sandbox's own URL
(127.0.0.1), so those POSTs still go over the network: the two are compared."""

from __future__ import annotations

import os
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from channels.sandbox import SandboxServer

SID = "AC" + "1" * 32
TOKEN = os.environ["DISPATCHER_SANDBOX_SECRET"]
PER_POST = ("x-twilio-signature", "i-twilio-idempotency-token", "host")  # differ by URL or by POST


def send_sms(sandbox: SandboxServer, callback: str) -> str:
    response = httpx.post(
        f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages.json",
        data={"To": "+14155550100", "From": "+15005550006", "Body": "API down", "StatusCallback": callback},
        auth=(SID, TOKEN),
    )
    assert response.status_code == 201
    return str(response.json()["sid"])


def hooks_of(sandbox: SandboxServer, callback: str) -> list[dict[str, Any]]:
    sid = send_sms(sandbox, callback)
    sandbox.drain_callbacks()
    hooks = [h for h in sandbox.messages("webhook") if h["form"]["MessageSid"] == sid]
    assert [h["form"]["MessageStatus"] for h in hooks] == ["sent", "delivered"]
    return hooks


def test_own_receiver_records_what_http_records(sandbox: SandboxServer) -> None:
    assert sandbox.url is not None and "127.0.0.1" in sandbox.url
    own = f"{sandbox.url}/hooks/service/v1/webhooks/twilio?delivery_id=42"
    over_http = own.replace("127.0.0.1", "localhost")
    local, remote = hooks_of(sandbox, own), hooks_of(sandbox, over_http)
    validator = RequestValidator(TOKEN)
    for mine, theirs in zip(local, remote, strict=True):
        assert list(mine) == list(theirs)
        assert mine["url"] == own and theirs["url"] == over_http
        assert mine["recipient"] == theirs["recipient"] == "service/v1/webhooks/twilio"
        assert mine["delivery_id"] == theirs["delivery_id"]
        assert list(mine["headers"]) == list(theirs["headers"])  # the same names, in the same order
        for name, value in mine["headers"].items():
            if name not in PER_POST:
                assert value == theirs["headers"][name], name
        assert mine["headers"]["host"] == own.split("/")[2]
        assert list(mine["form"]) == list(theirs["form"]) and mine["body"] is theirs["body"] is None
        assert validator.validate(mine["url"], mine["form"], mine["headers"]["x-twilio-signature"])
        assert validator.validate(theirs["url"], theirs["form"], theirs["headers"]["x-twilio-signature"])
    stats = sandbox.stats()
    assert stats["webhook"]["calls"] == stats["webhook"]["accepted"] == 4
    assert stats["twilio"]["callbacks_sent"] == 4 and stats["twilio"]["callbacks"]["reports"] == 4


def test_own_receiver_answers_with_its_faults(sandbox: SandboxServer) -> None:
    """Faults on the receiver apply in-process too: an injected 503 is a non-2xx answer."""
    sandbox.set_faults("webhook", error_rate=1.0, error_status=503)
    send_sms(sandbox, f"{sandbox.url}/hooks/twilio")
    sandbox.drain_callbacks()
    stats = sandbox.stats()["twilio"]
    assert (stats["callbacks_sent"], stats["callbacks_failed"]) == (0, 2)
    assert (stats["callbacks"]["non_2xx"], stats["callbacks"]["errors"]) == (2, 0)
    assert sandbox.stats()["webhook"]["faults"] == 2
