"""Provider status callbacks, accepted only with the provider's own signature (no API key).

SendGrid signs `timestamp + raw body` with ECDSA P-256; Twilio HMAC-SHA1s the full URL it called plus
the sorted POST parameters. Anything unsigned, tampered or (SendGrid) older than ten minutes is 403.
"""

from __future__ import annotations

import binascii
import json
import time
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from channels.clients import SANDBOX_TWILIO_AUTH_TOKEN
from config import Settings
from dispatcher import suppressions
from dispatcher.api.deps import get_db, get_settings
from dispatcher.api.schemas import ERRORS
from dispatcher.errors import MalformedJson, SignatureInvalid, ValidationFailed
from dispatcher.fanout import Outbox
from dispatcher.provider_status import after_status, apply_sendgrid, apply_twilio
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERRORS)

MAX_AGE_S = 600
MAX_ID = 2**63 - 1
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def verify_sendgrid(settings: Settings, body: bytes, signature: str | None, timestamp: str | None) -> None:
    if not signature or not timestamp:
        raise SignatureInvalid("missing SendGrid signature headers", fields=[SG_SIGNATURE])
    if settings.sendgrid_webhook_public_key is None:
        raise SignatureInvalid(
            "no SendGrid verification key configured (DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY)",
            fields=[SG_SIGNATURE],
        )
    try:
        age = time.time() - int(timestamp)
    except ValueError:
        raise SignatureInvalid("the signature timestamp is not a Unix time", fields=[SG_TIMESTAMP]) from None
    if abs(age) > MAX_AGE_S:
        raise SignatureInvalid("the signature timestamp is stale", fields=[SG_TIMESTAMP])
    verifier = EventWebhook()
    try:
        key = verifier.convert_public_key_to_ecdsa(settings.sendgrid_webhook_public_key.get_secret_value())
        ok = verifier.verify_signature(body.decode("utf-8"), signature, timestamp, key)
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        ok = False
    if not ok:
        raise SignatureInvalid("the SendGrid signature does not match the body", fields=[SG_SIGNATURE])


def twilio_token(settings: Settings) -> str:
    """The real account's token when Twilio is live, else the one the sandbox signs with."""
    if settings.twilio_account_sid is not None and settings.twilio_auth_token is not None:
        return settings.twilio_auth_token.get_secret_value()
    return SANDBOX_TWILIO_AUTH_TOKEN


def twilio_url(settings: Settings, request: Request) -> str:
    """The URL Twilio called as it saw it: our public URL (we may be behind a proxy) + path + query."""
    query = request.url.query
    return settings.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


@router.post("/sendgrid", status_code=204, summary="SendGrid Event Webhook (ECDSA-signed)")
async def sendgrid_events(
    request: Request, settings: Settings = Depends(get_settings), database: Database = Depends(get_db)
) -> Response:
    body = await request.body()
    verify_sendgrid(settings, body, request.headers.get(SG_SIGNATURE), request.headers.get(SG_TIMESTAMP))
    try:
        events = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValidationFailed("SendGrid events must be a JSON array of objects")
    await anyio.to_thread.run_sync(_apply_sendgrid, database, settings, events)
    return Response(status_code=204)


def _ids(values: list[Any]) -> list[int]:
    """Delivery ids we could have sent: anything else is ignored rather than queried."""
    return [int(v) for v in values if str(v).isdigit() and int(v) <= MAX_ID]


def _apply_sendgrid(database: Database, settings: Settings, events: list[dict[str, Any]]) -> None:
    outbox = Outbox()
    events = [e for e in events if _ids([e.get("delivery_id")])]
    with database.session() as session:
        suppressions.from_sendgrid(session, events)  # hard bounces, spam reports, drops: never again
        if events and apply_sendgrid(session, events):
            after_status(session, settings, _ids([e.get("delivery_id") for e in events]), outbox)
    outbox.flush()


@router.post("/twilio", status_code=204, summary="Twilio status callback (X-Twilio-Signature)")
async def twilio_status(
    request: Request,
    delivery_id: str | None = None,
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> Response:
    body = await request.body()
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        raise SignatureInvalid("missing X-Twilio-Signature", fields=["X-Twilio-Signature"])
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        params = None
    validator = RequestValidator(twilio_token(settings))
    if params is None or not validator.validate(twilio_url(settings, request), params, signature):
        raise SignatureInvalid("the Twilio signature does not match", fields=["X-Twilio-Signature"])
    await anyio.to_thread.run_sync(_apply_twilio, database, settings, delivery_id, params)
    return Response(status_code=204)


def _apply_twilio(
    database: Database, settings: Settings, delivery_id: str | None, params: dict[str, str]
) -> None:
    outbox = Outbox()
    if not _ids([delivery_id]):
        return
    with database.session() as session:
        suppressions.from_twilio_status(session, int(str(delivery_id)), params)  # 21211 / 21610
        if apply_twilio(session, delivery_id, params):
            after_status(session, settings, _ids([delivery_id]), outbox)
    outbox.flush()
