"""Provider status callbacks, accepted only with the provider's own signature (no API key).

This module only routes: it reads the request, hands it to the provider's own check (which key,
which headers, how old a signature may be: channels/email/webhook.py for SendGrid's ECDSA,
channels/sms/webhook.py for Twilio's HMAC), answers 403 `signature_invalid` when it fails, and
hands what the provider's parser makes of the body to the inbox (dispatcher/engine/inbox.py): kept
in Redis before the 2xx, applied in bulk behind the request, and checked there against the delivery
it names (dispatcher/engine/status_reports.py). Without Redis the reports are applied in the request;
with neither, the answer is 503 and the provider sends them again (Twilio retries a failed
callback, SendGrid for 24 hours), never a 500 that loses them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import anyio.to_thread
import redis
from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.exc import SQLAlchemyError

from channels.base import SignatureMismatch, StatusReport
from channels.email import webhook as sendgrid_webhook
from channels.email.adapter import event_reports
from channels.sms import webhook as twilio_webhook
from channels.sms.adapter import status_callback_report
from config import Settings
from dispatcher.api.deps import get_db, get_settings
from dispatcher.api.group_commit import GroupCommit
from dispatcher.api.precedence import after_commanders
from dispatcher.api.schemas import ERRORS
from dispatcher.domain.errors import MalformedJson, SignatureInvalid, Unavailable, ValidationFailed
from dispatcher.engine import inbox
from dispatcher.engine.status_reports import apply_reports
from dispatcher.store.db import Database

log = logging.getLogger(__name__)

# A broadcast brings two callbacks per SMS and an event batch per few emails: their successes are
# counted in /metrics, not logged one by one (dispatcher/app.py's AccessLog).
QUIET_PATHS = ("/v1/webhooks/sendgrid", "/v1/webhooks/twilio")

# every provider callback waits while a commander's request is in flight (api/precedence.py)
router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], responses=ERRORS, dependencies=[Depends(after_commanders)]
)


@contextmanager
def provider_signature() -> Iterator[None]:
    """Around a provider's signature check: its refusal becomes the API's 403, naming the header."""
    try:
        yield
    except SignatureMismatch as exc:
        raise SignatureInvalid(str(exc), fields=[exc.header]) from exc


async def verified_twilio_form(request: Request, settings: Settings) -> dict[str, str]:
    """A Twilio request's form fields, once its X-Twilio-Signature matches them (status callbacks
    and inbound messages alike)."""
    body = await request.body()
    with provider_signature():
        return twilio_webhook.verified_form(
            settings, request.url.path, request.url.query, body, request.headers
        )


@router.post("/sendgrid", status_code=204, summary="SendGrid Event Webhook (ECDSA-signed)")
async def sendgrid_events(
    request: Request, settings: Settings = Depends(get_settings), database: Database = Depends(get_db)
) -> Response:
    body = await request.body()
    with provider_signature():
        sendgrid_webhook.verify_events(settings, body, request.headers)
    try:
        events = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise ValidationFailed("SendGrid events must be a JSON array of objects")
    reports = event_reports(events)
    if reports:
        await keep(request, database, settings, reports)
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
        await keep(request, database, settings, [report])
    return Response(status_code=204)


def inbox_door(settings: Settings) -> GroupCommit[StatusReport] | None:
    """The app's one writer to the inbox (None without Redis): the callbacks in flight together
    share an XADD (api/group_commit.py), awaited on the event loop."""
    if not settings.redis_url:
        return None
    return GroupCommit(lambda reports: inbox.accept_async(settings, reports))


async def keep(request: Request, database: Database, settings: Settings, reports: list[StatusReport]) -> None:
    """The inbox first; the database itself when Redis cannot take them; else `Unavailable` (503)."""
    door: GroupCommit[StatusReport] | None = request.app.state.inbox_door
    if door is not None:
        try:
            await door.put(reports)
            return
        except redis.RedisError:
            log.warning("inbox unreachable: applying %d status reports in the request", len(reports))
    await anyio.to_thread.run_sync(apply_in_request, database, settings, reports)


def apply_in_request(database: Database, settings: Settings, reports: list[StatusReport]) -> None:
    try:
        apply_reports(database, settings, reports)
    except SQLAlchemyError as exc:
        raise Unavailable(
            "neither Redis nor the database can take status reports now; send them again"
        ) from exc
