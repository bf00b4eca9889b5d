"""`Idempotency-Key` for creating POSTs: a replay returns the first response and starts nothing.

The record is written in the same transaction as what the request creates, so a crash can never
leave one without the other; two concurrent first attempts race on the unique (scope, key) and the
loser's whole transaction rolls back, after which it returns the winner's stored response (also when
the loser's own work was refused because the winner had just done it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatcher.api.deps import Caller
from dispatcher.domain.errors import DispatcherError, IdempotencyMismatch, ValidationFailed
from dispatcher.store.db import Database
from dispatcher.store.models import IdempotencyRecord, utcnow

KEEP = timedelta(hours=24)
HEADER = "Idempotency-Key"

# What a creating handler returns from inside its transaction: status, body, and what to do after commit.
Outcome = tuple[int, dict[str, Any], Callable[[], None] | None]


def request_hash(payload: Any) -> str:
    """SHA-256 of canonical JSON (sorted keys, no spaces), or of raw bytes."""
    if isinstance(payload, bytes):
        return hashlib.sha256(payload).hexdigest()
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stored(session: Session, scope: str, key: str) -> IdempotencyRecord | None:
    return session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at >= utcnow() - KEEP,
        )
    )


def _replay(record: IdempotencyRecord, digest: str, key: str) -> JSONResponse:
    if record.request_hash != digest:
        raise IdempotencyMismatch(
            f"Idempotency-Key '{key}' was already used with a different request body; "
            "use a new key for a different request",
            fields=[HEADER],
        )
    return JSONResponse(
        record.response, status_code=record.status_code, headers={"Idempotent-Replay": "true"}
    )


def run_once(
    request: Request,
    database: Database,
    caller: Caller,
    payload: Any,
    create: Callable[[Session], Outcome],
    *,
    urgent: bool = False,
) -> JSONResponse:
    """Runs `create` in one transaction with its idempotency record (when a key was sent), then
    its after-commit action (enqueueing), and returns its response; or replays the first one.
    `urgent`: a commander's broadcast, whose transaction goes before the flood's (Database.session)."""
    key = request.headers.get(HEADER)
    if key is not None and not (0 < len(key) <= 200):
        raise ValidationFailed(f"{HEADER} must be 1 to 200 characters", fields=[HEADER])
    scope = f"{request.method} {request.url.path} key:{caller.key_id}"
    digest = request_hash(payload)
    try:
        with database.session(urgent=urgent) as session:
            if key is not None:
                record = _stored(session, scope, key)
                if record is not None:
                    return _replay(record, digest, key)
            status, body, after = create(session)
            if key is not None:
                # expired records, this key's included. Only expired ones: a record under this key
                # that is not expired is a concurrent first attempt's, which committed after our
                # read (SQLite runs writers one after the other); the insert below must collide
                # with it, so that this attempt rolls back and replays it.
                session.execute(
                    delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - KEEP)
                )
                session.add(
                    IdempotencyRecord(
                        scope=scope, key=key, request_hash=digest, status_code=status, response=body
                    )
                )
                session.flush()
    except (IntegrityError, DispatcherError):
        # A concurrent first attempt won the race: its record collided with ours, or it committed
        # between our read of the records and `create`, which then refused (a resend finding the
        # row it had just moved: 409). Either way the winner's answer is this key's answer.
        if key is None:
            raise
        with database.session() as session:
            record = _stored(session, scope, key)
        if record is None:
            raise
        return _replay(record, digest, key)
    if after is not None:
        after()
    return JSONResponse(body, status_code=status)
