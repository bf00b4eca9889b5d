"""The status snapshot: component statuses and the indicator from what is open (the pure rule),
and the stored snapshot rebuilt by every incident, update and maintenance change."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select

from config import Settings
from dispatcher.domain.message import OutageMessage, Publication
from dispatcher.domain.status import Affecting, component_statuses, default_components, overall
from dispatcher.engine import snapshot as snapshots
from dispatcher.incidents.broadcasts import open_incident, post_update, publish_update
from dispatcher.incidents.maintenance import schedule
from dispatcher.reads.status import build_snapshot, current_snapshot
from dispatcher.store.db import Database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import StatusSnapshot, SubscriberList
from tests.conftest import fresh_database_url

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


def test_an_incident_naming_only_unlisted_components_affects_every_component() -> None:
    """The default page lists one component (the service): an incident naming `payments` must not
    leave it operational."""
    items = [Affecting(impact="major", components=("payments",))]
    assert component_statuses(["Service status"], items) == {"Service status": "partial_outage"}
    mixed = [Affecting(impact="minor", components=("payments", "API"))]
    assert component_statuses(["API", "Dashboard"], mixed) == {
        "API": "degraded_performance",
        "Dashboard": "operational",
    }


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


def values(parameters: object) -> list[object]:
    """A statement's bound values, whichever form the driver takes them in."""
    return sorted(parameters.values() if isinstance(parameters, dict) else parameters)  # type: ignore[attr-defined]


def content(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "generated_at"}


def test_a_rebuild_renders_again_only_what_changed_and_shows_what_a_full_build_shows(
    db: Database, settings: Settings
) -> None:
    """Each commit's rebuild reuses this process's rendering of the incidents that did not change:
    it loads the updates of the changed one only, and its body is the one a build from nothing
    gives (components, whose statuses follow every incident, included)."""
    loaded: list[object] = []

    def watch(_conn, _cursor, statement: str, parameters: object, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if "incident_updates.seq DESC" in statement:  # the query loading updates to render
            loaded.append(parameters)

    def full_build() -> dict:
        """A build from nothing: this process's renderings set aside, and put back after."""
        with snapshots.RENDERED.lock:
            held, snapshots.RENDERED.items = snapshots.RENDERED.items, {}
        try:
            with db.session() as session:
                return content(build_snapshot(session, settings, datetime.now(UTC)))
        finally:
            with snapshots.RENDERED.lock:
                snapshots.RENDERED.items = held

    start = datetime.now(UTC) + timedelta(hours=2)
    with db.session() as session:
        api, _ = open_incident(
            session, settings, OutageMessage(title="API errors", impact="minor", components=["API"])
        )
        mail, _ = open_incident(
            session, settings, OutageMessage(title="Mail slow", impact="major", components=["Email"])
        )
        window, _, _ = schedule(
            session,
            settings,
            OutageMessage(
                title="DB upgrade", kind="maintenance", starts_at=start, ends_at=start + timedelta(hours=1)
            ),
        )
    event.listen(db.engine, "before_cursor_execute", watch)
    try:
        steps = [
            (api.id, {"status": "identified", "summary": "Found it"}, None),
            (mail.id, {"summary": "Only for the on-call team"}, Publication(public=False)),
            (mail.id, {"impact": "minor", "components": ["Email", "API"]}, None),
            (window.id, {"status": "in_progress"}, None),
            (api.id, {"status": "resolved"}, None),
        ]
        for incident_id, changes, publication in steps:
            loaded.clear()
            with db.session() as session:
                publish_update(session, settings, incident_id, changes, publication=publication)
            # an internal update changes nothing shown: nothing is loaded again
            assert [values(p) for p in loaded] == ([] if publication else [[incident_id]])
            assert content(stored(db).body) == full_build()
    finally:
        event.remove(db.engine, "before_cursor_execute", watch)
    shown = stored(db).body
    assert [i["name"] for i in shown["incidents"]] == ["Mail slow", "API errors"]
    assert [u["body"] for u in shown["incidents"][0]["incident_updates"]] != []
    assert "Only for the on-call team" not in str(shown)
    assert by_name(shown)["API"] == "degraded_performance"  # the mail incident now names it too


@pytest.fixture
def fresh(backend: str, request: pytest.FixtureRequest) -> Iterator[Database]:
    name = "".join(c for c in request.node.originalname if c.isalnum())[-24:]
    database = Database(fresh_database_url(backend, f"snap_{name}"))
    upgrade(database)
    yield database
    database.dispose()


def test_a_fresh_database_serves_a_built_snapshot(fresh: Database) -> None:
    snapshots.COPIES.items.clear()
    settings = Settings(database_url=fresh.url, service_name="Acme")
    assert stored(fresh).etag == ""  # the migration's placeholder: locked, never inserted twice
    snapshot = current_snapshot(settings)
    assert [c["name"] for c in snapshot.body["components"]] == ["Acme"] and not snapshot.stale
    assert stored(fresh).etag == snapshot.etag
    snapshots.COPIES.items.clear()


def test_after_a_quiet_spell_an_old_copy_is_refreshed_not_called_stale(fresh: Database) -> None:
    """Found by trying it: the first visit after a quiet minute said "we cannot reach our records"
    with the database up. Age alone is no evidence; only a failed or hanging re-read is."""
    snapshots.COPIES.items.clear()
    settings = Settings(database_url=fresh.url, service_name="Acme")
    first = current_snapshot(settings)
    url = settings.effective_database_url
    snapshots.COPIES.items[url] = replace(first, read_at=time.monotonic() - 60)  # a quiet minute
    served = current_snapshot(settings)
    assert not served.stale and served.etag == first.etag
    deadline = time.monotonic() + 30
    while snapshots.COPIES.items[url].age_s() >= 60 and time.monotonic() < deadline:
        time.sleep(0.05)  # the background re-read
    assert snapshots.COPIES.items[url].age_s() < 60 and not current_snapshot(settings).stale
    with snapshots.COPIES.lock:  # a re-read that has hung past STALE_AFTER_S: now it is evidence
        snapshots.COPIES.refreshing[url] = time.monotonic() - snapshots.STALE_AFTER_S - 1
    try:
        assert current_snapshot(settings).stale
    finally:
        with snapshots.COPIES.lock:
            snapshots.COPIES.refreshing.pop(url, None)
        snapshots.COPIES.items.clear()


def test_changes_committing_at_once_both_reach_the_snapshot(fresh: Database) -> None:
    """Each rebuild locks the row before it reads: the later one waits, then sees the earlier change."""
    settings = Settings(database_url=fresh.url, service_name="Acme")
    with fresh.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def open_one(title: str) -> None:
        try:
            with fresh.session() as session:
                barrier.wait(timeout=10)
                open_incident(session, settings, OutageMessage(title=title, impact="minor"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(t,)) for t in ("First", "Second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(i["name"] for i in stored(fresh).body["incidents"]) == ["First", "Second"]


def test_the_page_name_says_status_once() -> None:
    from dispatcher.domain.status import page_name

    assert page_name("Acme") == "Acme status"
    assert page_name("Service status") == "Service status"
    assert page_name("ACME STATUS") == "ACME STATUS"
