"""Incidents as dashboards list them (newest first, cursor-paged) and one incident's timeline, each
update with the broadcast it started and where that broadcast is."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import NotFound
from dispatcher.domain.message import Kind, Status
from dispatcher.reads.paging import decode_cursor, next_cursor
from dispatcher.reads.values import iso, one_of, page_limit
from dispatcher.store.models import Broadcast, Incident, IncidentUpdate

CURSOR_KIND = "i"


def incident_json(incident: Incident) -> dict[str, Any]:
    """An incident as GET /v1/incidents/{id} shows it, without its updates."""
    return {
        "id": incident.id,
        "kind": incident.kind,
        "title": incident.title,
        "status": incident.status,
        "impact": incident.impact,
        "message": incident.message,
        "starts_at": iso(incident.starts_at),
        "ends_at": iso(incident.ends_at),
        "created_at": iso(incident.created_at),
        "updated_at": iso(incident.updated_at),
        "resolved_at": iso(incident.resolved_at),
    }


def publication_json(update: IncidentUpdate) -> dict[str, Any]:
    """How an update was published: `notify: false` was sent to nobody (its broadcast is null),
    `public: false` only to `tiers` and never shown publicly."""
    return {
        "seq": update.seq,
        "notify": update.notify,
        "public": update.public,
        "tiers": update.tiers,
    }


def list_incidents(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """Newest first (by id: ids grow with creation), `next_cursor` for the next page."""
    limit = page_limit(limit)
    wanted_status = one_of(status, Status, "status")
    wanted_kind = one_of(kind, Kind, "kind")
    query = select(Incident).order_by(Incident.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(Incident.id < decode_cursor(cursor, CURSOR_KIND))
    if wanted_status is not None:
        query = query.where(Incident.status == wanted_status.value)
    if wanted_kind is not None:
        query = query.where(Incident.kind == wanted_kind.value)
    rows = list(session.scalars(query.execution_options(populate_existing=True)))
    return {
        "incidents": [incident_json(i) for i in rows[:limit]],
        "next_cursor": next_cursor(CURSOR_KIND, [i.id for i in rows], limit),
    }


def incident_story(session: Session, incident_id: int) -> dict[str, Any]:
    """The incident and its timeline: each update with its broadcast's id and state (None for an
    update that started none)."""
    incident = session.get(Incident, incident_id, populate_existing=True)
    if incident is None:
        raise NotFound(f"incident {incident_id} not found", fields=["incident_id"])
    broadcasts = {
        update_id: (broadcast_id, state)
        for broadcast_id, update_id, state in session.execute(
            select(Broadcast.id, Broadcast.update_id, Broadcast.state).where(
                Broadcast.incident_id == incident_id
            )
        )
    }
    timeline = []
    for u in incident.updates:
        broadcast_id, state = broadcasts.get(u.id, (None, None))
        timeline.append(
            {
                "seq": u.seq,
                "event": u.event,
                "status": u.status,
                "posted_at": iso(u.posted_at),
                "message": u.message,
                "notify": u.notify,
                "public": u.public,
                "tiers": u.tiers,
                "broadcast_id": broadcast_id,
                "broadcast_state": state,
            }
        )
    return {**incident_json(incident), "updates": timeline}
