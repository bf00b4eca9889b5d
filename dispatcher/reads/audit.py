"""The audit log read back, newest first, keyset-paged on the entry id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.reads.paging import decode_cursor, encode_cursor
from dispatcher.store.models import AuditEntry

CURSOR_KIND = "a"


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "role": entry.role,
        "key_id": entry.key_id,
        "action": entry.action,
        "target": entry.target,
        "status": entry.status,
        "client": entry.client,
        "request_id": entry.request_id,
    }


def list_audit(
    session: Session,
    *,
    cursor: str | None = None,
    limit: int = 100,
    actor: str | None = None,
    action: str | None = None,
) -> dict[str, Any]:
    """`{"entries": [...], "next_cursor"}`, newest first; `actor` and `action` match exactly (each
    has an index with the id, so a filtered page is an index range, not a scan)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(AuditEntry.id < decode_cursor(cursor, CURSOR_KIND))
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    rows = list(session.scalars(query))
    page = rows[:limit]
    return {
        "entries": [entry_json(e) for e in page],
        "next_cursor": encode_cursor(CURSOR_KIND, page[-1].id) if len(rows) > limit else None,
    }
