"""The Statuspage-compatible JSON (`/api/v2/*.json`) through the real app: every endpoint's field
names and types exactly as Statuspage's public v2 documentation gives them (the schema below is
written from it: doers.statuspage.io/api/v2 and the sample responses of metastatuspage.com/api/v2),
the status following incidents and maintenance, caching and 304s, CORS, the per-client limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import AfterValidator, BaseModel, ConfigDict

from config import Settings
from dispatcher.app import create_app
from dispatcher.engine import snapshot as snapshots
from dispatcher.public import status_limit
from dispatcher.store.db import Database
from dispatcher.store.models import SubscriberList
from dispatcher.supervisor import free_port
from tests.api.conftest import PUBLIC_URL, auth


def _timestamp(value: str) -> str:
    """Statuspage's times are ISO 8601 with a zone."""
    assert datetime.fromisoformat(value).tzinfo is not None, value
    return value


Timestamp = Annotated[str, AfterValidator(_timestamp)]


class Strict(BaseModel):
    """Exactly these names (none missing, none extra), exactly these JSON types."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Page(Strict):
    id: str
    name: str
    url: str
    time_zone: str
    updated_at: Timestamp


class Status(Strict):
    indicator: Literal["none", "minor", "major", "critical", "maintenance"]
    description: str


ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]


class Component(Strict):
    id: str
    name: str
    status: ComponentStatus
    created_at: Timestamp
    updated_at: Timestamp
    position: int
    description: str | None
    showcase: bool
    start_date: str | None
    group_id: str | None
    page_id: str
    group: bool
    only_show_if_degraded: bool
    components: list[str] | None = None  # a group's members' ids (groups only)


class AffectedComponent(Strict):
    code: str
    name: str
    old_status: ComponentStatus | None
    new_status: ComponentStatus | None


class IncidentUpdate(Strict):
    id: str
    status: str
    body: str
    incident_id: str
    created_at: Timestamp
    updated_at: Timestamp
    display_at: Timestamp
    affected_components: list[AffectedComponent] | None
    deliver_notifications: bool
    custom_tweet: str | None
    tweet_id: str | None


class Incident(Strict):
    id: str
    name: str
    status: Literal["investigating", "identified", "monitoring", "resolved", "postmortem"]
    created_at: Timestamp
    updated_at: Timestamp
    monitoring_at: Timestamp | None
    resolved_at: Timestamp | None
    impact: Literal["none", "minor", "major", "critical"]
    shortlink: str
    started_at: Timestamp
    page_id: str
    incident_updates: list[IncidentUpdate]
    components: list[Component]


class ScheduledMaintenance(Incident):
    status: Literal["scheduled", "in_progress", "verifying", "completed"]  # type: ignore[assignment]
    impact: Literal["none", "minor", "major", "critical", "maintenance"]  # type: ignore[assignment]
    scheduled_for: Timestamp
    scheduled_until: Timestamp | None


class SummaryDoc(Strict):
    page: Page
    components: list[Component]
    incidents: list[Incident]
    scheduled_maintenances: list[ScheduledMaintenance]
    status: Status


class StatusDoc(Strict):
    page: Page
    status: Status


class ComponentsDoc(Strict):
    page: Page
    components: list[Component]


class IncidentsDoc(Strict):
    page: Page
    incidents: list[Incident]


class MaintenancesDoc(Strict):
    page: Page
    scheduled_maintenances: list[ScheduledMaintenance]


SCHEMAS: dict[str, type[Strict]] = {
    "/api/v2/summary.json": SummaryDoc,
    "/api/v2/status.json": StatusDoc,
    "/api/v2/components.json": ComponentsDoc,
    "/api/v2/incidents.json": IncidentsDoc,
    "/api/v2/incidents/unresolved.json": IncidentsDoc,
    "/api/v2/scheduled-maintenances.json": MaintenancesDoc,
    "/api/v2/scheduled-maintenances/upcoming.json": MaintenancesDoc,
    "/api/v2/scheduled-maintenances/active.json": MaintenancesDoc,
}
COMPONENTS = [
    {"name": "Checkout", "description": "Payments", "group": "Shop", "order": 1},
    {"name": "Search", "group": "Shop", "order": 2},
    {"name": "API", "order": 3},
]


@pytest.fixture
def status_client(db: Database, keys: dict[str, str]) -> Iterator[TestClient]:
    snapshots.COPIES.items.clear()
    with db.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    settings = Settings(database_url=db.url, public_url=PUBLIC_URL, status_components=COMPONENTS)
    with TestClient(create_app(settings)) as client:
        yield client
    snapshots.COPIES.items.clear()


def get(client: TestClient, path: str) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    SCHEMAS[path].model_validate(response.json())
    return response.json()


def statuses(body: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in body["components"]}


def open_incident(client: TestClient, key: str, **fields: Any) -> int:
    body = {"title": "Checkout is failing", "impact": "major", "components": ["Checkout"], **fields}
    response = client.post("/v1/incidents", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return int(response.json()["incident"]["id"])


def update(client: TestClient, key: str, incident_id: int, **changes: Any) -> None:
    response = client.post(f"/v1/incidents/{incident_id}/updates", json=changes, headers=auth(key))
    assert response.status_code == 201, response.text


def test_every_endpoint_matches_the_statuspage_schema_with_everything_populated(
    status_client: TestClient, keys: dict[str, str]
) -> None:
    commander = keys["commander"]
    for path in SCHEMAS:  # empty lists, all operational
        get(status_client, path)
    open_incident(status_client, commander)
    resolved = open_incident(status_client, commander, title="Search slow", impact="minor", components=[])
    update(status_client, commander, resolved, status="monitoring", summary="Watching")
    update(status_client, commander, resolved, status="resolved")
    start = datetime.now(UTC) + timedelta(days=1)
    for title in ("Upgrade", "Later upgrade"):
        response = status_client.post(
            "/v1/maintenances",
            json={
                "title": title,
                "kind": "maintenance",
                "components": ["API"],
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
            },
            headers=auth(commander),
        )
        assert response.status_code == 201, response.text
    update(status_client, commander, response.json()["id"], status="in_progress")
    bodies = {path: get(status_client, path) for path in SCHEMAS}
    summary = bodies["/api/v2/summary.json"]
    assert [i["name"] for i in summary["incidents"]] == ["Checkout is failing"]  # unresolved only
    assert len(bodies["/api/v2/incidents.json"]["incidents"]) == 2
    assert [
        m["name"] for m in bodies["/api/v2/scheduled-maintenances/upcoming.json"]["scheduled_maintenances"]
    ] == ["Upgrade"]
    assert [
        m["name"] for m in bodies["/api/v2/scheduled-maintenances/active.json"]["scheduled_maintenances"]
    ] == ["Later upgrade"]
    assert len(summary["scheduled_maintenances"]) == 2
    groups = [c for c in summary["components"] if c["group"]]
    assert [(g["name"], len(g["components"])) for g in groups] == [("Shop", 2)]
    assert summary["page"]["url"] == PUBLIC_URL + "/status"


def test_an_open_incident_degrades_its_components_and_resolving_restores_them(
    status_client: TestClient, keys: dict[str, str]
) -> None:
    commander = keys["commander"]
    incident = open_incident(status_client, commander, impact="critical")
    body = get(status_client, "/api/v2/summary.json")
    assert statuses(body) == {
        "Shop": "major_outage",
        "Checkout": "major_outage",
        "Search": "operational",
        "API": "operational",
    }
    assert body["status"] == {"indicator": "critical", "description": "Major System Outage"}
    update(status_client, commander, incident, impact="minor", status="identified")
    body = get(status_client, "/api/v2/status.json")
    assert body["status"] == {"indicator": "minor", "description": "Minor Service Outage"}
    update(status_client, commander, incident, status="resolved")
    body = get(status_client, "/api/v2/summary.json")
    assert set(statuses(body).values()) == {"operational"}
    assert body["status"] == {"indicator": "none", "description": "All Systems Operational"}
    assert body["incidents"] == []
    assert get(status_client, "/api/v2/incidents.json")["incidents"][0]["status"] == "resolved"


def test_active_maintenance_is_under_maintenance(status_client: TestClient, keys: dict[str, str]) -> None:
    start = datetime.now(UTC) + timedelta(hours=3)
    response = status_client.post(
        "/v1/maintenances",
        json={
            "title": "Upgrade",
            "kind": "maintenance",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
        },
        headers=auth(keys["commander"]),
    )
    assert response.status_code == 201, response.text
    assert set(statuses(get(status_client, "/api/v2/components.json")).values()) == {"operational"}
    update(status_client, keys["commander"], response.json()["id"], status="in_progress")
    body = get(status_client, "/api/v2/summary.json")
    assert set(statuses(body).values()) == {"under_maintenance"}  # it names no component: all of them
    assert body["status"] == {"indicator": "maintenance", "description": "Service Under Maintenance"}


def test_caching_headers_and_304s(status_client: TestClient, keys: dict[str, str]) -> None:
    first = status_client.get("/api/v2/summary.json")
    assert first.headers["cache-control"] == "public, max-age=30"
    assert first.headers["access-control-allow-origin"] == "*"
    assert first.headers["content-type"].startswith("application/json")
    assert "x-status-snapshot-stale" not in first.headers and int(first.headers["x-status-snapshot-age"]) >= 0
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = status_client.get("/api/v2/summary.json", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert (
        status_client.get("/api/v2/summary.json", headers={"If-Modified-Since": modified}).status_code == 304
    )
    assert status_client.get("/api/v2/status.json", headers={"If-None-Match": etag}).status_code == 200
    open_incident(status_client, keys["commander"])
    changed = status_client.get("/api/v2/summary.json", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert status_client.get("/api/v2/summary.json", headers={"If-Modified-Since": modified}).status_code in (
        200,
        304,  # the same second: Last-Modified has one-second resolution, the ETag decides
    )


def test_the_limit_is_per_client_and_generous_by_default(db: Database) -> None:
    snapshots.COPIES.items.clear()
    settings = Settings(
        database_url=db.url,
        status_requests_per_hour=3,
        redis_prefix=f"{Settings().redis_prefix}limit{id(db)}:",
    )
    with TestClient(create_app(settings)) as client:
        assert [client.get("/api/v2/status.json").status_code for _ in range(4)] == [200, 200, 200, 429]
        limited = client.get("/api/v2/status.json")
        assert int(limited.headers["retry-after"]) > 0 and limited.json()["error"]["code"] == "rate_limited"
        other = client.get("/api/v2/status.json", headers={"X-Forwarded-For": "198.51.100.7"})
        assert other.status_code == 429  # no trusted proxy: the header is not believed
    assert Settings().status_requests_per_hour >= 3600


def test_a_dead_redis_keeps_the_routes_up_and_the_limit_local(db: Database) -> None:
    snapshots.COPIES.items.clear()
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings(database_url=db.url, redis_url=dead, status_requests_per_hour=3)
    with TestClient(create_app(settings)) as client:
        assert [client.get("/api/v2/summary.json").status_code for _ in range(3)] == [200, 200, 200]
        assert client.get("/status").status_code == 429  # counted in the process, Redis or not
        bad_date = client.get("/api/v2/summary.json", headers={"If-Modified-Since": "not a date"})
        assert bad_date.status_code == 429
        limit: status_limit.StatusLimit = client.app.state.status_limit
        limit.flush()  # fails against the dead Redis: the counts are kept, not lost
        assert limit.hit("testclient") is not None


def test_the_limit_is_shared_by_every_process_through_redis(db: Database) -> None:
    prefix = f"{Settings().redis_prefix}shared{uuid.uuid4().hex[:8]}:"  # the run's, cleaned up with it
    settings = Settings(database_url=db.url, status_requests_per_hour=4, redis_prefix=prefix)
    first, second = status_limit.StatusLimit(settings), status_limit.StatusLimit(settings)
    try:
        assert [first.hit("198.51.100.9") for _ in range(3)] == [None, None, None]
        first.flush()
        assert second.hit("198.51.100.9") is None  # this process has seen one request
        second.flush()  # and learns the other's three: four in all, the limit
        assert second.hit("198.51.100.9") is not None
        assert second.hit("203.0.113.5") is None  # another client is untouched
        first.flush()  # a heavy client is re-read even when this process saw nothing new of it
        assert first.hit("198.51.100.9") is not None
    finally:
        first.close()
        second.close()


def test_head_answers_like_get(status_client: TestClient) -> None:
    for path in ("/status", "/history.atom", "/api/v2/summary.json", "/status/history"):
        got, head = status_client.get(path), status_client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["etag"] == got.headers["etag"], path
        assert head.headers["content-type"] == got.headers["content-type"], path


def test_the_access_log_keeps_only_the_status_routes_failures(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots.COPIES.items.clear()
    settings = Settings(
        database_url=db.url,
        status_requests_per_hour=1,
        redis_prefix=f"{Settings().redis_prefix}quiet{uuid.uuid4().hex[:8]}:",
    )
    with TestClient(create_app(settings)) as client, caplog.at_level("INFO", logger="dispatcher.access"):
        assert client.get("/api/v2/status.json").status_code == 200
        assert client.get("/api/v2/status.json").status_code == 429
        assert client.get("/healthz").status_code == 200
    lines = [(r.path, r.status) for r in caplog.records if r.name == "dispatcher.access"]  # type: ignore[attr-defined]
    assert ("/api/v2/status.json", 429) in lines and ("/healthz", 200) in lines
    assert ("/api/v2/status.json", 200) not in lines
