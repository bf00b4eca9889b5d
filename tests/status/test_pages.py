"""The status pages for people (`/status`, `/status/incidents/{id}`, `/status/history/{YYYY-MM}`):
what they show from the snapshot, escaped; their headers (strict CSP, one script file, cacheable,
304); and the snapshot's age when the database is gone."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from config import Settings
from dispatcher.app import create_app
from dispatcher.domain.message import OutageMessage
from dispatcher.engine import snapshot as snapshots
from dispatcher.incidents.broadcasts import open_incident, post_update
from dispatcher.incidents.maintenance import schedule
from dispatcher.statuspage.pages import RENDERED, component_sections, parse_month
from dispatcher.store.db import Database, get_database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import SubscriberList

COMPONENTS = [
    {"name": "API", "description": "The REST API", "group": "Core", "order": 1},
    {"name": "Dashboard", "order": 2},
    {"name": "Email", "group": "Core", "order": 3},
]
EVIL = "<script>alert('x')</script>"


def _settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        status_components=COMPONENTS,
        service_name="Acme",
        public_url="https://status.example.test",
        status_requests_per_hour=10_000,
    )


@pytest.fixture
def settings(db: Database) -> Iterator[Settings]:
    snapshots.COPIES.items.clear()
    RENDERED.items.clear()
    with db.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    yield _settings(db.url)
    snapshots.COPIES.items.clear()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _open(db: Database, settings: Settings, **fields: object) -> int:
    with db.session() as session:
        incident, _ = open_incident(session, settings, OutageMessage(**fields))  # type: ignore[arg-type]
        return incident.id


def _update(db: Database, settings: Settings, incident_id: int, **fields: object) -> None:
    with db.session() as session:
        post_update(session, settings, incident_id, fields)


def _text(html: str) -> str:
    """The page's visible words, tags dropped (what a reader sees, roughly)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_page_shows_status_components_and_the_whole_timeline_escaped(
    db: Database, settings: Settings, client: TestClient
) -> None:
    incident = _open(
        db,
        settings,
        title=f"API {EVIL} errors",
        impact="major",
        components=["API"],
        summary="First <b>look</b>",
    )
    _update(db, settings, incident, status="identified", summary=f"Cause found {EVIL}")
    response = client.get("/status")
    assert response.status_code == 200
    html = response.text
    assert "<script>alert" not in html  # user text is escaped, in the title and in every update
    assert "API &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; errors" in html
    assert "Cause found &lt;script&gt;" in html and "First &lt;b&gt;look&lt;/b&gt;" in html
    text = _text(html)
    assert "Partial System Outage" in text
    # both updates, newest first, each with its time in UTC inside a <time datetime> element
    assert text.index("Identified") < text.index("Investigating")
    assert len(re.findall(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">[^<]+ UTC</time>', html)) >= 2
    # components grouped and in order, each with its status
    assert re.search(r"Core .*API Partial outage .*Email Operational .*Dashboard Operational", text)
    assert 'href="/subscribe"' in html
    assert "We cannot reach our records" not in text


def test_the_page_headers_allow_our_one_script_and_caches(
    db: Database, settings: Settings, client: TestClient
) -> None:
    _open(db, settings, title="Slow", impact="minor")
    response = client.get("/status")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["cache-control"].startswith("public, max-age=")
    assert response.headers["x-frame-options"] == "DENY"
    scripts = re.findall(r"<script[^>]*>", response.text)
    assert scripts == ['<script src="/status/local-time.js" defer>']  # no inline script
    assert " style=" not in response.text
    again = client.get("/status", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    js = client.get("/status/local-time.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/status/status.css").headers["content-type"].startswith("text/css")


def test_an_update_changes_the_page_and_its_etag(
    db: Database, settings: Settings, client: TestClient
) -> None:
    incident = _open(db, settings, title="Queue delays", impact="minor", components=["Email"])
    first = client.get("/status")
    _update(db, settings, incident, status="resolved", summary="Delays are over")
    second = client.get("/status", headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200 and second.headers["etag"] != first.headers["etag"]
    text = _text(second.text)
    assert "All Systems Operational" in text and "Open incidents" not in text
    assert "Queue delays" in text  # under the past incidents now


def test_maintenance_upcoming_then_in_progress(db: Database, settings: Settings, client: TestClient) -> None:
    start = datetime.now(UTC) + timedelta(hours=2)
    message = OutageMessage(
        title="Database upgrade",
        kind="maintenance",
        components=["Email"],
        starts_at=start,
        ends_at=start + timedelta(hours=1),
    )
    with db.session() as session:
        maintenance, _, _ = schedule(session, settings, message)
    text = _text(client.get("/status").text)
    upcoming = text[text.index("Upcoming maintenance") :]
    assert "Database upgrade" in upcoming and "Maintenance in progress" not in text
    _update(db, settings, maintenance.id, status="in_progress")
    text = _text(client.get("/status").text)
    assert "Maintenance in progress" in text and "Service Under Maintenance" in text
    assert "Email Under maintenance" in text


def test_the_incident_page_and_a_missing_one(db: Database, settings: Settings, client: TestClient) -> None:
    incident = _open(db, settings, title=EVIL, impact="critical", summary="Everything is down")
    _update(db, settings, incident, status="monitoring", summary="A fix is out")
    response = client.get(f"/status/incidents/{incident}")
    assert response.status_code == 200
    assert "<script>alert" not in response.text
    text = _text(response.text)
    assert text.index("A fix is out") < text.index("Everything is down")
    this_month = datetime.now(UTC).strftime("%Y-%m")
    assert f'href="/status/history/{this_month}"' in response.text
    missing = client.get("/status/incidents/999999")
    assert missing.status_code == 404 and "90 days" in missing.text
    assert missing.headers["cache-control"] == "no-store"


def test_month_pages_list_that_month_and_link_between_months(
    db: Database, settings: Settings, client: TestClient
) -> None:
    incident = _open(db, settings, title="Login failures", impact="major")
    now = datetime.now(UTC)
    this_month = now.strftime("%Y-%m")
    page = client.get(f"/status/history/{this_month}")
    assert page.status_code == 200
    assert f'href="/status/incidents/{incident}"' in page.text
    assert 'rel="prev"' in page.text and 'rel="next"' not in page.text  # nothing after this month
    previous = re.search(r'href="/status/history/(\d{4}-\d\d)" rel="prev"', page.text)
    assert previous is not None
    older = client.get(f"/status/history/{previous.group(1)}")
    assert older.status_code == 200 and "Login failures" not in older.text
    assert f'href="/status/history/{this_month}" rel="next"' in older.text
    assert "kept" not in older.text or "older" in older.text
    long_ago = client.get("/status/history/2001-01")
    assert long_ago.status_code == 200 and "this month is older" in long_ago.text
    assert 'rel="prev"' not in long_ago.text
    for bad in ("2026-13", "26-01", "2026-1", "junk"):
        assert client.get(f"/status/history/{bad}").status_code == 404
    future = (now.replace(day=1) + timedelta(days=40)).strftime("%Y-%m")
    assert client.get(f"/status/history/{future}").status_code == 404


def test_parse_month_and_sections() -> None:
    assert parse_month("2026-12") == (2026, 12)
    assert parse_month("2026-00") is None and parse_month("2026-12x") is None
    sections = component_sections(
        [
            {"id": "g", "name": "Core", "group": True, "position": 1, "components": ["a", "c"]},
            {"id": "a", "name": "API", "group": False, "group_id": "g", "position": 1},
            {"id": "b", "name": "Web", "group": False, "group_id": None, "position": 2},
            {"id": "c", "name": "Email", "group": False, "group_id": "g", "position": 3},
        ]
    )
    assert [(s["name"], [c["name"] for c in s["components"]]) for s in sections] == [
        ("Core", ["API", "Email"]),
        (None, ["Web"]),
    ]


def test_with_the_database_gone_the_page_shows_the_last_snapshot_and_its_age(tmp_path: Path) -> None:
    """The database file is taken away under a running app: the page still answers 200, from this
    process's copy, and says how old it is."""
    path = tmp_path / "status.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    settings = _settings(database.url)
    snapshots.COPIES.items.clear()
    RENDERED.items.clear()
    with database.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    _open(database, settings, title="Before the outage", impact="minor")
    with TestClient(create_app(settings)) as client:
        assert "Before the outage" in client.get("/status").text
        shutil.move(path, tmp_path / "gone.db")  # the database is gone (a new, empty file appears)
        database.dispose()
        get_database(settings).dispose()
        deadline = time.monotonic() + 20
        while "We cannot reach our records" not in (page := client.get("/status")).text:
            assert time.monotonic() < deadline, "the page never said its snapshot is stale"
            time.sleep(0.2)
        assert page.status_code == 200 and "Before the outage" in page.text
        assert page.headers["x-status-snapshot-stale"] == "true"
        assert re.search(r"\(\d+ seconds ago\)", page.text)
    snapshots.COPIES.items.clear()
