"""The status snapshot and silent publish: a `notify: false` update is shown like any other, a
`public: false` one never is, and nor does it move the incident's public status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from config import Settings
from dispatcher.domain.message import OutageMessage, Publication
from dispatcher.engine import snapshot as snapshots
from dispatcher.incidents.broadcasts import publish_incident, publish_update
from dispatcher.store.db import Database
from dispatcher.store.models import StatusSnapshot


@pytest.fixture
def settings(db: Database) -> Iterator[Settings]:
    snapshots.COPIES.items.clear()
    yield Settings(database_url=db.url, service_name="Acme")
    snapshots.COPIES.items.clear()


def body(db: Database) -> dict:
    with db.session() as session:
        return session.scalars(select(StatusSnapshot)).one().body


def test_internal_updates_never_reach_the_snapshot_and_silent_ones_do(
    db: Database, settings: Settings
) -> None:
    with db.session() as session:
        incident, _, broadcast = publish_incident(
            session,
            settings,
            OutageMessage(title="API errors", impact="minor", summary="Some requests fail."),
            publication=Publication(notify=False),
        )
        assert broadcast is None
        publish_update(
            session,
            settings,
            incident.id,
            {"status": "identified", "impact": "critical", "summary": "SECRET: the vendor's bug 4711"},
            publication=Publication(public=False),
        )
    shown = body(db)
    [item] = shown["incidents"]
    assert item["status"] == "investigating" and item["impact"] == "minor"
    assert shown["status"]["indicator"] == "minor"  # the internal "critical" moved nothing public
    assert [u["body"] for u in item["incident_updates"]] == ["Some requests fail."]  # the silent opening
    assert "4711" not in str(shown)

    with db.session() as session:
        publish_update(
            session,
            settings,
            incident.id,
            {"status": "monitoring", "summary": "A fix is out."},
            publication=Publication(notify=False),
        )
    item = body(db)["incidents"][0]
    assert [u["status"] for u in item["incident_updates"]] == ["monitoring", "investigating"]
    assert "4711" not in str(body(db))
