"""The status snapshot: component statuses and the indicator from what is open (the pure rule),
and the stored snapshot rebuilt by every incident, update and maintenance change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from config import Settings
from dispatcher.domain.message import OutageMessage
from dispatcher.domain.status import Affecting, component_statuses, default_components, overall
from dispatcher.engine import snapshot as snapshots
from dispatcher.incidents.broadcasts import open_incident, post_update
from dispatcher.incidents.maintenance import schedule
from dispatcher.reads.status import build_snapshot, current_snapshot
from dispatcher.store.db import Database
from dispatcher.store.models import StatusSnapshot, SubscriberList

COMPONENTS = [
    {"name": "API", "description": "The REST API", "group": "Core", "order": 1},
    {"name": "Dashboard", "order": 2},
    {"name": "Email", "group": "Core", "order": 3},
]


def test_impact_sets_named_components_and_the_indicator() -> None:
    items = [Affecting("major", ("api",))]
    assert component_statuses(["API", "Dashboard"], items) == {
        "API": "partial_outage",
        "Dashboard": "operational",
    }
    assert overall(items) == {"indicator": "major", "description": "Partial System Outage"}


def test_no_components_named_affects_all_and_the_worst_wins() -> None:
    items = [
        Affecting("minor"),
        Affecting("critical", ("Dashboard",)),
        Affecting("none", (), maintenance=True),
    ]
    assert component_statuses(["API", "Dashboard"], items) == {
        "API": "degraded_performance",
        "Dashboard": "major_outage",
    }
    assert overall(items)["indicator"] == "critical"


def test_maintenance_alone_is_under_maintenance_and_nothing_open_is_operational() -> None:
    maintenance = [Affecting("minor", ("API",), maintenance=True)]
    assert component_statuses(["API", "Dashboard"], maintenance) == {
        "API": "under_maintenance",
        "Dashboard": "operational",
    }
    assert overall(maintenance) == {"indicator": "maintenance", "description": "Service Under Maintenance"}
    assert overall([]) == {"indicator": "none", "description": "All Systems Operational"}


def test_default_components_follow_the_public_ones_else_the_service() -> None:
    assert [c.name for c in default_components(["API", "Web"], "Acme")] == ["API", "Web"]
    assert [c.name for c in default_components([], "Acme")] == ["Acme"]


@pytest.fixture
def settings(db: Database) -> Iterator[Settings]:
    snapshots.COPIES.items.clear()
    with db.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    yield Settings(database_url=db.url, status_components=COMPONENTS, service_name="Acme")
    snapshots.COPIES.items.clear()


def by_name(body: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in body["components"]}


def stored(db: Database) -> StatusSnapshot:
    with db.session() as session:
        return session.scalars(select(StatusSnapshot)).one()


def test_an_open_incident_degrades_what_it_names_and_resolving_restores_all(
    db: Database, settings: Settings
) -> None:
    with db.session() as session:
        incident, _ = open_incident(
            session,
            settings,
            OutageMessage(title="API errors", impact="major", components=["API"], summary="<b>500s</b>"),
        )
    row = stored(db)
    assert by_name(row.body) == {
        "Core": "partial_outage",
        "API": "partial_outage",
        "Dashboard": "operational",
        "Email": "operational",
    }
    assert row.body["status"] == {"indicator": "major", "description": "Partial System Outage"}
    assert row.body["incidents"][0]["incident_updates"][0]["body"] == "<b>500s</b>"  # JSON, not HTML
    first_etag = row.etag
    assert current_snapshot(settings).etag == first_etag

    with db.session() as session:
        post_update(session, settings, incident.id, {"status": "monitoring", "summary": "Fixed, watching"})
        post_update(session, settings, incident.id, {"status": "resolved", "summary": "All good"})
    row = stored(db)
    assert set(by_name(row.body).values()) == {"operational"}
    assert row.body["status"]["indicator"] == "none"
    assert row.etag != first_etag
    [shown] = row.body["incidents"]
    assert [u["status"] for u in shown["incident_updates"]] == ["resolved", "monitoring", "investigating"]
    assert shown["monitoring_at"] is not None and shown["resolved_at"] is not None
    assert current_snapshot(settings).etag == row.etag  # this process's copy followed the commit


def test_a_rolled_back_change_leaves_the_snapshot_alone(db: Database, settings: Settings) -> None:
    with db.session() as session:
        open_incident(session, settings, OutageMessage(title="Quiet", impact="minor"))
    before = stored(db).etag
    with pytest.raises(RuntimeError), db.session() as session:
        open_incident(session, settings, OutageMessage(title="Never", impact="critical"))
        raise RuntimeError("the caller failed after the change")
    assert stored(db).etag == before
    assert current_snapshot(settings).body["status"]["indicator"] == "minor"


def test_maintenance_in_progress_is_under_maintenance(db: Database, settings: Settings) -> None:
    start = datetime.now(UTC) + timedelta(hours=2)
    message = OutageMessage(
        title="DB upgrade",
        kind="maintenance",
        components=["Email"],
        starts_at=start,
        ends_at=start + timedelta(hours=1),
    )
    with db.session() as session:
        maintenance, _, _ = schedule(session, settings, message)
    body = stored(db).body
    assert set(by_name(body).values()) == {"operational"}
    assert body["scheduled_maintenances"][0]["status"] == "scheduled"
    with db.session() as session:
        post_update(session, settings, maintenance.id, {"status": "in_progress"})
    body = stored(db).body
    assert by_name(body)["Email"] == "under_maintenance" and by_name(body)["API"] == "operational"
    assert body["status"]["indicator"] == "maintenance"
    assert body["scheduled_maintenances"][0]["impact"] == "maintenance"


def test_build_reads_only_the_last_90_days(db: Database, settings: Settings) -> None:
    with db.session() as session:
        incident, _ = open_incident(session, settings, OutageMessage(title="Old", impact="minor"))
        post_update(session, settings, incident.id, {"status": "resolved"})
    with db.session() as session:
        assert len(build_snapshot(session, settings, datetime.now(UTC))["incidents"]) == 1
        assert build_snapshot(session, settings, datetime.now(UTC) + timedelta(days=91))["incidents"] == []
