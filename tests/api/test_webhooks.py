"""Provider callbacks signed the way the providers sign them. Only a report signed with the right key
(a sandboxed provider: the run's sandbox secret, never a constant), about a delivery on that
provider's channel, that was sent, with the provider id the send returned, changes anything;
everything else changes nothing (state, provider id, counters, broadcast) and is counted."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from channels.sandbox.signing import EventWebhookSigner
from config import Settings
from dispatcher.app import create_app
from dispatcher.domain.states import DeliveryState
from dispatcher.engine import inbox
from dispatcher.engine.progress import progress
from dispatcher.engine.status_reports import reapply_parked
from dispatcher.engine.transitions import count_moves, set_details, transition
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, Delivery, utcnow
from tests.api.conftest import MESSAGE, PUBLIC_URL, auth
from tests.conftest import free_port

SECRET = os.environ["DISPATCHER_SANDBOX_SECRET"]
OLD_PUBLIC_TOKEN = "sandbox-twilio-auth-token"  # what the sandbox used to sign with, in the code
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def open_broadcast(client: TestClient, keys: dict[str, str]) -> int:
    created = client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["commander"]))
    return int(created.json()["broadcast"]["id"])


def add_delivery(
    db: Database,
    broadcast_id: int,
    channel: str,
    address: str,
    *,
    state: str = "sent",
    provider_message_id: str | None = None,
) -> int:
    """A delivery as a worker would leave it (`sent` with the provider's id), counted as such."""
    with db.session() as session:
        row = Delivery(
            broadcast_id=broadcast_id,
            tier=2,
            channel=channel,
            address=address,
            state="pending",
            provider_message_id=None,
        )
        session.add(row)
        session.flush()
        now = utcnow()
        count_moves(session, [(broadcast_id, 2, channel)], None, DeliveryState.PENDING)
        path = {"pending": [], "sending": ["sending"], "sent": ["sending", "sent"]}[state]
        current = DeliveryState.PENDING
        for step in path:
            transition(session, [row.id], expect=current, to=DeliveryState(step), now=now)
            current = DeliveryState(step)
        if provider_message_id:
            set_details(session, [{"id": row.id, "provider_message_id": provider_message_id}])
        return row.id


def snapshot(db: Database, broadcast_id: int) -> tuple[Any, ...]:
    """Everything a forged report could change: rows, progress counters, the broadcast's state."""
    with db.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.state, Delivery.provider_message_id, Delivery.last_error_code).where(
                Delivery.broadcast_id == broadcast_id
            )
        ).all()
        state = session.scalar(select(Broadcast.state).where(Broadcast.id == broadcast_id))
        shown = progress(session, broadcast_id)
    return sorted(tuple(r) for r in rows), state, json.dumps(shown, sort_keys=True, default=str)


def row(db: Database, delivery_id: int) -> tuple[str, str | None]:
    with db.session() as session:
        found = session.execute(
            select(Delivery.state, Delivery.provider_message_id).where(Delivery.id == delivery_id)
        ).one()
        return str(found[0]), found[1]


def sendgrid_post(
    client: TestClient,
    signer: EventWebhookSigner,
    events: list[dict[str, Any]],
    *,
    timestamp: int | None = None,
    tamper: bool = False,
    sign: bool = True,
) -> httpx.Response:
    payload = json.dumps(events, separators=(",", ":")).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    headers = {"Content-Type": "application/json"}
    if sign:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = signer.sign(ts, payload)
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = ts
    if tamper:
        payload = payload.replace(b"bounce", b"delivered")
    return applied(client, client.post("/v1/webhooks/sendgrid", content=payload, headers=headers))


def applied(client: TestClient, response: httpx.Response) -> httpx.Response:
    """The response, once the API's inbox has applied what it acknowledged (the reports are applied
    behind the 2xx: dispatcher/engine/inbox.py)."""
    if response.is_success:
        assert inbox.wait_applied(client.app.state.settings)
    return response


def twilio_post(
    client: TestClient, delivery_id: int, params: dict[str, str], *, token: str = SECRET
) -> httpx.Response:
    path = f"/v1/webhooks/twilio?delivery_id={delivery_id}"
    signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, params)
    headers = {**FORM, "X-Twilio-Signature": signature}
    return applied(client, client.post(path, content=urlencode(params), headers=headers))


def twilio_params(sid: str, status: str = "delivered", **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "To": "+14155550101", "AccountSid": "AC1", **extra}


def ignored(client: TestClient) -> dict[tuple[str, str], float]:
    """/metrics' ignored status reports, by (provider, reason)."""
    text = client.get("/metrics").text
    found = re.findall(
        r'dispatcher_provider_status_ignored_total\{provider="(\w+)",reason="(\w+)"\} ([0-9.]+)', text
    )
    return {(p, r): float(n) for p, r, n in found}


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[str, float]:
    return {f"{p}:{r}": n - before.get((p, r), 0.0) for (p, r), n in after.items() if n != before.get((p, r))}


