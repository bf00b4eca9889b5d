"""Inbound SMS as Twilio sends them: a form POST signed with X-Twilio-Signature, so tests and
`up` exercise the service's real inbound path (STOP, START, HELP, YES) without a phone."""

from __future__ import annotations

from typing import Any

import httpx

from channels.sandbox.secret import SANDBOX_TWILIO_ACCOUNT_SID
from channels.sandbox.signing import twilio_signature

DEFAULT_TO = "+15005550006"


def inbound_params(sender: str, body: str, to: str = DEFAULT_TO) -> dict[str, str]:
    return {
        "AccountSid": SANDBOX_TWILIO_ACCOUNT_SID,
        "MessageSid": "SM" + "0" * 32,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
    }


async def send_inbound(url: str, sender: str, body: str, secret: str, to: str = DEFAULT_TO) -> dict[str, Any]:
    """POSTs one inbound message to `url`, signed with the sandbox account's auth token (its per-run
    secret); returns the answer's status and body (TwiML)."""
    params = inbound_params(sender, body, to)
    headers = {"X-Twilio-Signature": twilio_signature(secret, url, params)}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(url, data=params, headers=headers)
    return {"status": response.status_code, "body": response.text}
