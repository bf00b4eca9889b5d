"""A broadcast's page (counts, gates, chart, receipts), its live stream, and one delivery's story
with the admin's audited reveal of the address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from channels.base import ChannelName
from dispatcher.api.deps import database_of, progress_hub_of, settings_of
from dispatcher.api.progress_hub import read_progress
from dispatcher.api.progress_stream import SSE_HEADERS, progress_ticks, sse
from dispatcher.auth import Role, key_active
from dispatcher.dashboard import access
from dispatcher.dashboard import session as sessions
from dispatcher.dashboard.charts import chart_svg, legend
from dispatcher.dashboard.rendering import page, problem, render
from dispatcher.domain.errors import NotFound, ValidationFailed
from dispatcher.domain.states import DeliveryState
from dispatcher.public.pages import client_address
from dispatcher.reads.broadcasts import accepted_over_time
from dispatcher.reads.receipts import receipts
from dispatcher.reads.story import delivery_story
from dispatcher.store.audit import record_audit
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery

router = APIRouter()
STATES = tuple(s.value for s in DeliveryState)
CHANNELS = tuple(c.value for c in ChannelName)
PAGE_SIZE = 50
CHART_EVERY_S = 2.0


def receipt_filters(
    state: str | None, channel: str | None, tier: str | None, q: str | None
) -> dict[str, Any]:
    """The receipts table's filters as the URL gives them (empty = any); a ValidationFailed names
    the parameter at fault."""
    if state and state not in STATES:
        raise ValidationFailed(f"state: one of {', '.join(STATES)}", fields=["state"])
    if channel and channel not in CHANNELS:
        raise ValidationFailed(f"channel: one of {', '.join(CHANNELS)}", fields=["channel"])
    if tier and (not tier.isdigit() or int(tier) > 1000):
        raise ValidationFailed("tier: a whole number from 0 to 1000", fields=["tier"])
    if q and len(q) > 200:
        raise ValidationFailed("q: at most 200 characters", fields=["q"])
    return {
        "state": state or None,
        "channel": ChannelName(channel) if channel else None,
        "tier": int(tier) if tier else None,
        "q": (q or "").strip() or None,
    }


def read_over_time(database: Database, broadcast_id: int) -> dict[str, Any]:
    with database.session() as db:
        return accepted_over_time(db, broadcast_id)


def live_context(
    database: Database, broadcast_id: int, progress: dict[str, Any], over_time: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the live part of the page shows: the progress, and the chart of accepted deliveries
    (read now unless the caller has a recent one)."""
    over_time = over_time if over_time is not None else read_over_time(database, broadcast_id)
    return {
        "progress": progress,
        "over_time": over_time,
        "chart": chart_svg(over_time),
        "legend": legend(over_time),
        "states": STATES,
    }


@router.get("/broadcasts/{broadcast_id}")
def broadcast_page(
    request: Request,
    broadcast_id: int,
    state: str | None = None,
    channel: str | None = None,
    tier: str | None = None,
    q: str | None = None,
    cursor: str | None = None,
    retried: str | None = None,
) -> Response:
    dash = access.signed_in(request)
    if isinstance(dash, Response):
        return dash
    settings, database = settings_of(request), database_of(request)
    try:
        filters = receipt_filters(state, channel, tier, q)
        first = read_progress(database, broadcast_id)
        with database.session() as db:
            found = receipts(db, broadcast_id, cursor=cursor or None, limit=PAGE_SIZE, mask=True, **filters)
    except NotFound:
        return problem(settings, dash, 404, "Not found", f"There is no broadcast {broadcast_id}.")
    except ValidationFailed as exc:
        return problem(settings, dash, 422, "Not a valid filter", exc.message)
    shown = {k: ("" if v is None else str(v)) for k, v in filters.items()}
    return page(
        settings,
        "broadcast.html.j2",
        f"Broadcast #{broadcast_id}",
        dash,
        broadcast_id=broadcast_id,
        receipts=found["receipts"],
        next_query=_query({**shown, "cursor": found["next_cursor"]}) if found["next_cursor"] else None,
        this_query=_query({**shown, "cursor": cursor}),
        filters=shown,
        channels=CHANNELS,
        tiers=[t["tier"] for t in first["tiers"]],
        retried=int(retried) if retried and retried.isdigit() else None,  # after a commander's retry
        **live_context(database, broadcast_id, first),
    )


