"""A database that does not answer is a 503 `unavailable` with Retry-After, never a 500: the
transaction was rolled back, so the client (or a provider retrying a callback) may send it again."""

from __future__ import annotations

from fastapi.testclient import TestClient

from config import Settings
from dispatcher.app import create_app
from tests.api.conftest import MESSAGE
from tests.conftest import free_port


def test_a_database_that_does_not_answer_is_a_503_with_retry_after() -> None:
    closed = free_port()  # nothing listens there
    settings = Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/none")
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/incidents", json=MESSAGE, headers={"Authorization": "Bearer od_x"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    assert answer.headers["Retry-After"] == "5"
