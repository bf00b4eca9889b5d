"""Shared set-up for the scheduler tests: settings in code, a maintenance message, a harness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config import Settings
from dispatcher.domain.message import OutageMessage
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, ScheduledNotice
from tests.harness import Harness


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


def settings_for(database: Database, **overrides: Any) -> Settings:
    return Settings(database_url=database.url, **overrides)


def maintenance(starts_at: datetime, hours: float = 2, **fields: Any) -> OutageMessage:
    return OutageMessage(
        title="Database upgrade",
        kind="maintenance",
        impact=fields.pop("impact", "minor"),
        summary="Writes pause for a few minutes.",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=hours),
        **fields,
    )


def notices(database: Database, maintenance_id: int | None = None) -> list[ScheduledNotice]:
    with database.session() as session:
        query = select(ScheduledNotice).order_by(ScheduledNotice.due_at, ScheduledNotice.id)
        if maintenance_id is not None:
            query = query.where(ScheduledNotice.incident_id == maintenance_id)
        return list(session.scalars(query))


def broadcast_events(database: Database) -> list[str]:
    with database.session() as session:
        return list(session.scalars(select(Broadcast.event).order_by(Broadcast.id)))
