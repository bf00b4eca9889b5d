"""ASGI middleware: a hard cap on request bodies and on JSON nesting, and one structured log line
per request."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.api.errors import error_body

access = logging.getLogger("dispatcher.access")

MAX_JSON_DEPTH = 32  # no request of ours nests deeper than 6; Python's parsers recurse, and overflow
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_INNERMOST = re.compile(rb"[\[{][\]}]")
_FORMS = (b"multipart/", b"application/x-www-form-urlencoded", b"text/csv", b"application/csv")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON body nests deeper than `limit`, without parsing it (a parser would recurse):
    strings are dropped, then the innermost bracket pairs are removed once per level, in C."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    for _ in range(limit):
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not brackets:
            return False
        if not removed:  # unbalanced: malformed anyway; only a long run of openers would recurse deep
            return len(brackets) > limit
    return True


class BodyLimit:
    """413 when Content-Length says too much, or when the streamed body turns out bigger than it
    said (or than the limit, for chunked bodies). Buffers at most `max_bytes` before the app runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = True
            if too_big:
                await self._reject_too_large(send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject_too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").lower()
        if not content_type.startswith(_FORMS) and body.lstrip()[:1] in (b"[", b"{"):
            # ~0.1 s per MB: a big body is checked off the event loop
            deep = await asyncio.to_thread(json_too_deep, body) if size > 65536 else json_too_deep(body)
            if deep:
                reason = f"the body's JSON nests deeper than {MAX_JSON_DEPTH} levels"
                await self._reject(send, 400, "malformed_json", reason)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject_too_large(self, send: Send) -> None:
        message = f"request body is over the limit of {self.max_bytes} bytes"
        await self._reject(send, 413, "body_too_large", message)

    async def _reject(self, send: Send, status: int, code: str, message: str) -> None:
        payload = json.dumps(error_body(code, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


REQUEST_ID = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's `X-Request-Id` when it is a plain token (a proxy's, to follow one request
    across services), else a new one: never arbitrary text, since it goes into logs and the audit log."""
    for name, value in headers:
        if name.lower() == REQUEST_ID:
            given = value.decode("latin-1")
            if _SAFE_REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


class AccessLog:
    """method, path, status, duration_ms, the API key's id and the request id; never key characters,
    headers or bodies. Gives every request its id (`request.state.request_id`, the `X-Request-Id`
    response header) before anything else sees it. Requests to `quiet_paths` (prefixes) are logged
    only when they fail (status 400 and up); every request is still counted in the metrics."""

    def __init__(self, app: ASGIApp, quiet_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        scope.setdefault("state", {})
        request_id = scope["state"]["request_id"] = request_id_of(scope["headers"])

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (REQUEST_ID, request_id.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            duration = round((time.perf_counter() - start) * 1000, 2)
            if status >= 400 or not scope["path"].startswith(self.quiet_paths):
                extra: dict[str, Any] = {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration,
                    "api_key": scope["state"].get("api_key"),
                    "request_id": request_id,
                }
                access.info("%s %s %s %.1fms", scope["method"], scope["path"], status, duration, extra=extra)
            from dispatcher.api.metrics import observe_request

            observe_request(scope, status, duration / 1000)
