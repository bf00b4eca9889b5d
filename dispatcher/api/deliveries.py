"""One delivery's story: its moves, the provider's answers, its failover chain and what it carried,
addresses masked (an unmasked reveal is its own audited call)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from config import Settings
from dispatcher.api.deps import READ, Caller, get_db, get_settings
from dispatcher.api.schemas import ERRORS, RowId
from dispatcher.reads.story import delivery_story
from dispatcher.store.db import Database

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], responses=ERRORS)


@router.get("/{delivery_id}", summary="One delivery's story, addresses masked")
def get_delivery(
    delivery_id: RowId,
    _: Caller = Depends(READ),
    database: Database = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> dict[str, Any]:
    with database.session() as session:
        return delivery_story(session, settings, delivery_id)
