"""Hostile input and key hygiene: nested or oversized JSON on every JSON route, revoked keys on open
streams, bootstrap key length, key ids (never key characters) in logs, revoking exactly one key."""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select
from typer.testing import CliRunner

from config import Settings, get_settings
from dispatcher.app import create_app
from dispatcher.auth import Role, create_key, find_key, revoke_key
from dispatcher.cli import app as cli
from dispatcher.domain.errors import ConfigurationError
from dispatcher.startup import check_api_keys
from dispatcher.store.db import Database
from dispatcher.store.models import ApiKey, Incident, Subscriber
from tests.api.conftest import MESSAGE, auth, count


def _json_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every route that takes a body (from the OpenAPI spec), its path parameters filled in."""
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("post", "put", "patch")
    ]


def test_deeply_nested_json_is_a_400_on_every_json_route(
    client: TestClient, keys: dict[str, str], db: Database
) -> None:
    routes = _json_routes(client)
    assert ("POST", "/v1/subscribers/import") in routes and ("POST", "/v1/webhooks/sendgrid") in routes
    deep = b'{"subscribers": ' + b"[" * 5000 + b"]" * 5000 + b"}"  # small, but a RecursionError to parse
    moderate = b"[" * 40 + b"]" * 40
    for method, path in routes:
        key = keys["admin"] if "subscribers" in path else keys["commander"]
        for body in (deep, moderate, b"[" * 3000):
            for content_type in ("application/json", None):
                headers = auth(key) | ({"Content-Type": content_type} if content_type else {})
                response = client.request(method, path, content=body, headers=headers)
                assert response.status_code == 400, (method, path, response.text)
                assert response.json()["error"]["code"] == "malformed_json"
                assert "nests deeper than 32" in response.json()["error"]["message"]
    ok = client.post(
        "/v1/incidents",
        json={**MESSAGE, "components": [["not", "a", "name"]]},
        headers=auth(keys["commander"]),
    )
    assert ok.status_code == 422  # shallow nesting is the validator's to judge
    assert count(db, Incident) == 0 and count(db, Subscriber) == 0


def test_oversized_json_is_a_413_on_every_json_route(client: TestClient, keys: dict[str, str]) -> None:
    big = b'{"title": "' + b"x" * 30_000 + b'"}'  # the fixture's limit is 20,000 bytes
    for method, path in _json_routes(client):
        response = client.request(
            method, path, content=big, headers=auth(keys["commander"]) | {"Content-Type": "application/json"}
        )
        assert response.status_code == 413, (method, path, response.text)
        assert response.json()["error"]["code"] == "body_too_large"


def test_a_revoked_keys_open_stream_ends_within_a_heartbeat(
    settings: Settings, keys: dict[str, str], db: Database
) -> None:
    fast = settings.model_copy(update={"sse_heartbeat_s": 0.3})
    lines: list[str] = []
    with TestClient(create_app(fast)) as client:
        opened = client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["commander"]))
        broadcast_id = opened.json()["broadcast"]["id"]  # no worker: it never completes by itself

        def read() -> None:
            with client.stream(
                "GET", f"/v1/broadcasts/{broadcast_id}/events", headers=auth(keys["viewer"])
            ) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("event: progress") and len(lines) < 3:
                        with db.session() as session:
                            row = find_key(session, keys["viewer"])
                            assert row is not None and revoke_key(session, row.id)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive(), f"the stream outlived its revoked key: {lines}"
    assert "event: error" in lines and any('"unauthorized"' in line for line in lines), lines


def test_bootstrap_keys_need_32_characters_and_the_error_names_the_setting_not_the_key() -> None:
    short = "commander:" + "k" * 31
    with pytest.raises(ConfigurationError) as raised:
        check_api_keys(Settings(api_keys=SecretStr(short)))
    assert raised.value.fields == ["DISPATCHER_API_KEYS"]
    assert "DISPATCHER_API_KEYS" in raised.value.message and "32" in raised.value.message
    assert "k" * 31 not in raised.value.message
    check_api_keys(Settings(api_keys=SecretStr("commander:" + "k" * 32)))


def test_the_access_log_names_the_key_by_id(
    client: TestClient, keys: dict[str, str], db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dispatcher.access"):
        assert client.get("/v1/broadcasts/999", headers=auth(keys["viewer"])).status_code == 404
    with db.session() as session:
        viewer = find_key(session, keys["viewer"])
        assert viewer is not None
        viewer_id = viewer.id
    records: list[Any] = [r for r in caplog.records if r.name == "dispatcher.access"]
    assert [r.api_key for r in records] == [viewer_id]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert keys["viewer"][:6] not in text


def test_keys_create_before_the_first_up_works_on_the_embedded_default_and_explains_elsewhere(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newcomer's first command may be `keys create`, before `up` ever made the schema: on the
    embedded default it brings the schema up itself; on a configured database that has none it
    says which command does, instead of a traceback (`no such table: api_keys`)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DISPATCHER_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    created = CliRunner().invoke(cli, ["keys", "create", "--role", "commander"])
    assert created.exit_code == 0, created.output
    database = Database(f"sqlite:///{tmp_path / 'data' / 'dispatcher.db'}")
    with database.session() as session:
        assert find_key(session, created.stdout.strip()) is not None
    database.dispose()

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    refused = CliRunner().invoke(cli, ["keys", "create", "--role", "commander"])
    assert refused.exit_code == 1
    assert "run `outage-dispatcher db upgrade` first" in refused.stderr
    assert "Traceback" not in refused.output and not refused.stdout.strip()
    get_settings.cache_clear()


def test_keys_create_prints_the_id_and_revoke_takes_it_and_revokes_exactly_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.session() as session:  # two keys sharing a display prefix
        create_key(session, Role.VIEWER, key="od_same8-" + "a" * 32)
        create_key(session, Role.VIEWER, key="od_same8-" + "b" * 32)
    env = {"DATABASE_URL": db.url}
    monkeypatch.setenv("DATABASE_URL", db.url)
    get_settings.cache_clear()  # the CLI reads the one settings object
    created = CliRunner().invoke(cli, ["keys", "create", "--role", "viewer"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    with db.session() as session:
        key_id = find_key(session, key).id  # type: ignore[union-attr]
    assert f"key id {key_id}" in created.stderr and key not in created.stderr
    assert "shown only this once" in created.stderr and f"keys revoke {key_id}" in created.stderr
    as_json = CliRunner().invoke(
        cli, ["keys", "create", "--role", "admin", "--label", "ops", "--json"], env=env
    )
    made = json.loads(as_json.stdout)
    with db.session() as session:
        assert find_key(session, made["key"]).id == made["id"]  # type: ignore[union-attr]
    assert (made["role"], made["label"]) == ("admin", "ops")
    with db.session() as session:
        shared = session.scalars(select(ApiKey.id).where(ApiKey.prefix == "od_same8")).all()
    assert len(shared) == 2
    revoked = CliRunner().invoke(cli, ["keys", "revoke", str(shared[0])], env=env)
    assert revoked.exit_code == 0 and f"revoked key {shared[0]}" in revoked.output
    with db.session() as session:
        assert find_key(session, "od_same8-" + "a" * 32) is None
        assert find_key(session, "od_same8-" + "b" * 32) is not None
        assert find_key(session, key) is not None
    by_prefix = CliRunner().invoke(cli, ["keys", "revoke", "od_same8"], env=env)
    assert by_prefix.exit_code != 0  # a prefix is not an id
    again = CliRunner().invoke(cli, ["keys", "revoke", str(shared[0])], env=env)
    assert again.exit_code == 1 and "no active key" in again.output
    monkeypatch.undo()
    get_settings.cache_clear()
