"""The fault gate every provider endpoint passes first: latency, hangs, rate limits, 429s, 5xx.

Each provider answers faults in its own error shape, so the SDKs raise what they raise in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from channels.sandbox.state import SandboxState


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _sendgrid_error(status: int, message: str) -> Any:
    return {"errors": [{"field": None, "message": message, "help": None}]}


def _twilio_error(status: int, message: str) -> Any:
    code = 20429 if status == 429 else 20500
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _slack_error(status: int, message: str) -> Any:
    return {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}


def _x_error(status: int, message: str) -> Any:
    title = "Too Many Requests" if status == 429 else "Service Unavailable"
    return {"title": title, "detail": message, "type": "about:blank", "status": status}


def _webhook_error(status: int, message: str) -> Any:
    return {"error": message}


ERROR_SHAPES: dict[str, Callable[[int, str], Any]] = {
    "sendgrid": _sendgrid_error,
    "twilio": _twilio_error,
    "slack": _slack_error,
    "x": _x_error,
    "webhook": _webhook_error,
}


def rate_limited(provider: str, retry_after_s: float) -> Response:
    """429 with Retry-After (whole seconds, rounded up as HTTP requires) and the provider's own
    reset header where it has one (SendGrid X-RateLimit-Reset, X x-rate-limit-reset: epoch s)."""
    seconds = max(1, math.ceil(retry_after_s))
    headers = {"Retry-After": str(seconds)}
    if provider in ("sendgrid", "x"):
        reset = str(int(time.time()) + seconds)
        prefix = "X-RateLimit" if provider == "sendgrid" else "x-rate-limit"
        headers.update({f"{prefix}-Limit": "0", f"{prefix}-Remaining": "0", f"{prefix}-Reset": reset})
    return json_response(429, ERROR_SHAPES[provider](429, "too many requests"), headers)


async def gate(
    state: SandboxState, provider: str, stopping: asyncio.Event, limit_key: str = ""
) -> Response | None:
    """A fault response for this request, or None to handle it normally."""
    config = state.faults[provider]
    if config.latency_ms > 0:
        await asyncio.sleep(config.latency_ms / 1000)
    if config.timeout_rate > 0 and state.draw(provider) < config.timeout_rate:
        # Hang past the client's timeout; the client gives up and closes. Cut short on shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=config.hang_s)
        state.count_result(provider, accepted=False, fault=True)
        return json_response(504, ERROR_SHAPES[provider](504, "gateway timeout"))
    if config.rate_limit_per_s is not None:
        wait = state.over_limit(provider, limit_key, config.rate_limit_per_s)
        if wait is not None:
            state.count_result(provider, accepted=False, fault=True)
            return rate_limited(provider, wait)
    if config.rate_429 > 0 and state.draw(provider) < config.rate_429:
        state.count_result(provider, accepted=False, fault=True)
        return rate_limited(provider, config.retry_after_s)
    if config.error_rate > 0 and state.draw(provider) < config.error_rate:
        state.count_result(provider, accepted=False, fault=True)
        status = config.error_status
        return json_response(status, ERROR_SHAPES[provider](status, "injected server error"))
    return None
