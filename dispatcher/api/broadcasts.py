"""Broadcast progress, per-recipient receipts, and the same progress as a live SSE stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from channels.base import ChannelName
from config import Settings
from dispatcher.api.deps import READ, Caller, get_db, get_progress_hub, get_settings
from dispatcher.api.errors import error_body
from dispatcher.api.precedence import commander_first
from dispatcher.api.progress_hub import ProgressHub, read_progress
from dispatcher.api.progress_stream import SSE_HEADERS, progress_ticks, sse
from dispatcher.api.schemas import ERRORS, RowId
from dispatcher.auth import key_active
from dispatcher.domain.states import BroadcastState, DeliveryState
from dispatcher.engine.progress import progress
from dispatcher.reads.broadcasts import MAX_BUCKETS, accepted_over_time, list_broadcasts
from dispatcher.reads.paging import MAX_ID
from dispatcher.reads.receipts import MAX_Q, receipts
from dispatcher.reads.values import MAX_LIMIT
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1/broadcasts", tags=["broadcasts"], responses=ERRORS)

Q_HELP = "an exact subscriber external_id, or an exact address (an email in any case, a phone in any spacing)"
SINCE_HELP = "ISO 8601; rows whose last change (updated_at) is at or after it (no zone = UTC)"
UNTIL_HELP = "ISO 8601; rows whose last change (updated_at) is before it (no zone = UTC)"


@router.get("", summary="Broadcasts, newest first, filterable by incident and state, cursor-paged")
def list_all(
    incident_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    state: BroadcastState | None = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    _: Caller = Depends(READ),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        return list_broadcasts(session, incident_id=incident_id, state=state, cursor=cursor, limit=limit)


@router.get(
    "/{broadcast_id}",
    summary="Progress per tier and channel, counts by delivery state",
    dependencies=[Depends(commander_first)],  # what a commander follows during the flood it causes
)
def get_progress(
    broadcast_id: RowId, _: Caller = Depends(READ), database: Database = Depends(get_db)
) -> dict[str, Any]:
    with database.session() as session:
        return progress(session, broadcast_id)


@router.get(
    "/{broadcast_id}/receipts", summary="Per-recipient receipts, filterable, searchable, cursor-paged"
)
def get_receipts(
    broadcast_id: RowId,
    state: DeliveryState | None = None,
    channel: ChannelName | None = None,
    tier: Annotated[int | None, Query(ge=0, le=1000)] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=MAX_Q, description=Q_HELP)] = None,
    since: Annotated[datetime | None, Query(description=SINCE_HELP)] = None,
    until: Annotated[datetime | None, Query(description=UNTIL_HELP)] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    _: Caller = Depends(READ),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        return receipts(
            session,
            broadcast_id,
            state=state,
            channel=channel,
            tier=tier,
            q=q,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )


@router.get("/{broadcast_id}/accepted", summary="Deliveries the providers accepted over time, per channel")
def get_accepted(
    broadcast_id: RowId,
    buckets: Annotated[int, Query(ge=1, le=MAX_BUCKETS)] = 60,
    _: Caller = Depends(READ),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        return accepted_over_time(session, broadcast_id, buckets)


@router.get(
    "/{broadcast_id}/events",
    summary="Progress as Server-Sent Events; ends with a `completed` event",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_progress(
    broadcast_id: RowId,
    request: Request,
    caller: Caller = Depends(READ),
    database: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
    hub: ProgressHub = Depends(get_progress_hub),
) -> StreamingResponse:
    first = await asyncio.to_thread(read_progress, database, broadcast_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        # however the stream ends, its loop is closed with it, so it leaves the progress hub then
        ticks = progress_ticks(
            hub,
            broadcast_id,
            first,
            still_allowed=lambda: _key_active(database, caller.key_id),
            disconnected=request.is_disconnected,
            heartbeat_s=settings.sse_heartbeat_s,
        )
        async with aclosing(ticks):
            async for tick in ticks:
                if tick.kind == "heartbeat":
                    yield ": heartbeat\n\n"
                elif tick.kind == "revoked":
                    yield sse("error", _json(error_body("unauthorized", "the API key was revoked")))
                else:
                    yield sse(tick.kind, _json(tick.progress))

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _key_active(database: Database, key_id: int) -> bool:
    with database.session() as session:
        return key_active(session, key_id)
