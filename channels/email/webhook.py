"""SendGrid's Event Webhook signature: which key checks it and how, so the API only routes to it.

SendGrid signs `timestamp + raw body` with ECDSA P-256 and sends the signature and the timestamp in
two headers. A signature older (or newer) than ten minutes is refused, so a captured request cannot
be replayed later. The key is the live account's Event Webhook verification key; a sandboxed
SendGrid's is derived from the sandbox's per-run secret, never a constant.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Mapping

from sendgrid.helpers.eventwebhook import EventWebhook

from channels.base import SignatureMismatch
from channels.clients import header
from channels.sandbox.secret import SECRET_ENV, event_webhook_public_key
from config.settings import Settings

MAX_AGE_S = 600
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


def verification_key(settings: Settings) -> str:
    """The Event Webhook verification key: the live account's, else the sandbox's (from its secret)."""
    if settings.sendgrid_api_key is not None:
        if settings.sendgrid_webhook_public_key is None:
            raise SignatureMismatch(
                "no SendGrid verification key configured (DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY)",
                SIGNATURE_HEADER,
            )
        return settings.sendgrid_webhook_public_key.get_secret_value()
    if settings.sandbox_secret is None:
        raise SignatureMismatch(f"SendGrid is sandboxed and {SECRET_ENV} is unset", SIGNATURE_HEADER)
    return event_webhook_public_key(settings.sandbox_secret.get_secret_value())


def verify_events(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None = None
) -> None:
    """Returns when the body is SendGrid's, signed within MAX_AGE_S; raises SignatureMismatch
    naming the header at fault otherwise. A body that is not UTF-8 cannot match."""
    signature = header(headers, SIGNATURE_HEADER)
    timestamp = header(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise SignatureMismatch("missing SendGrid signature headers", SIGNATURE_HEADER)
    public_key = verification_key(settings)
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        raise SignatureMismatch("the signature timestamp is not a Unix time", TIMESTAMP_HEADER) from None
    if abs(age) > MAX_AGE_S:
        raise SignatureMismatch("the signature timestamp is stale", TIMESTAMP_HEADER)
    verifier = EventWebhook()
    try:
        key = verifier.convert_public_key_to_ecdsa(public_key)
        ok = verifier.verify_signature(body.decode("utf-8"), signature, timestamp, key)
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        ok = False
    if not ok:
        raise SignatureMismatch("the SendGrid signature does not match the body", SIGNATURE_HEADER)