def _query(values: dict[str, str | None]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in values.items() if v})


@router.get("/broadcasts/{broadcast_id}/events")
async def broadcast_events(request: Request, broadcast_id: int) -> Response:
    """The live part of the broadcast page, re-rendered whenever the progress changes (SSE), until
    it is completed; the session and its key are re-checked once per heartbeat."""
    dash = await anyio.to_thread.run_sync(access.current, request)
    if dash is None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    settings, database = settings_of(request), database_of(request)
    try:
        first = await asyncio.to_thread(read_progress, database, broadcast_id)
    except NotFound:
        return Response("no such broadcast", status_code=404, media_type="text/plain")

    def allowed() -> bool:
        with database.session() as db:
            return sessions.still_valid(settings, dash.token) and key_active(db, dash.key_id)

    async def events() -> AsyncIterator[str]:
        yield "retry: 5000\n\n"
        over_time: dict[str, Any] | None = None
        charted = 0.0
        ticks = progress_ticks(
            progress_hub_of(request),
            broadcast_id,
            first,
            still_allowed=allowed,
            disconnected=request.is_disconnected,
            heartbeat_s=settings.sse_heartbeat_s,
        )
        async with aclosing(ticks):  # however the stream ends, it leaves the progress hub then
            async for tick in ticks:
                if tick.kind == "heartbeat":
                    yield ": heartbeat\n\n"
                elif tick.kind == "revoked":
                    yield sse("signed-out", "Your session ended: sign in again.")
                else:
                    assert tick.progress is not None
                    # The counts follow every change; the chart (a scan of the accepted rows) at most
                    # every CHART_EVERY_S, and once more at the end.
                    if tick.kind == "completed" or time.monotonic() - charted >= CHART_EVERY_S:
                        over_time = await asyncio.to_thread(read_over_time, database, broadcast_id)
                        charted = time.monotonic()
                    context = live_context(database, broadcast_id, tick.progress, over_time)
                    yield sse(tick.kind, render("_live.html.j2", broadcast_id=broadcast_id, **context))

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


# ---- one delivery's story ----------------------------------------------------------------------


def _story_page(
    request: Request, dash: sessions.DashSession, delivery_id: int, *, reveal: bool, resent: bool = False
) -> Response:
    settings = settings_of(request)
    try:
        with database_of(request).session() as db:
            story = delivery_story(db, settings, delivery_id, mask=not reveal)
            broadcast_id = db.scalar(select(Delivery.broadcast_id).where(Delivery.id == delivery_id))
            if reveal:
                record_audit(
                    db,
                    actor=dash.prefix,
                    role=dash.role.value,
                    action="delivery.reveal_address",
                    target=f"delivery {delivery_id}",  # as the API names it (api/auditing.py)
                    status=200,
                    client=client_address(request, settings.trusted_proxy_hops),
                    request_id=getattr(request.state, "request_id", None),
                    key_id=dash.key_id,
                )
    except NotFound:
        return problem(settings, dash, 404, "Not found", f"There is no delivery {delivery_id}.")
    return page(
        settings,
        "delivery.html.j2",
        f"Delivery #{delivery_id}",
        dash,
        story=story,
        revealed=reveal,
        broadcast_id=broadcast_id,
        resent=resent,
    )


@router.get("/deliveries/{delivery_id}")
def delivery(request: Request, delivery_id: int, resent: str | None = None) -> Response:
    dash = access.signed_in(request)
    if isinstance(dash, Response):
        return dash
    return _story_page(request, dash, delivery_id, reveal=False, resent=resent == "1")


@router.post("/deliveries/{delivery_id}/reveal")
async def reveal(request: Request, delivery_id: int) -> Response:
    """An admin sees the address unmasked, once, and the audit log says who did."""
    dash = await anyio.to_thread.run_sync(lambda: access.signed_in(request, need=Role.ADMIN))
    if isinstance(dash, Response):
        return dash
    if not sessions.csrf_ok(dash, (await access.form(request)).get("csrf_token")):
        return access.csrf_refused(request, dash)
    return await anyio.to_thread.run_sync(lambda: _story_page(request, dash, delivery_id, reveal=True))
