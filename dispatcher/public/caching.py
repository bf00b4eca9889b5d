"""HTTP caching for everything served from the status snapshot (the page, the feeds, the JSON):
an ETag of the bytes, Last-Modified of the snapshot, `Cache-Control: public, max-age=…`, and 304
for a conditional request that already holds them. Caches and pollers then cost us nothing, and
the snapshot's age travels in `X-Status-Snapshot-Age` (with `X-Status-Snapshot-Stale: true` while
the database is unreachable)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

from config import Settings
from dispatcher.reads.status import Snapshot, current_snapshot, held_snapshot


def read_route(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Registers a snapshot route for GET and for HEAD (how monitors poll cheaply). Two routes, not
    one with two methods: the OpenAPI schema lists the GET alone, with an operation id of its own."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        router.add_api_route(path, endpoint, methods=["HEAD"], **{**options, "include_in_schema": False})
        return endpoint

    return register


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
# The paths served from the snapshot: the access log keeps only their failures (dispatcher/app.py)
SNAPSHOT_PATHS = ("/status", "/history.", "/api/v2/")


async def snapshot_to_serve(settings: Settings) -> Snapshot:
    """The snapshot for an async route: this process's copy at once, and only when it holds none a
    thread reads the database, so the event loop never waits on it. Raises SnapshotUnavailable."""
    held = held_snapshot(settings)
    return held if held is not None else await asyncio.to_thread(current_snapshot, settings)


@lru_cache(maxsize=256)
def etag_of(body: bytes) -> str:
    """Cached: the bodies are the renderers' cached bytes (the same objects until the snapshot
    changes), whose hash Python keeps, so a hit costs no hashing of the body."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _not_modified(request: Request, etag: str, snapshot: Snapshot) -> bool:
    """If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)."""
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = {t.strip().removeprefix("W/") for t in match.split(",")}
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    if since:
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        if when.tzinfo is None:
            return False
        return snapshot.generated_at.replace(microsecond=0) <= when
    return False


def cached_response(
    request: Request,
    body: bytes,
    media_type: str,
    snapshot: Snapshot,
    max_age_s: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """`body` as a cacheable response, or a 304 when the client's copy is current. `max_age_s`
    defaults to DISPATCHER_STATUS_MAX_AGE_S."""
    etag = etag_of(body)
    if max_age_s is None:
        max_age_s = request.app.state.settings.status_max_age_s
    common = {
        **(headers or {}),
        "ETag": etag,
        "Last-Modified": format_datetime(snapshot.generated_at, usegmt=True),
        "Cache-Control": f"public, max-age={max_age_s}",
        "X-Status-Snapshot-Age": str(snapshot.age_s()),
    }
    if snapshot.stale:
        common["X-Status-Snapshot-Stale"] = "true"
    if _not_modified(request, etag, snapshot):
        return Response(status_code=304, headers=common)
    return Response(body, media_type=media_type, headers=common)
