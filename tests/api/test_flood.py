"""The receipts flood, as a probe on the embedded default found it (issue 17): a broadcast whose every
SMS and email brings signed callbacks back to the API, while 150 clients follow it over SSE and
commanders post updates. Before: callbacks answered 500 after 30 s of "database is locked" and
hundreds of emails stayed `sent` forever. Now: every callback is acknowledged, every receipt ends
`delivered`, every update is accepted, and the 150 streams share one progress reader."""

from __future__ import annotations

import asyncio
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.auth import Role, create_key
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine import inbox
from dispatcher.store.db import Database
from tests.harness import Harness

pytestmark = pytest.mark.slow

STREAMS = 150
PEOPLE = 400  # each with an email and a phone: 800 deliveries, about 2,400 callbacks
UPDATES = 10


async def follow(url: str, key: str, clients: int) -> list[str]:
    """`clients` SSE streams of one broadcast, each read to its end; returns each one's last event."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), limits=limits) as client:

        async def one() -> str:
            last = ""
            async with client.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        last = line.split(":", 1)[1].strip()
            return last

        return list(await asyncio.gather(*(one() for _ in range(clients))))


def gauge(metrics: str, name: str) -> float:
    found = re.search(rf"^{name} ([0-9.]+)$", metrics, re.M)
    return float(found.group(1)) if found else -1.0


def test_a_flood_of_callbacks_and_streams_loses_nothing_and_never_fails(
    harness: Harness, db: Database, tmp_path: Path
) -> None:
    harness.subscribers(
        [
            SubscriberIn(
                external_id=f"p{i}",
                lists=["admins" if i < 10 else "customers"],
                email=f"p{i}@example.com",
                phone=f"+1415700{i:04d}",
            )
            for i in range(PEOPLE)
        ]
    )
    with db.session() as session:
        keys = {role: create_key(session, role) for role in (Role.COMMANDER, Role.VIEWER)}
    url, api = harness.api(tmp_path / "api.log")  # every callback comes to this API
    try:
        commander = {"Authorization": f"Bearer {keys[Role.COMMANDER]}"}
        opened = httpx.post(
            f"{url}/v1/incidents",
            json={"title": "Checkout is failing", "impact": "major", "channels": ["email", "sms"]},
            headers=commander,
            timeout=30,
        )
        assert opened.status_code == 201, opened.text
        incident_id, broadcast_id = opened.json()["incident"]["id"], opened.json()["broadcast"]["id"]
        events_url = f"{url}/v1/broadcasts/{broadcast_id}/events"

        with ThreadPoolExecutor(1) as pool:
            streams = pool.submit(asyncio.run, follow(events_url, keys[Role.VIEWER], STREAMS))
            deadline = time.monotonic() + 60
            while gauge(httpx.get(f"{url}/metrics").text, "dispatcher_progress_subscribers") < STREAMS:
                assert time.monotonic() < deadline, "the streams did not all connect"
                time.sleep(0.2)
            assert gauge(httpx.get(f"{url}/metrics").text, "dispatcher_progress_readers") == 1

            worker = harness.worker()

            def update(n: int) -> httpx.Response:  # silent: on the page, sent to nobody
                body = {"summary": f"Still investigating ({n})", "notify": False}
                return httpx.post(
                    f"{url}/v1/incidents/{incident_id}/updates", json=body, headers=commander, timeout=60
                )

            with ThreadPoolExecutor(UPDATES) as posting:  # concurrently, during the flood
                updates = list(posting.map(update, range(UPDATES)))
            assert [u.status_code for u in updates] == [201] * UPDATES, [u.text for u in updates]
            assert streams.result(timeout=300) == ["completed"] * STREAMS

        harness.sandbox.drain_callbacks(timeout_s=120)
        assert inbox.wait_applied(harness.settings, timeout_s=120)
        stats = harness.sandbox.stats()
        for provider in ("twilio", "sendgrid"):
            assert stats[provider]["callbacks_failed"] == 0, stats[provider]
            assert stats[provider]["callbacks_sent"] > 0, stats[provider]
        viewer = {"Authorization": f"Bearer {keys[Role.VIEWER]}"}
        deadline = time.monotonic() + 60
        while True:  # a report parked for a row still `sending` is applied right after the recording
            read: dict[str, Any] = httpx.get(f"{url}/v1/broadcasts/{broadcast_id}", headers=viewer).json()
            states = read["totals"]
            if states.get("delivered") == 2 * PEOPLE or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert states.get("delivered") == 2 * PEOPLE, json.dumps(states)
        worker.stop()
    finally:
        api.terminate()
        api.wait(timeout=20)
    assert "database is locked" not in (tmp_path / "api.log").read_text(errors="replace")
