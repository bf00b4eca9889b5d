"""Provider callbacks signed the way the providers sign them: valid accepted; tampered, unsigned
and stale refused with 403 and nothing changed."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from channels.clients import SANDBOX_TWILIO_AUTH_TOKEN
from channels.sandbox.signing import EventWebhookSigner
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery, utcnow
from tests.api.conftest import MESSAGE, PUBLIC_URL, auth


def sent_delivery(client: TestClient, keys: dict[str, str], db: Database, channel: str, address: str) -> int:
    """A delivery the provider has accepted (as a worker would leave it), waiting for its status."""
    broadcast = client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["commander"])).json()[
        "broadcast"
    ]
    with db.session() as session:
        row = Delivery(
            broadcast_id=broadcast["id"],
            tier=2,
            channel=channel,
            address=address,
            state="sent",
            sent_at=utcnow(),
        )
        session.add(row)
        session.flush()
        return row.id


def state_of(db: Database, delivery_id: int) -> str:
    with db.session() as session:
        return str(session.scalar(select(Delivery.state).where(Delivery.id == delivery_id)))


def sendgrid_post(
    client: TestClient,
    signer: EventWebhookSigner,
    events: list[dict],
    *,
    timestamp: int | None = None,
    tamper: bool = False,
    sign: bool = True,
):  # type: ignore[no-untyped-def]
    payload = json.dumps(events, separators=(",", ":")).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    headers = {"Content-Type": "application/json"}
    if sign:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = signer.sign(ts, payload)
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = ts
    if tamper:
        payload = payload.replace(b"bounce", b"delivered")
    return client.post("/v1/webhooks/sendgrid", content=payload, headers=headers)


def test_sendgrid_events(
    client: TestClient, keys: dict[str, str], db: Database, signer: EventWebhookSigner
) -> None:
    delivery_id = sent_delivery(client, keys, db, "email", "a@example.com")
    bounce = [
        {
            "event": "bounce",
            "delivery_id": str(delivery_id),
            "reason": "550 no such user",
            "sg_event_id": "e1",
        }
    ]

    assert sendgrid_post(client, signer, bounce, sign=False).status_code == 403
    assert sendgrid_post(client, signer, bounce, tamper=True).status_code == 403
    stale = sendgrid_post(client, signer, bounce, timestamp=int(time.time()) - 11 * 60)
    assert stale.status_code == 403 and stale.json()["error"]["code"] == "signature_invalid"
    assert sendgrid_post(client, EventWebhookSigner(), bounce).status_code == 403  # someone else's key
    assert state_of(db, delivery_id) == "sent"

    assert sendgrid_post(client, signer, bounce).status_code == 204
    assert state_of(db, delivery_id) == "bounced"
    receipts = client.get(
        f"/v1/broadcasts/{_broadcast_of(db, delivery_id)}/receipts?state=bounced",
        headers=auth(keys["viewer"]),
    ).json()["receipts"]
    assert [(r["delivery_id"], r["last_error_code"]) for r in receipts] == [(delivery_id, "bounce")]


def _broadcast_of(db: Database, delivery_id: int) -> int:
    with db.session() as session:
        return int(session.scalar(select(Delivery.broadcast_id).where(Delivery.id == delivery_id)) or 0)


def test_twilio_callbacks(client: TestClient, keys: dict[str, str], db: Database) -> None:
    delivery_id = sent_delivery(client, keys, db, "sms", "+14155550101")
    path = f"/v1/webhooks/twilio?delivery_id={delivery_id}"
    params = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+14155550101", "AccountSid": "AC1"}
    good = RequestValidator(SANDBOX_TWILIO_AUTH_TOKEN).compute_signature(PUBLIC_URL + path, params)
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    unsigned = client.post(path, content=urlencode(params), headers=form)
    assert unsigned.status_code == 403
    tampered = urlencode({**params, "MessageStatus": "failed"})
    assert (
        client.post(path, content=tampered, headers={**form, "X-Twilio-Signature": good}).status_code == 403
    )
    other_url = RequestValidator(SANDBOX_TWILIO_AUTH_TOKEN).compute_signature(
        PUBLIC_URL + "/elsewhere", params
    )
    assert (
        client.post(
            path, content=urlencode(params), headers={**form, "X-Twilio-Signature": other_url}
        ).status_code
        == 403
    )
    assert state_of(db, delivery_id) == "sent"

    accepted = client.post(path, content=urlencode(params), headers={**form, "X-Twilio-Signature": good})
    assert accepted.status_code == 204
    assert state_of(db, delivery_id) == "delivered"
