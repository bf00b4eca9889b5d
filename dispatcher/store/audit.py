"""The audit log: one row per write through the API or the CLI, written in its own short transaction.

What is kept names who and what, never how: a key's display prefix (or `cli`), never the key; the
route's parameters as the target, never a body (bodies may hold people's addresses).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from dispatcher.store.models import AuditEntry, utcnow

CLI_ACTOR = "cli"


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if value is not None else None


def record_audit(
    session: Session,
    *,
    actor: str,
    role: str | None,
    action: str,
    target: str | None,
    status: int,
    client: str | None,
    request_id: str | None,
    key_id: int | None = None,
    at: datetime | None = None,
) -> None:
    """Adds one entry to `session` (the caller commits). Values are clipped to their columns: an
    over-long client header must not make the entry fail."""
    session.add(
        AuditEntry(
            at=at or utcnow(),
            actor=actor[:40],
            role=_clip(role, 20),
            key_id=key_id,
            action=action[:100],
            target=_clip(target, 200),
            status=status,
            client=_clip(client, 100),
            request_id=_clip(request_id, 64),
        )
    )