def test_sendgrid_events(
    client: TestClient, door: TestClient, keys: dict[str, str], db: Database, signer: EventWebhookSigner
) -> None:
    broadcast_id = open_broadcast(client, keys)
    delivery_id = add_delivery(db, broadcast_id, "email", "a@example.com", provider_message_id="sgX1")
    bounce = [
        {
            "event": "bounce",
            "delivery_id": str(delivery_id),
            "sg_message_id": "sgX1.filter0001-1",
            "reason": "550 no such user",
            "sg_event_id": "e1",
        }
    ]

    assert sendgrid_post(door, signer, bounce, sign=False).status_code == 403
    assert sendgrid_post(door, signer, bounce, tamper=True).status_code == 403
    stale = sendgrid_post(door, signer, bounce, timestamp=int(time.time()) - 11 * 60)
    assert stale.status_code == 403 and stale.json()["error"]["code"] == "signature_invalid"
    assert sendgrid_post(door, EventWebhookSigner(), bounce).status_code == 403  # someone else's key
    assert row(db, delivery_id) == ("sent", "sgX1")

    assert sendgrid_post(door, signer, bounce).status_code == 204
    assert row(db, delivery_id) == ("bounced", "sgX1")
    receipts = client.get(
        f"/v1/broadcasts/{broadcast_id}/receipts?state=bounced", headers=auth(keys["viewer"])
    ).json()["receipts"]
    assert [(r["delivery_id"], r["last_error_code"]) for r in receipts] == [(delivery_id, "bounce")]


def test_a_callback_redis_cannot_keep_is_applied_in_the_request(
    client: TestClient, keys: dict[str, str], db: Database, settings: Settings
) -> None:
    """Redis down: the inbox's write fails, and the request applies its report itself before the 2xx."""
    broadcast_id = open_broadcast(client, keys)
    delivery_id = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SMdown")
    nobody = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    cut_off = TestClient(create_app(nobody))  # no lifespan: no applier either, only the request
    path, params = f"/v1/webhooks/twilio?delivery_id={delivery_id}", twilio_params("SMdown")
    signature = RequestValidator(SECRET).compute_signature(PUBLIC_URL + path, params)
    answer = cut_off.post(path, content=urlencode(params), headers={**FORM, "X-Twilio-Signature": signature})
    assert answer.status_code == 204
    assert row(db, delivery_id) == ("delivered", "SMdown")
    assert cut_off.app.state.inbox_door.writes == 1  # type: ignore[attr-defined]  # it was tried first


def test_twilio_callbacks(client: TestClient, door: TestClient, keys: dict[str, str], db: Database) -> None:
    broadcast_id = open_broadcast(client, keys)
    delivery_id = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SM123")
    path = f"/v1/webhooks/twilio?delivery_id={delivery_id}"
    params = twilio_params("SM123")
    good = RequestValidator(SECRET).compute_signature(PUBLIC_URL + path, params)

    unsigned = door.post(path, content=urlencode(params), headers=FORM)
    assert unsigned.status_code == 403
    tampered = urlencode({**params, "MessageStatus": "failed"})
    assert door.post(path, content=tampered, headers={**FORM, "X-Twilio-Signature": good}).status_code == 403
    other_url = RequestValidator(SECRET).compute_signature(PUBLIC_URL + "/elsewhere", params)
    headers = {**FORM, "X-Twilio-Signature": other_url}
    assert door.post(path, content=urlencode(params), headers=headers).status_code == 403
    assert row(db, delivery_id) == ("sent", "SM123")

    accepted = door.post(path, content=urlencode(params), headers={**FORM, "X-Twilio-Signature": good})
    assert applied(door, accepted).status_code == 204
    assert row(db, delivery_id) == ("delivered", "SM123")


