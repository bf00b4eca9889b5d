"""Maintenance windows over HTTP: schedule, move, cancel, list. Thin: the rules live in
`dispatcher.incidents.maintenance`; each call answers with the notices that will go out and when.

Not mounted here: the app (dispatcher/app.py) includes `router`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.api.deps import BROADCAST, READ, Caller, get_db, get_settings
from dispatcher.api.idempotency import Outcome, run_once
from dispatcher.api.incidents import hand_off
from dispatcher.api.schemas import ERRORS, RowId
from dispatcher.domain.errors import ValidationFailed
from dispatcher.domain.message import Kind, OutageMessage
from dispatcher.incidents import maintenance as mnt
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, Incident

router = APIRouter(prefix="/v1/maintenances", tags=["maintenances"], responses=ERRORS)


class MaintenanceIn(OutageMessage):
    """The canonical message, with `kind` maintenance by default and a window required."""

    kind: Kind = Kind.MAINTENANCE


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None


def maintenance_json(session: Session, incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "status": incident.status,
        "impact": incident.impact,
        "starts_at": incident.starts_at.isoformat() if incident.starts_at else None,
        "ends_at": incident.ends_at.isoformat() if incident.ends_at else None,
        "message": incident.message,
        "notices": [mnt.describe(n) for n in mnt.notices_of(session, incident.id)],
    }


def _answer(status: int, session: Session, incident: Incident, broadcast: Broadcast) -> Outcome:
    body = {**maintenance_json(session, incident), "broadcast_id": broadcast.id}
    broadcast_id = broadcast.id
    return status, body, lambda: hand_off(broadcast_id)  # after commit, never before; never a 5xx


@router.post("", status_code=201, summary="Schedule maintenance; 201 with the notices it will send")
def create_maintenance(
    body: MaintenanceIn,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    if body.kind is not Kind.MAINTENANCE:
        raise ValidationFailed("kind must be 'maintenance'", fields=["kind"])
    message = OutageMessage.model_validate(body.model_dump())

    def create(session: Session) -> Outcome:
        incident, broadcast, _ = mnt.schedule(session, settings, message)
        return _answer(201, session, incident, broadcast)

    return run_once(request, database, caller, body.model_dump(mode="json", exclude_unset=True), create)


@router.patch("/{maintenance_id}", summary="Move the window: notices recomputed, a reschedule sent")
def move_maintenance(
    maintenance_id: RowId,
    body: WindowIn,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    if body.starts_at is None and body.ends_at is None:
        raise ValidationFailed("give starts_at, ends_at or both", fields=["starts_at", "ends_at"])

    def move(session: Session) -> Outcome:
        incident, broadcast, _ = mnt.reschedule(
            session, settings, maintenance_id, starts_at=body.starts_at, ends_at=body.ends_at
        )
        return _answer(200, session, incident, broadcast)

    return run_once(request, database, caller, body.model_dump(mode="json", exclude_unset=True), move)


@router.post("/{maintenance_id}/cancel", summary="Cancel: pending notices withdrawn, a cancellation sent")
def cancel_maintenance(
    maintenance_id: RowId,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    def cancel(session: Session) -> Outcome:
        incident, broadcast, _ = mnt.cancel(session, settings, maintenance_id)
        return _answer(200, session, incident, broadcast)

    return run_once(request, database, caller, {"cancel": maintenance_id}, cancel)


MaintenanceStatus = Literal["scheduled", "in_progress", "completed", "cancelled"]  # 422 for anything else


@router.get("", summary="List maintenance windows, soonest first, with their notices")
def list_maintenances(
    status: MaintenanceStatus | None = Query(default=None, description="only this status"),
    limit: int = Query(default=50, ge=1, le=500),
    _caller: Caller = Depends(READ),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        query = select(Incident).where(Incident.kind == Kind.MAINTENANCE.value)
        if status is not None:
            query = query.where(Incident.status == status)
        rows = session.scalars(query.order_by(Incident.starts_at, Incident.id).limit(limit)).all()
        return {"items": [maintenance_json(session, row) for row in rows]}
