"""The audit log read back: `GET /v1/audit`, admins only, newest first, cursor-paged."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from dispatcher.api.deps import MANAGE, Caller, get_db
from dispatcher.api.schemas import ERRORS
from dispatcher.reads.audit import list_audit
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERRORS)


@router.get("", summary="Every write through the API or the CLI, newest first (admin)")
def get_audit(
    actor: Annotated[str | None, Query(min_length=1, max_length=40, description="`od_AbCdE`, `cli`")] = None,
    action: Annotated[
        str | None, Query(min_length=1, max_length=100, description="`incident.open`, `keys.create`")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _: Caller = Depends(MANAGE),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    with database.session() as session:
        return list_audit(session, cursor=cursor, limit=limit, actor=actor, action=action)
