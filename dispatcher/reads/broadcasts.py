"""Broadcasts as dashboards list them, and a broadcast's accepted deliveries over time per channel
(the chart on its page). Totals come from the progress counters, never a COUNT over deliveries."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, cast, func, select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import NotFound, ValidationFailed
from dispatcher.domain.states import BroadcastState
from dispatcher.reads.paging import decode_cursor, next_cursor
from dispatcher.reads.values import iso, one_of, page_limit
from dispatcher.store.bulk import id_in, on_postgres
from dispatcher.store.models import Broadcast, BroadcastCount, Delivery

CURSOR_KIND = "b"
MAX_BUCKETS = 1000


def list_broadcasts(
    session: Session,
    *,
    incident_id: int | None = None,
    state: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Newest first, `next_cursor` for the next page; `total` is the deliveries it has (failovers
    included)."""
    limit = page_limit(limit)
    wanted = one_of(state, BroadcastState, "state")
    query = select(Broadcast).order_by(Broadcast.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(Broadcast.id < decode_cursor(cursor, CURSOR_KIND))
    if incident_id is not None:
        query = query.where(Broadcast.incident_id == incident_id)
    if wanted is not None:
        query = query.where(Broadcast.state == wanted.value)
    rows = list(session.scalars(query.execution_options(populate_existing=True)))
    page = rows[:limit]
    totals: dict[int, int] = {}
    if page:
        totals = {
            broadcast_id: int(n or 0)
            for broadcast_id, n in session.execute(
                select(BroadcastCount.broadcast_id, func.sum(BroadcastCount.n))
                .where(id_in(session, BroadcastCount.broadcast_id, [b.id for b in page]))
                .group_by(BroadcastCount.broadcast_id)
            )
        }
    return {
        "broadcasts": [
            {
                "id": b.id,
                "incident_id": b.incident_id,
                "update_id": b.update_id,
                "event": b.event,
                "state": b.state,
                "created_at": iso(b.created_at),
                "completed_at": iso(b.completed_at),
                "total": totals.get(b.id, 0),
            }
            for b in page
        ],
        "next_cursor": next_cursor(CURSOR_KIND, [b.id for b in rows], limit),
    }


def _epoch(session: Session, column: Any) -> ColumnElement[float]:
    """Seconds since 1970 of a timestamp column, on either database."""
    if on_postgres(session):
        return cast(func.extract("epoch", column), Float)
    return (func.julianday(column) - 2440587.5) * 86400.0


def accepted_over_time(session: Session, broadcast_id: int, buckets: int = 60) -> dict[str, Any]:
    """Deliveries the provider accepted (`sent_at` set: sent, and those delivered or bounced since),
    per channel, counted in `buckets` equal slices from the first acceptance to the last. Each
    series point is `[bucket start, accepted in that bucket]`, every bucket present (zeros too)."""
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValidationFailed(f"buckets must be between 1 and {MAX_BUCKETS}", fields=["buckets"])
    if session.get(Broadcast, broadcast_id) is None:
        raise NotFound(f"broadcast {broadcast_id} not found", fields=["broadcast_id"])
    accepted = (Delivery.broadcast_id == broadcast_id) & Delivery.sent_at.is_not(None)
    first, last = session.execute(
        select(func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(accepted)
    ).one()
    if first is None:
        return {"first_accepted_at": None, "last_accepted_at": None, "bucket_s": None, "series": {}}
    first, last = _aware(first), _aware(last)
    span = (last - first).total_seconds()
    bucket_s = max(1, math.ceil(span / buckets)) if span > 0 else 1
    used = min(buckets, int(span // bucket_s) + 1)
    index = func.floor((_epoch(session, Delivery.sent_at) - first.timestamp()) / bucket_s)
    series: dict[str, list[list[Any]]] = {}
    for channel, slot, n in session.execute(
        select(Delivery.channel, index.label("slot"), func.count())
        .where(accepted)
        .group_by(Delivery.channel, "slot")
    ):
        points = series.setdefault(
            channel, [[iso(first + timedelta(seconds=i * bucket_s)), 0] for i in range(used)]
        )
        points[min(used - 1, max(0, int(slot)))][1] += int(n)
    return {
        "first_accepted_at": iso(first),
        "last_accepted_at": iso(last),
        "bucket_s": bucket_s,
        "series": dict(sorted(series.items())),
    }


def _aware(value: datetime | str) -> datetime:
    """min()/max() bypass the column type on SQLite and hand back its stored text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
