"""Provider status callbacks, accepted only with the provider's own signature (no API key).

SendGrid signs `timestamp + raw body` with ECDSA P-256; Twilio HMAC-SHA1s the full URL it called plus
the sorted POST parameters. Anything unsigned, tampered or (SendGrid) older than ten minutes is 403.

Whose signature: a live provider's (its auth token, its Event Webhook key); a provider in sandbox
mode only the sandbox's per-run secret (DISPATCHER_SANDBOX_SECRET, made by `up`), never a constant.
A signed report is then checked against the delivery it names (dispatcher/engine/status_reports.py).
"""

from __future__ import annotations

import binascii
import json
import time
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator

from channels.email.adapter import event_reports
from channels.sandbox.secret import event_webhook_public_key
from channels.sms.adapter import status_callback_report
from config import Settings
from dispatcher.api.deps import get_db, get_settings
from dispatcher.api.schemas import ERRORS
from dispatcher.domain.errors import MalformedJson, SignatureInvalid, ValidationFailed
from dispatcher.engine.status_reports import apply_reports
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=ERRORS)

MAX_AGE_S = 600
SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SANDBOX_SECRET = "DISPATCHER_SANDBOX_SECRET"


def sendgrid_key(settings: Settings) -> str:
    """The Event Webhook verification key: the live account's, else the sandbox's (from its secret)."""
    if settings.sendgrid_api_key is not None:
        if settings.sendgrid_webhook_public_key is None:
            raise SignatureInvalid(
                "no SendGrid verification key configured (DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY)",
                fields=[SG_SIGNATURE],
            )
        return settings.sendgrid_webhook_public_key.get_secret_value()
    if settings.sandbox_secret is None:
        raise SignatureInvalid(f"SendGrid is sandboxed and {SANDBOX_SECRET} is unset", fields=[SG_SIGNATURE])
    return event_webhook_public_key(settings.sandbox_secret.get_secret_value())


def verify_sendgrid(settings: Settings, body: bytes, signature: str | None, timestamp: str | None) -> None:
    if not signature or not timestamp:
        raise SignatureInvalid("missing SendGrid signature headers", fields=[SG_SIGNATURE])
    public_key = sendgrid_key(settings)
    try:
        age = time.time() - int(timestamp)
    except ValueError:
        raise SignatureInvalid("the signature timestamp is not a Unix time", fields=[SG_TIMESTAMP]) from None
    if abs(age) > MAX_AGE_S:
        raise SignatureInvalid("the signature timestamp is stale", fields=[SG_TIMESTAMP])
    verifier = EventWebhook()
    try:
        key = verifier.convert_public_key_to_ecdsa(public_key)
        ok = verifier.verify_signature(body.decode("utf-8"), signature, timestamp, key)
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        ok = False
    if not ok:
        raise SignatureInvalid("the SendGrid signature does not match the body", fields=[SG_SIGNATURE])


def twilio_token(settings: Settings) -> str:
    """The live account's auth token, else the sandbox's secret (its account's token)."""
    if settings.twilio_account_sid is not None and settings.twilio_auth_token is not None:
        return settings.twilio_auth_token.get_secret_value()
    if settings.sandbox_secret is None:
        raise SignatureInvalid(
            f"Twilio is sandboxed and {SANDBOX_SECRET} is unset", fields=["X-Twilio-Signature"]
        )
    return settings.sandbox_secret.get_secret_value()


def twilio_url(settings: Settings, request: Request) -> str:
    """The URL Twilio called as it saw it: our public URL (we may be behind a proxy) + path + query."""
    query = request.url.query
    return settings.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


async def verified_twilio_form(request: Request, settings: Settings) -> dict[str, str]:
    """A Twilio request's form fields, once its X-Twilio-Signature matches them (status callbacks
    and inbound messages alike); a body that is not UTF-8 cannot match and is refused the same way."""
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
    return params


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
    reports = event_reports(events)
    if reports:
        await anyio.to_thread.run_sync(apply_reports, database, settings, reports)
    return Response(status_code=204)


@router.post("/twilio", status_code=204, summary="Twilio status callback (X-Twilio-Signature)")
async def twilio_status(
    request: Request,
    delivery_id: str | None = None,
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> Response:
    params = await verified_twilio_form(request, settings)
    report = status_callback_report(delivery_id, params)
    if report is not None:
        await anyio.to_thread.run_sync(apply_reports, database, settings, [report])
    return Response(status_code=204)
