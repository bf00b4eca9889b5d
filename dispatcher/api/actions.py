"""A commander's actions on what was sent: retry a broadcast's failed deliveries, resend one
delivery; and an admin's reveal of one unmasked address. Every one is audited (api/auditing.py);
retry and resend honour `Idempotency-Key`, and a repeat without one sends nothing more, because
the rows it moved are no longer failed (retry) or are on their way (resend: 409)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.api.deps import BROADCAST, MANAGE, Caller, get_db, get_settings
from dispatcher.api.errors import error_body
from dispatcher.api.idempotency import Outcome, run_once
from dispatcher.api.schemas import ERRORS, RowId
from dispatcher.domain.errors import NotFound
from dispatcher.engine.clock import utcnow
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.redelivery import queue_sends, resend, retry_failed
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery

router = APIRouter(tags=["actions"], responses=ERRORS)


def _after(outbox: Outbox) -> Any:
    """Queue after commit; with the broker down the answer stands and the sweeper queues the rows."""
    return outbox.hand_off if outbox.items else None


@router.post(
    "/v1/broadcasts/{broadcast_id}/retry-failed", summary="Send the broadcast's failed deliveries again"
)
def retry_failed_deliveries(
    broadcast_id: RowId,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    def create(session: Session) -> Outcome:
        outbox = Outbox()
        queued = queue_sends(session, settings, retry_failed(session, broadcast_id, utcnow()), outbox)
        return 200, {"broadcast_id": broadcast_id, "queued": queued}, _after(outbox)

    return run_once(request, database, caller, {}, create)


@router.post("/v1/deliveries/{delivery_id}/resend", summary="Send one delivery again (a deliberate copy)")
def resend_delivery(
    delivery_id: RowId,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    def create(session: Session) -> Outcome:
        if not resend(session, delivery_id, utcnow()):
            # a concurrent resend moved it first: answered (and, with a key, kept) so that a
            # concurrent request with the same key replays the winner's answer instead
            message = f"delivery {delivery_id} is being sent already"
            return 409, error_body("conflict", message, ["delivery_id"]), None
        outbox = Outbox()
        queue_sends(session, settings, [delivery_id], outbox)
        resends = session.get(Delivery, delivery_id, populate_existing=True)
        body = {"delivery_id": delivery_id, "queued": True, "resends": resends.resends if resends else None}
        return 200, body, _after(outbox)

    return run_once(request, database, caller, {}, create)


@router.post("/v1/deliveries/{delivery_id}/reveal", summary="One delivery's address, unmasked (admin)")
def reveal_address(
    delivery_id: RowId, _: Caller = Depends(MANAGE), database: Database = Depends(get_db)
) -> dict[str, Any]:
    with database.session() as session:
        row = session.get(Delivery, delivery_id)
        if row is None:
            raise NotFound(f"delivery {delivery_id} not found", fields=["delivery_id"])
        return {"delivery_id": row.id, "channel": row.channel, "address": row.address}
