"""Incidents: open one, post updates, read its timeline. Each open/update is recorded and queued as
a broadcast and the request returns at once; workers do the sending."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.api.deps import BROADCAST, READ, Caller, get_db, get_settings
from dispatcher.api.idempotency import Outcome, run_once
from dispatcher.api.metrics import BROADCASTS_CREATED
from dispatcher.api.precedence import commander_first
from dispatcher.api.schemas import ERRORS, IncidentIn, RowId, UpdateIn
from dispatcher.domain.message import Kind, Status
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.progress import opening_progress
from dispatcher.incidents.broadcasts import publish_incident, publish_update
from dispatcher.reads.incidents import incident_json, incident_story, list_incidents, publication_json
from dispatcher.reads.values import MAX_LIMIT
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, Incident, IncidentUpdate

router = APIRouter(prefix="/v1/incidents", tags=["incidents"], responses=ERRORS)


def hand_off(broadcast_id: int) -> bool:
    """Queues the committed broadcast's planning task. With the broker down the answer is still 201
    (the broadcast is recorded): a warning is logged and the sweeper queues it at its first pass
    once Redis is back. A 5xx here would invite a retry that opens a second incident."""
    outbox = Outbox()
    outbox.plan_broadcast(broadcast_id)
    return outbox.hand_off()


def _created(incident: Incident, update: IncidentUpdate, broadcast: Broadcast | None) -> Outcome:
    """The answer to an open or an update. A silent one (`notify: false`) has `broadcast: null`:
    nothing was planned or sent, so there is no broadcast to follow, and the dashboard lists none."""
    body = {
        "incident": incident_json(incident),
        "update": publication_json(update),
        "broadcast": opening_progress(broadcast) if broadcast else None,
    }
    if broadcast is None:
        return 201, body, lambda: None
    broadcast_id = broadcast.id

    def after() -> None:
        hand_off(broadcast_id)
        BROADCASTS_CREATED.inc()

    return 201, body, after


@router.post(
    "", status_code=201, summary="Open an incident and broadcast it", dependencies=[Depends(commander_first)]
)
def create_incident(
    body: IncidentIn,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    def create(session: Session) -> Outcome:
        incident, update, broadcast = publish_incident(
            session, settings, body.message(), channels=body.channels, publication=body.publication()
        )
        return _created(incident, update, broadcast)

    return run_once(
        request, database, caller, body.model_dump(mode="json", exclude_unset=True), create, urgent=True
    )


@router.post(
    "/{incident_id}/updates",
    status_code=201,
    summary="Post an update and broadcast it",
    dependencies=[Depends(commander_first)],
)
def create_update(
    incident_id: RowId,
    body: UpdateIn,
    request: Request,
    caller: Caller = Depends(BROADCAST),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    def create(session: Session) -> Outcome:
        incident, update, broadcast = publish_update(
            session,
            settings,
            incident_id,
            body.changes(),
            reopen=body.reopen,
            channels=body.channels,
            publication=body.publication(),
        )
        return _created(incident, update, broadcast)

    return run_once(
        request, database, caller, body.model_dump(mode="json", exclude_unset=True), create, urgent=True
    )


@router.get("", summary="Incidents, newest first, filterable by status and kind, cursor-paged")
def list_all(
    status: Status | None = None,
    kind: Kind | None = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    _: Caller = Depends(READ),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        return list_incidents(session, status=status, kind=kind, cursor=cursor, limit=limit)


@router.get("/{incident_id}", summary="The incident with its timeline of updates")
def get_incident(
    incident_id: RowId, _: Caller = Depends(READ), database: Database = Depends(get_db)
) -> dict[str, Any]:
    with database.session() as session:
        return incident_story(session, incident_id)
