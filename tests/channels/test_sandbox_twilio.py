"""The sandbox's Twilio: Messages.json answers and errors as Twilio does; status callbacks are
signed as Twilio signs them (checked with Twilio's own RequestValidator)."""

from __future__ import annotations

import os

import httpx
from twilio.request_validator import RequestValidator

from channels.sandbox import SandboxServer

SID = "AC" + "1" * 32
TOKEN = os.environ["DISPATCHER_SANDBOX_SECRET"]  # the sandbox account's auth token: its per-run secret


def create(sandbox: SandboxServer, to: str, callback: str | None = None, auth: tuple[str, str] | None = None):
    data = {"To": to, "From": "+15005550006", "Body": "API down"}
    if callback:
        data["StatusCallback"] = callback
    return httpx.post(
        f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages.json", data=data, auth=auth or (SID, TOKEN)
    )


def test_created_message_has_twilios_shape(sandbox: SandboxServer) -> None:
    response = create(sandbox, "+14155550100")
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert body["to"] == "+14155550100" and body["account_sid"] == SID
    [record] = sandbox.messages("sms")
    assert record["text"] == "API down" and record["provider_message_id"] == body["sid"]


def test_errors_in_twilios_shape(sandbox: SandboxServer) -> None:
    sandbox.set_faults("twilio", opted_out=["+14155550199"], invalid_numbers=["+14155550198"])
    for to, code in (("12345", 21211), ("+14155550198", 21211), ("+14155550199", 21610)):
        response = create(sandbox, to)
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == code and body["status"] == 400
        assert body["more_info"].endswith(str(code))
    assert create(sandbox, "+14155550100", auth=(SID, "")).status_code == 401
    assert create(sandbox, "+14155550100", auth=(SID, "another-token")).status_code == 401
    assert sandbox.messages("sms") == []


def test_status_callbacks_are_signed_and_ordered(sandbox: SandboxServer) -> None:
    sandbox.set_faults("twilio", undelivered=["+14155550111"])
    callback = f"{sandbox.url}/hooks/twilio?delivery_id=42"
    sid_ok = create(sandbox, "+14155550100", callback).json()["sid"]
    sid_bad = create(sandbox, "+14155550111", callback).json()["sid"]
    sandbox.drain_callbacks()
    hooks = sandbox.messages("webhook")
    validator = RequestValidator(TOKEN)
    statuses: dict[str, list[str]] = {}
    for hook in hooks:
        assert hook["url"] == callback
        signature = hook["headers"]["x-twilio-signature"]
        assert validator.validate(hook["url"], hook["form"], signature)
        assert not RequestValidator("another-token").validate(hook["url"], hook["form"], signature)
        statuses.setdefault(hook["form"]["MessageSid"], []).append(hook["form"]["MessageStatus"])
        if hook["form"]["MessageStatus"] == "undelivered":
            assert hook["form"]["ErrorCode"] == "30003"
    assert statuses == {sid_ok: ["sent", "delivered"], sid_bad: ["sent", "undelivered"]}


def test_lost_callbacks_and_the_message_resource(sandbox: SandboxServer) -> None:
    """With every callback lost, the Message resource (what reconciliation reads) still knows the
    final status, in Twilio's shape; another account, a wrong token or an unknown SID get no answer."""
    sandbox.set_faults("twilio", callback_drop_rate=1.0, undelivered=["+14155550111"])
    callback = f"{sandbox.url}/hooks/twilio?delivery_id=7"
    sid = create(sandbox, "+14155550111", callback).json()["sid"]
    sandbox.drain_callbacks()
    assert sandbox.messages("webhook") == []
    assert sandbox.stats()["twilio"]["callbacks_dropped"] == 1

    url = f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages/{sid}.json"
    body = httpx.get(url, auth=(SID, TOKEN)).json()
    assert (body["sid"], body["status"], body["error_code"], body["to"]) == (
        sid,
        "undelivered",
        30003,
        "+14155550111",
    )
    assert body["uri"] == f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json"
    assert httpx.get(url, auth=(SID, "another-token")).status_code == 401
    other = f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages/SM{'0' * 32}.json"
    missing = httpx.get(other, auth=(SID, TOKEN))
    assert missing.status_code == 404 and missing.json()["code"] == 20404


def _post(sandbox: SandboxServer, **fields: str) -> httpx.Response:
    data = {"To": "+14155550100", "Body": "API down", **fields}
    return httpx.post(f"{sandbox.url}/2010-04-01/Accounts/{SID}/Messages.json", data=data, auth=(SID, TOKEN))


def test_a_messaging_service_sends_without_from_and_is_recorded(sandbox: SandboxServer) -> None:
    service = "MG" + "0123456789abcdef" * 2
    response = _post(sandbox, MessagingServiceSid=service)
    assert response.status_code == 201
    assert response.json()["messaging_service_sid"] == service and response.json()["from"] is None
    [record] = sandbox.messages("sms")
    assert record["messaging_service_sid"] == service and record["from"] == service


def test_senders_are_checked_as_twilio_does(sandbox: SandboxServer) -> None:
    sandbox.set_faults("twilio", senders=["+15005550006", "+15005550007"])
    cases = (
        ({}, 21603),  # neither From nor MessagingServiceSid
        ({"From": "not-a-number!"}, 21212),
        ({"From": "+15005550009"}, 21606),  # a valid number, but not one of the account's
        ({"MessagingServiceSid": "MG123"}, 21705),
    )
    for fields, code in cases:
        response = _post(sandbox, **fields)
        assert (response.status_code, response.json()["code"]) == (400, code), fields
    assert sandbox.messages("sms") == []
    assert _post(sandbox, From="+15005550007").status_code == 201
    assert [r["from"] for r in sandbox.messages("sms")] == ["+15005550007"]
