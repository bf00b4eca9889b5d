"""Broadcast progress, per-recipient receipts, and the same progress as a live SSE stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from channels.base import ChannelName
from config import Settings
from dispatcher.api.deps import READ, Caller, get_db, get_settings
from dispatcher.api.errors import error_body
from dispatcher.api.progress_stream import SSE_HEADERS, progress_ticks, read_progress, sse
from dispatcher.api.schemas import ERRORS, RowId
from dispatcher.auth import key_active
from dispatcher.domain.errors import NotFound, ValidationFailed
from dispatcher.domain.states import DeliveryState
from dispatcher.engine.progress import progress
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, Delivery, Subscriber

router = APIRouter(prefix="/v1/broadcasts", tags=["broadcasts"], responses=ERRORS)

MAX_ID = 2**63 - 1


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def encode_cursor(delivery_id: int) -> str:
    return base64.urlsafe_b64encode(f"d:{delivery_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "d" or not value.isdigit() or int(value) > MAX_ID:
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("cursor is not one this API returned", fields=["cursor"]) from None


@router.get("/{broadcast_id}", summary="Progress per tier and channel, counts by delivery state")
def get_progress(
    broadcast_id: RowId, _: Caller = Depends(READ), database: Database = Depends(get_db)
) -> dict[str, Any]:
    with database.session() as session:
        return progress(session, broadcast_id)


@router.get("/{broadcast_id}/receipts", summary="Per-recipient receipts, filterable, cursor-paged")
def get_receipts(
    broadcast_id: RowId,
    state: DeliveryState | None = None,
    channel: ChannelName | None = None,
    tier: Annotated[int | None, Query(ge=0, le=1000)] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _: Caller = Depends(READ),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    after = decode_cursor(cursor) if cursor else 0
    with database.session() as session:
        if session.get(Broadcast, broadcast_id) is None:
            raise NotFound(f"broadcast {broadcast_id} not found", fields=["broadcast_id"])
        query = (
            select(Delivery, Subscriber.external_id)
            .outerjoin(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.broadcast_id == broadcast_id, Delivery.id > after)
            .order_by(Delivery.id)
            .limit(limit + 1)
        )
        if state is not None:
            query = query.where(Delivery.state == state.value)
        if channel is not None:
            query = query.where(Delivery.channel == channel.value)
        if tier is not None:
            query = query.where(Delivery.tier == tier)
        rows = session.execute(query).all()
    page = rows[:limit]
    return {
        "broadcast_id": broadcast_id,
        "receipts": [_receipt(d, external_id) for d, external_id in page],
        "next_cursor": encode_cursor(page[-1][0].id) if len(rows) > limit else None,
    }


def _receipt(d: Delivery, external_id: str | None) -> dict[str, Any]:
    return {
        "delivery_id": d.id,
        "subscriber": external_id,
        "channel": d.channel,
        "tier": d.tier,
        "state": d.state,
        "provider_message_id": d.provider_message_id,
        "attempts": d.attempts,
        "last_error_code": d.last_error_code,
        "last_error": d.last_error,
        "failover_of": d.failover_of,
        "sends": d.sends,  # sends that may have reached the recipient; more than one = duplicates
        "resends": d.resends,  # of `sends`, the deliberate resends a commander ordered
        "possible_duplicate": d.sends > 1 + d.resends,  # more copies than the first and those resends
        "created_at": _iso(d.created_at),
        "sending_at": _iso(d.sending_at),
        "sent_at": _iso(d.sent_at),
        "delivered_at": _iso(d.delivered_at),
        "final_at": _iso(d.final_at),
    }


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
) -> StreamingResponse:
    first = await asyncio.to_thread(read_progress, database, broadcast_id)  # 404 before the stream starts

    async def events() -> AsyncIterator[str]:
        async for tick in progress_ticks(
            database,
            broadcast_id,
            first,
            still_allowed=lambda: _key_active(database, caller.key_id),
            disconnected=request.is_disconnected,
            heartbeat_s=settings.sse_heartbeat_s,
        ):
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
