"""The real app on the real `db` fixture (SQLite and PostgreSQL), keys of every role, and a signer
holding the key the sandbox signs SendGrid events with (derived from the run's sandbox secret)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from channels.sandbox.secret import event_webhook_key
from channels.sandbox.signing import EventWebhookSigner
from config import Settings
from dispatcher.app import create_app, create_callbacks_app
from dispatcher.auth import Role, create_key
from dispatcher.engine.broker import QUEUES
from dispatcher.store.db import Database

PUBLIC_URL = "https://dispatch.example.test"


@pytest.fixture(scope="session")
def signer() -> EventWebhookSigner:
    return EventWebhookSigner(event_webhook_key(os.environ["DISPATCHER_SANDBOX_SECRET"]))


@pytest.fixture
def settings(db: Database, signer: EventWebhookSigner) -> Settings:
    return Settings(
        database_url=db.url,
        public_url=PUBLIC_URL,
        max_body_bytes=20_000,
    )


@pytest.fixture
def keys(db: Database) -> dict[str, str]:
    with db.session() as session:
        return {role.value: create_key(session, role, label=f"test {role.value}") for role in Role}


@pytest.fixture
def client(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
    purge_queues(settings)


def doors(which: str, api: TestClient) -> Iterator[TestClient]:
    """Where the providers post: the API itself (`which` "api"), or the providers' door alone on
    the same settings, as `up` serves them (`create_callbacks_app`, its own applier beside the API's)."""
    if which == "api":
        yield api
        return
    with TestClient(create_callbacks_app(api.app.state.settings)) as hooks:  # type: ignore[attr-defined]
        yield hooks


@pytest.fixture(params=["api", "callbacks"])
def door(request: pytest.FixtureRequest, client: TestClient) -> Iterator[TestClient]:
    yield from doors(request.param, client)


def purge_queues(settings: Settings) -> None:
    """Tasks the API queued with no worker running must not reach a later test's worker."""
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(*(settings.redis_prefix + q for q in QUEUES))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def count(db: Database, model: Any) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


MESSAGE: dict[str, Any] = {
    "title": "Checkout is failing",
    "impact": "major",
    "components": ["Checkout"],
    "summary": "Card payments fail for some customers.",
    "status_page_url": "https://status.example.com/incidents/1",
    "support_contacts": [{"label": "Support", "email": "help@example.com"}],
}
