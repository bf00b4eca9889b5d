"""The maintenance routes and CLI over real HTTP plumbing (FastAPI's test client, the real app)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from dispatcher.api.maintenances import router
from dispatcher.app import create_app
from dispatcher.auth import bootstrap_keys
from dispatcher.store.db import Database
from tests.scheduler.conftest import settings_for

COMMANDER, VIEWER = "c" * 32, "v" * 32
H = {"Authorization": f"Bearer {COMMANDER}"}


def _client(db: Database) -> TestClient:
    with db.session() as session:
        bootstrap_keys(session, f"commander:{COMMANDER},viewer:{VIEWER}")
    app = create_app(settings_for(db, maintenance_reminder_offsets_s=[86400, 3600]))
    if not any(getattr(r, "path", "").startswith("/v1/maintenances") for r in app.routes):
        app.include_router(router)  # until the lead mounts it in app.py
    return TestClient(app)


def test_schedule_move_cancel_and_list(db: Database) -> None:
    client = _client(db)
    starts = (datetime.now(UTC) + timedelta(hours=10)).replace(microsecond=0)
    body = {
        "title": "Disk swap",
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=1)).isoformat(),
    }
    created = client.post("/v1/maintenances", json=body, headers=H)
    assert created.status_code == 201, created.text
    plan = [(n["event"], n["state"]) for n in created.json()["notices"]]
    assert plan == [
        ("maintenance_reminder", "skipped"),  # 24 h before: already past
        ("maintenance_scheduled", "sent"),
        ("maintenance_reminder", "pending"),
        ("maintenance_started", "pending"),
        ("maintenance_completed", "pending"),
    ]
    mid = created.json()["id"]
    moved = client.patch(
        f"/v1/maintenances/{mid}",
        json={
            "starts_at": (starts + timedelta(days=2)).isoformat(),
            "ends_at": (starts + timedelta(days=2, hours=1)).isoformat(),
        },
        headers=H,
    )
    assert moved.status_code == 200, moved.text
    states = [(n["event"], n["state"]) for n in moved.json()["notices"]]
    assert ("maintenance_rescheduled", "sent") in states and states.count(
        ("maintenance_reminder", "pending")
    ) == 2
    cancelled = client.post(f"/v1/maintenances/{mid}/cancel", headers=H)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert all(n["state"] != "pending" for n in cancelled.json()["notices"])
    again = client.post(f"/v1/maintenances/{mid}/cancel", headers=H)
    assert again.status_code == 409
    listed = client.get("/v1/maintenances", headers={"Authorization": f"Bearer {VIEWER}"})
    assert [m["id"] for m in listed.json()["items"]] == [mid]
    assert (
        client.post("/v1/maintenances", json=body, headers={"Authorization": f"Bearer {VIEWER}"}).status_code
        == 403
    )
    bad = client.post("/v1/maintenances", json={"title": "x", "starts_at": starts.isoformat()}, headers=H)
    assert bad.status_code == 422
