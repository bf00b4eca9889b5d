"""Atlassian Statuspage's public v2 API, same paths and shape, so the tools that already read
Statuspage (aggregators, Prometheus exporters, chat bots) read us unchanged. Served from the status
snapshot (dispatcher/engine/snapshot.py): no key, no database or Redis on the way (the snapshot is
in process; the per-client limit fails open), cacheable with 304s, and `Access-Control-Allow-Origin: *`
as Statuspage sends, so a browser on another site may poll it. README "Status page" maps our
states and impacts to theirs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from dispatcher.api.errors import error_body
from dispatcher.public.caching import cached_response, read_route, snapshot_to_serve
from dispatcher.public.status_limit import over_status_limit
from dispatcher.reads.status import Snapshot, SnapshotUnavailable

router = APIRouter(prefix="/api/v2", tags=["statuspage"])
MEDIA_TYPE = "application/json; charset=utf-8"
LIST_LIMIT = 50  # Statuspage lists the 50 most recent incidents and maintenances
CORS = {"Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff"}
UNRESOLVED = ("investigating", "identified", "monitoring")
Body = dict[str, Any]


def summary(b: Body) -> Body:
    return {
        "page": b["page"],
        "components": b["components"],
        "incidents": unresolved(b)["incidents"],
        "scheduled_maintenances": [
            m for m in b["scheduled_maintenances"] if m["status"] in ("scheduled", "in_progress", "verifying")
        ],
        "status": b["status"],
    }


def status(b: Body) -> Body:
    return {"page": b["page"], "status": b["status"]}


def components(b: Body) -> Body:
    return {"page": b["page"], "components": b["components"]}


def incidents(b: Body) -> Body:
    return {"page": b["page"], "incidents": b["incidents"][:LIST_LIMIT]}


def unresolved(b: Body) -> Body:
    return {"page": b["page"], "incidents": [i for i in b["incidents"] if i["status"] in UNRESOLVED]}


def maintenances(b: Body) -> Body:
    return {"page": b["page"], "scheduled_maintenances": b["scheduled_maintenances"][:LIST_LIMIT]}


def upcoming(b: Body) -> Body:
    found = [m for m in b["scheduled_maintenances"] if m["status"] == "scheduled"]
    return {
        "page": b["page"],
        "scheduled_maintenances": sorted(found, key=lambda m: m["scheduled_for"] or ""),
    }


def active(b: Body) -> Body:
    found = [m for m in b["scheduled_maintenances"] if m["status"] in ("in_progress", "verifying")]
    return {"page": b["page"], "scheduled_maintenances": found}


ENDPOINTS: dict[str, Callable[[Body], Body]] = {
    "/summary.json": summary,
    "/status.json": status,
    "/components.json": components,
    "/incidents.json": incidents,
    "/incidents/unresolved.json": unresolved,
    "/scheduled-maintenances.json": maintenances,
    "/scheduled-maintenances/upcoming.json": upcoming,
    "/scheduled-maintenances/active.json": active,
}

_rendered: dict[tuple[str, str], bytes] = {}  # (snapshot etag, path) -> bytes: render once per version


def render(snapshot: Snapshot, path: str) -> bytes:
    slot = (snapshot.etag, path)
    body = _rendered.get(slot)
    if body is None:
        if len(_rendered) > 4 * len(ENDPOINTS):
            _rendered.clear()
        body = _rendered[slot] = json.dumps(ENDPOINTS[path](snapshot.body), separators=(",", ":")).encode()
    return body


async def serve(request: Request, path: str) -> Response:
    retry_after = over_status_limit(request)
    if retry_after is not None:
        text = f"Too many requests from your address; try again in {retry_after} seconds."
        return JSONResponse(
            error_body("rate_limited", text), 429, headers={**CORS, "Retry-After": str(retry_after)}
        )
    try:
        snapshot = await snapshot_to_serve(request.app.state.settings)
    except SnapshotUnavailable:
        text = "The status is not available yet: the database is unreachable."
        return JSONResponse(error_body("unavailable", text), 503, headers={**CORS, "Retry-After": "5"})
    return cached_response(request, render(snapshot, path), MEDIA_TYPE, snapshot, headers=CORS)


def _route(path: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await serve(request, path)

    endpoint.__name__ = "statuspage_" + path.strip("/").replace("/", "_").replace(".json", "").replace(
        "-", "_"
    )
    endpoint.__doc__ = f"Statuspage v2 `{path}` from the status snapshot."
    read_route(router, path)(endpoint)


for _path in ENDPOINTS:
    _route(_path)
