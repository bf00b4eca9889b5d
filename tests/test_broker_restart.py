"""The broker (a private redis-server) killed and restarted under a real worker and beat: the worker
keeps running, and an incident posted while Redis was down goes out once it returns."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from tests.conftest import free_port, start_redis_server
from tests.harness import Harness
from tests.processes import start_api

pytestmark = pytest.mark.slow


class PrivateRedis:
    """A redis-server on a fixed port that the test kills and starts again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_redis_server(self.port, self.directory)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path, private_redis: PrivateRedis) -> Iterator[Harness]:  # type: ignore[no-untyped-def]
    h = Harness(db, sandbox, start_worker, tmp_path)
    h.configure(REDIS_URL=private_redis.url, DISPATCHER_SWEEP_INTERVAL_S="1")
    yield h
    h.stop()


def _settings(harness: Harness) -> Settings:
    """The harness's settings on the private Redis (its `settings` reads only DISPATCHER_ variables)."""
    return harness.settings.model_copy(update={"redis_url": harness.env["REDIS_URL"]})


def _ping(harness: Harness, timeout_s: float = 60) -> None:
    """A task's round trip through the (restarted) broker and the worker, retried until it answers."""
    from dispatcher.engine.broker import make_celery

    app = make_celery(_settings(harness))
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            assert (
                app.send_task("dispatcher.ping", args=["x"], queue="control").get(timeout=10)["pong"] == "x"
            )
            return
        except Exception as exc:  # the broker is still coming back, or the worker reconnecting
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"no round trip through the restarted broker: {last!r}")


def test_worker_survives_redis_killed_after_a_broadcast(
    harness: Harness, private_redis: PrivateRedis
) -> None:
    """Reproduces the crash seen under `up`: Redis killed seconds after a broadcast completed took the
    worker down in kombu's `restore_unacked_once` ('NoneType' object has no attribute 'hostname')."""
    from dispatcher.engine.broker import make_celery
    from tests.test_fanout import tiered_audience

    harness.subscribers(tiered_audience(2, 2, 4))
    worker = harness.worker()
    done = harness.wait(_open_and_send(harness), timeout_s=90)
    assert done["state"] == "completed"
    app = make_celery(_settings(harness))
    for pause_s in (0.0, 2.0):
        # A task held back for later sits unacknowledged in the worker, as a gate check due in a minute
        # does after a broadcast: kombu tries to restore such tasks when the connection is closed.
        app.send_task("dispatcher.ping", args=["later"], queue="control", countdown=600)
        time.sleep(pause_s + 1)
        private_redis.kill()
        time.sleep(3)  # the worker notices the lost connection and starts reconnecting
        assert worker.proc is not None and worker.proc.poll() is None, worker.output()[-3000:]
        private_redis.start()
        _ping(harness)
    assert worker.proc.poll() is None, worker.output()[-3000:]
    assert "has no attribute 'hostname'" not in worker.output()


def _open_and_send(harness: Harness) -> int:
    from dispatcher.engine.broker import make_celery

    broadcast_id = harness.open(send=False)
    make_celery(_settings(harness)).send_task(
        "dispatcher.run_broadcast", args=[broadcast_id], queue="control"
    )
    return broadcast_id


def _start_api(harness: Harness, tmp_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    import os

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **harness.env, "DATABASE_URL": harness.database.url}
    return url, start_api(env, tmp_path / "api.log", port)


def test_incident_posted_while_redis_is_down_is_201_and_sent_once_when_it_returns(
    harness: Harness, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    import httpx
    from sqlalchemy import func, select

    from dispatcher.auth import Role, create_key
    from dispatcher.store.models import Incident
    from tests.test_fanout import tiered_audience

    harness.subscribers(tiered_audience(2, 1, 2))
    with harness.database.session() as session:
        key = create_key(session, Role.COMMANDER)
    url, api = _start_api(harness, tmp_path)
    try:
        worker = harness.worker()
        _ping(harness)
        time.sleep(1)  # the ping acked: no task ends while Redis is down (celery_app.py: known)
        private_redis.kill()
        body = {"title": "Checkout is failing", "impact": "major", "channels": ["email"]}
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "open-checkout-1"}
        first = httpx.post(f"{url}/v1/incidents", json=body, headers=headers, timeout=60)
        assert first.status_code == 201, first.text  # recorded; the broker was down
        again = httpx.post(f"{url}/v1/incidents", json=body, headers=headers, timeout=60)
        assert again.status_code == 201 and again.headers.get("Idempotent-Replay") == "true"
        assert again.json()["incident"]["id"] == first.json()["incident"]["id"]
        with harness.database.session() as session:
            assert session.scalar(select(func.count()).select_from(Incident)) == 1
        broadcast_id = first.json()["broadcast"]["id"]
        assert harness.progress(broadcast_id)["state"] == "queued"
        assert "broker unreachable after commit" in (tmp_path / "api.log").read_text()
        private_redis.start()  # empty: nothing was queued while it was down
        harness.beat()  # the sweeper runs through beat over the restarted Redis
        try:
            done = harness.wait(broadcast_id, timeout_s=90)  # beat's sweep queues it; nobody else does
        except AssertionError as exc:
            beat = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("beat-*.log"))
            raise AssertionError(f"{exc}\nworker: {worker.output()[-3000:]}\nbeat: {beat}") from None
        assert worker.proc is not None and worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        api.terminate()
        api.wait(timeout=20)
    emails = [m["recipient"] for m in harness.sandbox.messages("email")]
    assert sorted(emails) == sorted(set(emails)) and len(emails) == 5, emails  # each once
    assert done["totals"]["pending"] == 0
