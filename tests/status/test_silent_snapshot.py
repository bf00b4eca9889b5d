"""The status snapshot and silent publish: a `notify: false` update is shown like any other, a
`public: false` one never is, and nor does it move the incident's public status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from config import Settings
from dispatcher.app import create_app
from dispatcher.domain.message import OutageMessage, Publication
from dispatcher.engine import snapshot as snapshots
from dispatcher.incidents.broadcasts import publish_incident, publish_update
from dispatcher.statuspage.feeds import WRITTEN
from dispatcher.statuspage.pages import RENDERED
from dispatcher.store.db import Database
from dispatcher.store.models import StatusSnapshot

PUBLIC_URL = "https://status.example.test"


def _clear() -> None:
    snapshots.COPIES.items.clear()
    RENDERED.items.clear()
    WRITTEN.items.clear()


@pytest.fixture
def settings(db: Database) -> Iterator[Settings]:
    _clear()
    yield Settings(
        database_url=db.url, service_name="Acme", public_url=PUBLIC_URL, status_requests_per_hour=10_000
    )
    _clear()


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


def test_the_page_feeds_and_json_show_silent_updates_and_never_internal_ones(
    db: Database, settings: Settings
) -> None:
    with db.session() as session:
        incident, _, _ = publish_incident(
            session,
            settings,
            OutageMessage(title="Search is slow", impact="minor", summary="Searches take seconds."),
        )
        publish_update(
            session,
            settings,
            incident.id,
            {"summary": "SECRET-4711: the index host is out of disk"},
            publication=Publication(public=False),
        )
        publish_update(
            session,
            settings,
            incident.id,
            {"summary": "Searches take seconds; we are moving the index."},
            publication=Publication(notify=False),
        )
        incident_id = incident.id
        link = incident.message["status_page_url"]
    assert link == f"{PUBLIC_URL}/status/incidents/{incident_id}"  # the default link, a page we serve
    with TestClient(create_app(settings)) as client:
        for path in (
            "/status",
            f"/status/incidents/{incident_id}",
            "/history.atom",
            "/history.rss",
            "/api/v2/summary.json",
            "/api/v2/incidents.json",
            "/api/v2/incidents/unresolved.json",
        ):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert "SECRET-4711" not in response.text, path
            if path != "/api/v2/summary.json" and not path.startswith("/history"):
                assert "we are moving the index" in response.text, path
        atom = client.get("/history.atom").text
        assert "Search is slow" in atom
        [shown] = client.get("/api/v2/incidents.json").json()["incidents"]
        assert [u["body"] for u in shown["incident_updates"]] == [
            "Searches take seconds; we are moving the index.",
            "Searches take seconds.",
        ]
