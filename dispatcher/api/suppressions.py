"""Admin calls for the subscribers' front door: the suppression list, and rotating a subscriber's
secret link token (the one in their unsubscribe and manage links)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy import select

from channels.base import ChannelName
from dispatcher.api.deps import MANAGE, Caller, get_db
from dispatcher.api.schemas import ERRORS
from dispatcher.domain.errors import NotFound
from dispatcher.engine import suppressions
from dispatcher.reads.paging import decode_cursor, encode_cursor
from dispatcher.store.db import Database
from dispatcher.store.models import Subscriber

router = APIRouter(tags=["suppressions"], responses=ERRORS)


@router.get("/v1/suppressions", summary="Suppressed addresses, filtered and cursor-paged")
def list_suppressions(
    channel: ChannelName | None = None,
    address: Annotated[str | None, Query(max_length=2000, pattern=r"^[^\x00]*$")] = None,
    reason: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _: Caller = Depends(MANAGE),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    after = decode_cursor(cursor, "d") if cursor else 0
    with database.session() as session:
        rows = suppressions.list_entries(
            session,
            channel=channel.value if channel else None,
            address=address,
            reason=reason,
            after_id=after,
            limit=limit + 1,
        )
        page = rows[:limit]
        return {
            "suppressions": [suppressions.as_json(r) for r in page],
            "next_cursor": encode_cursor("d", page[-1].id) if len(rows) > limit else None,
        }


@router.delete(
    "/v1/suppressions/{suppression_id}", status_code=204, summary="Remove a suppression: send again"
)
def delete_suppression(
    suppression_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    _: Caller = Depends(MANAGE),
    database: Database = Depends(get_db),
) -> Response:
    with database.session() as session:
        if not suppressions.remove(session, suppression_id):
            raise NotFound(f"suppression {suppression_id} not found", fields=["suppression_id"])
    return Response(status_code=204)


@router.post(
    "/v1/subscribers/{external_id}/token",
    summary="Rotate a subscriber's secret link token: their old unsubscribe and manage links stop working",
)
def rotate_token(
    external_id: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")],
    _: Caller = Depends(MANAGE),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        row = session.scalar(select(Subscriber).where(Subscriber.external_id == external_id))
        if row is None:
            raise NotFound(f"subscriber {external_id} not found", fields=["external_id"])
        row.unsubscribe_token = secrets.token_urlsafe(24)
    # The new token is not returned: it reaches the subscriber only inside their next email.
    return {"external_id": external_id, "rotated": True}
