"""`up` supervises, it does not give up: the embedded Redis killed while a broadcast is sending is
restarted with backoff, the API keeps answering meanwhile, and the broadcast completes with every
delivery sent exactly once (the sandbox `up` runs counts what reached the provider)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import Up, descendants, newcomer_env

pytestmark = pytest.mark.slow

COMMANDER = "c" * 40
ADMIN = "a" * 40
PEOPLE = 150
RATE_PER_S = 15  # SMS, one provider call each: the broadcast is mid-way when the broker dies


def phone(i: int) -> str:
    return f"+1415555{i:04d}"


def _pid_of(root: int, needle: str) -> int:
    for pid in descendants(root):
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                return pid
        except OSError:
            continue
    raise AssertionError(f"no child of up runs {needle!r}")


def _progress(url: str, broadcast_id: int) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/v1/broadcasts/{broadcast_id}", headers={"Authorization": f"Bearer {COMMANDER}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_redis_killed_mid_broadcast_is_restarted_and_every_delivery_goes_once(tmp_path: Path) -> None:
    env = newcomer_env(
        DISPATCHER_REDIS_PREFIX="",
        DISPATCHER_API_KEYS=f"commander:{COMMANDER},admin:{ADMIN}",
        DISPATCHER_SWEEP_INTERVAL_S="2",
        DISPATCHER_RATE_TWILIO_PER_S=str(RATE_PER_S),
        # the queued batches die with Redis; the sweeper re-queues their rows once untouched for a
        # lease (120 s by default): shortened here so the test does not wait two minutes
        DISPATCHER_LEASE_S="15",
    )
    up = Up(tmp_path, env)
    try:
        up.wait_ready(120)
        rows = ["external_id,lists,phone"] + [f"p{i},customers,{phone(i)}" for i in range(PEOPLE)]
        imported = httpx.post(
            f"{up.url}/v1/subscribers/import",
            content="\n".join(rows) + "\n",
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "text/csv"},
            timeout=60,
        )
        assert imported.status_code == 200 and imported.json()["imported"] == PEOPLE, imported.text
        created = httpx.post(
            f"{up.url}/v1/incidents",
            json={"title": "Checkout is failing", "impact": "major", "channels": ["sms"]},
            headers={"Authorization": f"Bearer {COMMANDER}"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        broadcast_id = created.json()["broadcast"]["id"]

        deadline = time.monotonic() + 120
        state = _progress(up.url, broadcast_id)
        while time.monotonic() < deadline and state["totals"]["sent"] + state["totals"]["delivered"] < 10:
            time.sleep(0.2)
            state = _progress(up.url, broadcast_id)
        done_before = state["totals"]["sent"] + state["totals"]["delivered"]
        assert state["state"] != "completed" and done_before < PEOPLE, state  # mid-broadcast

        os.kill(_pid_of(up.proc.pid, "redis-server"), signal.SIGKILL)
        up.wait_line("redis exited", 30)
        # the API answers while the broker is down or coming back
        assert httpx.get(f"{up.url}/healthz", timeout=10).status_code == 200
        assert _progress(up.url, broadcast_id)["id"] == broadcast_id
        up.wait_line("redis restarted", 60)
        assert up.proc.poll() is None, up.output()

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = _progress(up.url, broadcast_id)
            if state["state"] == "completed":
                break
            time.sleep(0.5)
        assert state["state"] == "completed", (state, up.output())
        totals = state["totals"]
        assert totals["sent"] + totals["delivered"] == PEOPLE and totals["failed"] == 0, totals

        records = httpx.get(f"http://127.0.0.1:{up.sandbox_port}/sandbox/messages", timeout=30).json()
        received = Counter(r["recipient"] for r in records if r["channel"] == "sms")
        assert set(received) == {phone(i) for i in range(PEOPLE)}  # nothing lost
        assert [who for who, n in received.items() if n > 1] == []  # nothing twice
    finally:
        up.stop()
