"""Who may call what: 401 without a valid key, 403 for the wrong role; health and metrics are open."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dispatcher.auth import find_key, revoke_key
from dispatcher.store.db import Database
from dispatcher.store.models import Incident
from tests.api.conftest import MESSAGE, auth, count

SUB = {"lists": ["customers"], "email": "a@example.com"}


def test_no_unknown_or_malformed_key_is_401(client: TestClient) -> None:
    for headers in ({}, auth("od_not-a-key"), {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        response = client.get("/v1/broadcasts/1", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"


def test_a_revoked_key_is_401(client: TestClient, keys: dict[str, str], db: Database) -> None:
    assert client.get("/v1/broadcasts/1", headers=auth(keys["viewer"])).status_code == 404
    with db.session() as session:
        assert revoke_key(session, find_key(session, keys["viewer"]).id) is True  # type: ignore[union-attr]
    assert client.get("/v1/broadcasts/1", headers=auth(keys["viewer"])).status_code == 401


def test_roles(client: TestClient, keys: dict[str, str], db: Database) -> None:
    matrix = [  # (method, path, body, {role: expected status})
        ("POST", "/v1/incidents", MESSAGE, {"commander": 201, "viewer": 403, "admin": 403}),
        ("POST", "/v1/preview", MESSAGE, {"commander": 200, "viewer": 403, "admin": 403}),
        ("GET", "/v1/broadcasts/999", None, {"commander": 404, "viewer": 404, "admin": 404}),
        ("GET", "/v1/incidents/999", None, {"commander": 404, "viewer": 404, "admin": 404}),
        ("PUT", "/v1/subscribers/s1", SUB, {"commander": 403, "viewer": 403, "admin": 201}),
        ("GET", "/v1/subscribers", None, {"commander": 403, "viewer": 403, "admin": 200}),
        ("DELETE", "/v1/subscribers/s1", None, {"commander": 403, "viewer": 403, "admin": 204}),
    ]
    for method, path, body, expected in matrix:
        for role, status in expected.items():
            response = client.request(method, path, json=body, headers=auth(keys[role]))
            assert response.status_code == status, (method, path, role, response.text)
            if status == 403:
                assert response.json()["error"]["code"] == "forbidden"
    assert count(db, Incident) == 1


def test_health_and_metrics_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "dispatcher_queue_depth" in metrics.text and "dispatcher_http_requests_total" in metrics.text
