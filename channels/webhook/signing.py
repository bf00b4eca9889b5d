"""Signatures on the outgoing webhook channel, and the check a receiver runs.

`X-Dispatcher-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>` with the timestamp in
`X-Dispatcher-Timestamp` (Unix seconds). Signing the timestamp with the body lets a receiver reject
replays: a captured request is worthless once it is older than the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "v1"


def sign_webhook(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """The `X-Dispatcher-Signature` value for this timestamp and exact body."""
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    message = str(timestamp).encode("ascii") + b"." + raw
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def verify_webhook_signature(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    signature: str,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """True if `signature` (the header value; several `v1=` values separated by commas are accepted,
    for secret rotation) signs this exact body and the timestamp is within `tolerance_s` of now.

    Pass the body exactly as received (bytes), before any JSON parsing.
    """
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    expected = sign_webhook(secret, sent, body)
    candidates = [part.strip() for part in signature.split(",") if part.strip()]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
