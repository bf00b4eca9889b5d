"""Twenty SSE clients of one broadcast on a real uvicorn API process, with a real Celery worker and
the sandbox: the API reads the broadcast's progress with one reader while they are connected (its
/metrics gauges say so), every client gets the `completed` event, and the reader is gone after;
a client that leaves early, the last of its broadcast, takes the reader with it."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.auth import Role, create_key
from dispatcher.store.db import Database
from tests.api.conftest import MESSAGE, auth
from tests.harness import Harness

pytestmark = pytest.mark.slow

CLIENTS = 20
WAIT_S = 120  # guards against a hang, never a measure of speed


@pytest.fixture
def api_url(harness: Harness, tmp_path: Path) -> Iterator[str]:
    url, proc = harness.api(tmp_path / "api.log", sendgrid_events=False)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def gauges(url: str) -> tuple[int, int]:
    """The API's progress readers and subscribers, from its /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {
        name: int(float(value))
        for name, value in re.findall(r"^dispatcher_progress_(readers|subscribers) ([0-9.e+]+)$", text, re.M)
    }
    return found["readers"], found["subscribers"]


def wait_for(url: str, readers: int, subscribers: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while (seen := gauges(url)) != (readers, subscribers):
        assert time.monotonic() < deadline, f"readers, subscribers: {seen}, not {(readers, subscribers)}"
        time.sleep(0.1)


def follow(url: str, key: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    """One SSE client to its end, its events (name, data) kept in `into`."""
    name = ""
    timeout = httpx.Timeout(10, read=WAIT_S)
    with httpx.stream("GET", url, headers=auth(key), timeout=timeout) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                into.append((name, json.loads(line.split(":", 1)[1])))


def test_twenty_streams_of_a_broadcast_share_one_reader(api_url: str, harness: Harness, db: Database) -> None:
    with db.session() as session:
        keys = {role: create_key(session, role) for role in Role}
    people = [
        {"external_id": f"p{i}", "lists": ["admins" if i < 2 else "customers"], "email": f"p{i}@example.com"}
        for i in range(6)
    ]
    imported = httpx.post(
        f"{api_url}/v1/subscribers/import", json={"subscribers": people}, headers=auth(keys[Role.ADMIN])
    )
    assert imported.status_code == 200 and imported.json()["imported"] == len(people), imported.text
    opened = httpx.post(
        f"{api_url}/v1/incidents", json={**MESSAGE, "channels": ["email"]}, headers=auth(keys[Role.COMMANDER])
    )
    assert opened.status_code == 201, opened.text
    broadcast_id = opened.json()["broadcast"]["id"]  # no worker yet: it waits, queued, for the clients
    assert gauges(api_url) == (0, 0)

    # one client that leaves after its first event takes the reader with it
    stream_url = f"{api_url}/v1/broadcasts/{broadcast_id}/events"
    with httpx.stream("GET", stream_url, headers=auth(keys[Role.VIEWER]), timeout=10) as response:
        lines = response.iter_lines()  # kept: a dropped line iterator closes the response
        first = next(line for line in lines if line.startswith("event:"))
        assert first == "event: progress"
        wait_for(api_url, readers=1, subscribers=1)
    wait_for(api_url, readers=0, subscribers=0)

    events: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(CLIENTS)]
    clients = [
        threading.Thread(
            target=follow,
            args=(stream_url, keys[Role.VIEWER], into),
            daemon=True,
        )
        for into in events
    ]
    for client in clients:
        client.start()
    wait_for(api_url, readers=1, subscribers=CLIENTS)  # all connected, one reader between them

    harness.worker()
    most_readers, deadline = 1, time.monotonic() + WAIT_S
    while any(client.is_alive() for client in clients):
        assert time.monotonic() < deadline, f"{sum(c.is_alive() for c in clients)} clients still open"
        most_readers = max(most_readers, gauges(api_url)[0])
        time.sleep(0.2)
    assert most_readers == 1

    for received in events:
        assert received, "a client got no event"
        assert received[-1][0] == "completed" and received[-1][1]["state"] == "completed", received[-1]
        assert all(name == "progress" for name, _ in received[:-1])
        assert received[-1][1]["totals"]["sent"] + received[-1][1]["totals"]["delivered"] == len(people)
    wait_for(api_url, readers=0, subscribers=0)  # the reader is gone with them
