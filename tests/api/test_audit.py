"""The audit log: every write through the API with a key, refusals included, read back by admins at
GET /v1/audit; CLI writes that bypass the API too. Never a key, never a body."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from config import Settings, get_settings
from dispatcher.app import create_app
from dispatcher.auth import Role, create_key
from dispatcher.cli import app as cli
from dispatcher.store.db import Database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import ApiKey, AuditEntry, Incident
from tests.api.conftest import MESSAGE, auth, count
from tests.conftest import fresh_database_url


def entries(client: TestClient, admin: str, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/v1/audit", params=params, headers=auth(admin))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["entries"])


def test_a_write_is_audited_with_prefix_role_target_client_and_request_id(
    client: TestClient, keys: dict[str, str]
) -> None:
    opened = client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["commander"]))
    assert opened.status_code == 201
    incident_id = opened.json()["incident"]["id"]
    updated = client.post(
        f"/v1/incidents/{incident_id}/updates",
        json={"status": "identified"},
        headers={**auth(keys["commander"]), "X-Request-Id": "proxy-42.a"},
    )
    assert updated.status_code == 201 and updated.headers["X-Request-Id"] == "proxy-42.a"
    client.get(f"/v1/incidents/{incident_id}", headers=auth(keys["viewer"]))  # a read: not audited
    found = entries(client, keys["admin"])
    assert [(e["action"], e["target"], e["status"]) for e in found] == [
        ("incident.update", f"incident {incident_id}", 201),
        ("incident.open", None, 201),
    ]
    newest, oldest = found
    assert newest["actor"] == keys["commander"][:8] and newest["role"] == "commander"
    assert newest["request_id"] == "proxy-42.a"
    assert oldest["request_id"] == opened.headers["X-Request-Id"] and len(oldest["request_id"]) == 32
    assert newest["client"] == "testclient"  # the TestClient's peer address
    assert isinstance(newest["key_id"], int)
    flat = repr(found)
    assert keys["commander"] not in flat and "help@example.com" not in flat


def test_refusals_of_a_key_are_audited_and_requests_without_a_valid_key_or_from_providers_are_not(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    assert client.post("/v1/incidents", json=MESSAGE, headers=auth("od_" + "x" * 40)).status_code == 401
    assert client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["viewer"])).status_code == 403
    bad = {**MESSAGE, "support_contacts": [{"label": "S", "email": "secret-person@example.com", "x": 1}]}
    assert client.post("/v1/incidents", json=bad, headers=auth(keys["commander"])).status_code == 422
    big = {**MESSAGE, "summary": "x" * (settings.max_body_bytes + 1)}
    assert client.post("/v1/incidents", json=big, headers=auth(keys["commander"])).status_code == 413
    assert client.put("/v1/subscribers/nobody", json={}, headers=auth(keys["admin"])).status_code == 422
    assert client.delete("/v1/suppressions/99999", headers=auth(keys["admin"])).status_code == 404
    assert client.post("/v1/incidents", json=MESSAGE).status_code == 401  # no key at all
    assert client.post("/v1/webhooks/twilio", data={"MessageSid": "SM1"}).status_code == 403
    found = entries(client, keys["admin"])
    assert (
        [(e["action"], e["actor"], e["role"], e["status"], e["target"]) for e in found]
        == [
            ("suppression.remove", keys["admin"][:8], "admin", 404, "suppression 99999"),
            ("subscriber.put", keys["admin"][:8], "admin", 422, "subscriber nobody"),
            ("incident.open", keys["commander"][:8], "commander", 413, None),  # refused before auth
            ("incident.open", keys["commander"][:8], "commander", 422, None),
            ("incident.open", keys["viewer"][:8], "viewer", 403, None),
        ]
    )
    assert "secret-person" not in repr(found)


def test_audit_reads_are_admin_only_paged_filtered_and_name_bad_parameters(
    client: TestClient, keys: dict[str, str]
) -> None:
    for _ in range(3):
        client.post("/v1/incidents", json={}, headers=auth(keys["commander"]))  # 422, audited
    client.post("/v1/preview", json=MESSAGE, headers=auth(keys["commander"]))  # writes nothing: not
    client.delete("/v1/subscribers/nobody", headers=auth(keys["admin"]))
    for role in ("viewer", "commander"):
        assert client.get("/v1/audit", headers=auth(keys[role])).status_code == 403
    assert client.get("/v1/audit").status_code == 401
    first = client.get("/v1/audit", params={"limit": 2}, headers=auth(keys["admin"])).json()
    second = client.get(
        "/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth(keys["admin"])
    ).json()
    ids = [e["id"] for e in first["entries"] + second["entries"]]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True) and second["next_cursor"] is None
    assert [e["action"] for e in entries(client, keys["admin"], action="incident.open")] == [
        "incident.open"
    ] * 3
    assert [e["action"] for e in entries(client, keys["admin"], actor=keys["admin"][:8])] == [
        "subscriber.delete"
    ]
    assert entries(client, keys["admin"], actor="od_nobody") == []
    for params, field in (
        ({"cursor": "bogus"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"actor": ""}, "actor"),
        ({"action": "x" * 101}, "action"),
    ):
        answer = client.get("/v1/audit", params=params, headers=auth(keys["admin"]))
        assert answer.status_code == 422, params
        assert answer.json()["error"]["fields"] == [field]


def test_an_audit_write_that_fails_leaves_the_answer_as_it_was(caplog: pytest.LogCaptureFixture) -> None:
    database = Database(fresh_database_url("sqlite", "audit_broken"))
    upgrade(database)
    with database.session() as session:
        key = create_key(session, Role.COMMANDER)
        session.execute(text("DROP TABLE audit_log"))
    settings = Settings(database_url=database.url, max_body_bytes=20_000)
    with TestClient(create_app(settings)) as client, caplog.at_level(logging.WARNING):
        opened = client.post("/v1/incidents", json=MESSAGE, headers=auth(key))
    assert opened.status_code == 201
    assert count(database, Incident) == 1
    assert any(
        "could not write the audit entry for POST /v1/incidents" in r.getMessage() for r in caplog.records
    )
    database.dispose()


def test_cli_writes_that_bypass_the_api_are_audited_as_cli(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"DATABASE_URL": db.url}
    monkeypatch.setenv("DATABASE_URL", db.url)
    get_settings.cache_clear()
    try:
        created = CliRunner().invoke(cli, ["keys", "create", "--role", "viewer"], env=env)
        assert created.exit_code == 0, created.output
        with db.session() as session:
            key_id = session.scalar(select(ApiKey.id))
        assert CliRunner().invoke(cli, ["keys", "revoke", str(key_id)], env=env).exit_code == 0
        assert CliRunner().invoke(cli, ["keys", "revoke", str(key_id)], env=env).exit_code == 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    key = created.stdout.strip()
    with db.session() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(r.actor, r.role, r.action, r.target, r.status) for r in rows] == [
        ("cli", None, "keys.create", f"key {key_id}", 201),
        ("cli", None, "keys.revoke", f"key {key_id}", 200),
        ("cli", None, "keys.revoke", f"key {key_id}", 404),
    ]
    assert all("@" in (r.client or "") and r.request_id for r in rows)
    assert key[:8] not in repr([r.__dict__ for r in rows])


def test_behind_our_own_proxies_the_client_is_the_address_the_outermost_one_saw(
    db: Database, keys: dict[str, str]
) -> None:
    settings = Settings(database_url=db.url, trusted_proxy_hops=1, max_body_bytes=20_000)
    with TestClient(create_app(settings)) as client:
        forwarded = {**auth(keys["admin"]), "X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
        client.delete("/v1/subscribers/nobody", headers=forwarded)  # a client may prepend anything
        found = entries(client, keys["admin"])
    assert [e["client"] for e in found] == ["203.0.113.9"]


def test_a_cli_migration_that_moves_the_revision_is_audited(monkeypatch: pytest.MonkeyPatch) -> None:
    database = Database(fresh_database_url("sqlite", "audit_migrate"))
    monkeypatch.setenv("DATABASE_URL", database.url)
    get_settings.cache_clear()
    try:
        for _ in range(2):  # the second run moves nothing, and records nothing
            done = CliRunner().invoke(cli, ["db", "upgrade"], env={"DATABASE_URL": database.url})
            assert done.exit_code == 0, done.output
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    with database.session() as session:
        rows = session.scalars(select(AuditEntry)).all()
    assert [(r.actor, r.action, r.status) for r in rows] == [("cli", "db.upgrade", 200)]
    assert rows[0].target is not None and rows[0].target.startswith("revision None -> ")
    database.dispose()