def test_forged_and_misdirected_reports_change_nothing_and_are_counted(
    client: TestClient, door: TestClient, keys: dict[str, str], db: Database, signer: EventWebhookSigner
) -> None:
    broadcast_id = open_broadcast(client, keys)
    email = add_delivery(db, broadcast_id, "email", "e@example.com", provider_message_id="sgSEND1")
    sms = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SMgenuine")
    pending = [
        add_delivery(db, broadcast_id, "email", f"p{i}@example.com", state="pending") for i in range(5)
    ]
    before, counted = snapshot(db, broadcast_id), ignored(door)

    # forged: signed with the old public constant, with some other secret, or not at all -> 403
    for token in (OLD_PUBLIC_TOKEN, secrets.token_urlsafe(32)):
        assert (
            twilio_post(door, sms, twilio_params("SMgenuine", "undelivered"), token=token).status_code == 403
        )
        assert twilio_post(door, email, twilio_params("SMx", "undelivered"), token=token).status_code == 403
    assert sendgrid_post(door, EventWebhookSigner(), [{"event": "delivered"}]).status_code == 403

    # validly signed, but about the wrong row -> 204 (the provider must not retry), ignored, counted
    assert (
        twilio_post(door, email, twilio_params("SMforged", "undelivered", ErrorCode="30003")).status_code
        == 204
    )
    assert twilio_post(door, sms, twilio_params("SMother", "undelivered")).status_code == 204
    assert twilio_post(door, 2**62, twilio_params("SMgenuine")).status_code == 204
    events = [
        {"event": "bounce", "delivery_id": str(sms), "sg_message_id": "SMgenuine.x", "reason": "no"},
        {"event": "delivered", "delivery_id": str(email), "sg_message_id": "sgOTHER.filter-1"},
        {"event": "delivered", "delivery_id": str(email)},  # no message id at all
        *({"event": "delivered", "delivery_id": str(p), "sg_message_id": "sgSEND1.f-2"} for p in pending),
    ]
    assert sendgrid_post(door, signer, events).status_code == 204

    assert snapshot(db, broadcast_id) == before
    assert delta(counted, ignored(door)) == {
        "twilio:wrong_channel": 1,
        "twilio:id_mismatch": 1,
        "twilio:unknown_delivery": 1,
        "sendgrid:wrong_channel": 1,
        "sendgrid:id_mismatch": 2,
        "sendgrid:not_sent": 5,
    }

    # and the genuine reports still move their rows
    assert twilio_post(door, sms, twilio_params("SMgenuine")).status_code == 204
    genuine = [{"event": "delivered", "delivery_id": str(email), "sg_message_id": "sgSEND1.filter-9"}]
    assert sendgrid_post(door, signer, genuine).status_code == 204
    assert row(db, sms) == ("delivered", "SMgenuine") and row(db, email) == ("delivered", "sgSEND1")


def test_a_report_that_beats_the_recording_is_applied_after_it_checked_the_same_way(
    client: TestClient, keys: dict[str, str], db: Database, settings: Settings
) -> None:
    """Twilio's `delivered` often arrives while the worker is still sending the batch: parked, then
    applied once the worker records the send, and only if the SID is the one it recorded."""
    broadcast_id = open_broadcast(client, keys)
    fast = add_delivery(db, broadcast_id, "sms", "+14155550101", state="sending")
    forged = add_delivery(db, broadcast_id, "sms", "+14155550102", state="sending")
    assert twilio_post(client, fast, twilio_params("SMfast")).status_code == 204
    assert twilio_post(client, forged, twilio_params("SMnot-the-one")).status_code == 204
    assert row(db, fast) == ("sending", None) and row(db, forged) == ("sending", None)

    # the worker records both sends (as record_outcomes does), then re-applies what was parked
    with db.session() as session:
        transition(session, [fast, forged], expect=DeliveryState.SENDING, to=DeliveryState.SENT, now=utcnow())
        set_details(
            session,
            [{"id": fast, "provider_message_id": "SMfast"}, {"id": forged, "provider_message_id": "SMreal"}],
        )
    counted = ignored(client)
    assert reapply_parked(db, settings, broadcast_id, [fast, forged]) == 1
    assert row(db, fast) == ("delivered", "SMfast")
    assert row(db, forged) == ("sent", "SMreal")
    assert delta(counted, ignored(client)) == {"twilio:id_mismatch": 1}
    assert reapply_parked(db, settings, broadcast_id, [fast, forged]) == 0  # applied once, then gone


@pytest.mark.parametrize("others", [0, 8], ids=["few-parked", "more-parked-than-asked"])
def test_reapplying_a_batch_takes_only_its_own_parked_reports(
    client: TestClient, keys: dict[str, str], db: Database, settings: Settings, others: int
) -> None:
    """However many reports wait parked for the broadcast's other rows (read whole when fewer than
    the batch's fields, field by field when more), a batch re-applies its own and leaves the rest."""
    broadcast_id = open_broadcast(client, keys)
    mine = add_delivery(db, broadcast_id, "sms", "+14155550201", state="sending")
    theirs = [
        add_delivery(db, broadcast_id, "sms", f"+141555503{i:02d}", state="sending") for i in range(others)
    ]
    for i, delivery in enumerate([mine, *theirs]):
        assert twilio_post(client, delivery, twilio_params(f"SM{i}")).status_code == 204
    with db.session() as session:
        transition(
            session, [mine, *theirs], expect=DeliveryState.SENDING, to=DeliveryState.SENT, now=utcnow()
        )
        set_details(
            session, [{"id": d, "provider_message_id": f"SM{i}"} for i, d in enumerate([mine, *theirs])]
        )
    assert reapply_parked(db, settings, broadcast_id, [mine]) == 1
    assert row(db, mine) == ("delivered", "SM0")
    assert all(row(db, d) == ("sent", f"SM{i + 1}") for i, d in enumerate(theirs))  # still parked
    assert reapply_parked(db, settings, broadcast_id, theirs) == others
    assert all(row(db, d) == ("delivered", f"SM{i + 1}") for i, d in enumerate(theirs))
