"""Drives the real pipeline in tests: a database, the sandbox, real worker and beat processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from config import Settings
from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine.progress import progress
from dispatcher.engine.sweeper import sweep
from dispatcher.incidents.broadcasts import enqueue, open_incident
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, Incident
from dispatcher.store.subscribers import import_many

FAST = {
    "DISPATCHER_RATE_TWILIO_PER_S": "200",
    "DISPATCHER_RATE_SENDGRID_PER_S": "50",
    "DISPATCHER_RATE_SLACK_PER_CHANNEL_PER_S": "5",
    "DISPATCHER_RETRY_BASE_S": "0.2",
    "DISPATCHER_RETRY_CAP_S": "2",
    "DISPATCHER_PROVIDER_TIMEOUT_S": "2",
    "DISPATCHER_TIER_GATE_TIMEOUT_S": "60",
}


class Harness:
    def __init__(self, database: Database, sandbox: Any, start_worker: Callable[..., Any], tmp: Path) -> None:
        self.database = database
        self.sandbox = sandbox
        self._start_worker = start_worker
        self.tmp = tmp
        self.env: dict[str, str] = {
            **FAST,
            "DISPATCHER_SANDBOX_URL": sandbox.url,
            "DISPATCHER_SANDBOX_SECRET": sandbox.secret,
            "DISPATCHER_PUBLIC_URL": f"{sandbox.url}/hooks/service",
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        purge_queues()

    def configure(self, **env: str) -> None:
        self.env.update(env)

    @property
    def settings(self) -> Settings:
        """The settings a worker started now would see, as this process's settings object."""
        values = {k: v for k, v in {**os.environ, **self.env}.items() if k.startswith("DISPATCHER_")}
        saved = dict(os.environ)
        try:
            os.environ.update(values)
            os.environ["DATABASE_URL"] = self.database.url
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def api(self, log: Path, *, sendgrid_events: bool = True) -> tuple[str, subprocess.Popen[bytes]]:
        """A real API process (uvicorn) on a free port, its URL and process: Twilio's callbacks come
        to it (DISPATCHER_PUBLIC_URL) and, with `sendgrid_events`, the sandbox's SendGrid events.
        The caller stops it (terminate, then wait)."""
        from tests.conftest import free_port
        from tests.processes import start_api

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.configure(DISPATCHER_PUBLIC_URL=url)
        if sendgrid_events:
            self.sandbox.event_webhook_url = f"{url}/v1/webhooks/sendgrid"
        env = {**os.environ, **FAST, **self.env, "DATABASE_URL": self.database.url}
        proc = start_api(env, log, port)
        purge_queues()
        return url, proc

    def worker(self, concurrency: int = 2, queues: str | None = None, **env: str) -> Any:
        """A worker on every queue, or on `queues` (`"urgent"`: the urgent lane)."""
        return self._start_worker(
            self.database.url, queues=queues, concurrency=concurrency, extra_env={**self.env, **env}
        )

    def beat(self, **env: str) -> subprocess.Popen[bytes]:
        full = {**os.environ, **self.env, **env, "DATABASE_URL": self.database.url}
        schedule = self.tmp / f"beat-{uuid.uuid4().hex[:6]}"
        log = (self.tmp / f"{schedule.name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dispatcher.engine.broker", "beat", "-s", str(schedule)],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=20)
        purge_queues()

    def subscribers(self, items: Sequence[SubscriberIn]) -> None:
        with self.database.session() as session:
            import_many(session, self.settings, items)

    def open(self, message: OutageMessage | None = None, *, send: bool = True, **kwargs: Any) -> int:
        message = message or OutageMessage(
            title="Checkout is failing", impact="major", status_page_url="https://status.example.com"
        )
        with self.database.session() as session:
            _, broadcast = open_incident(session, self.settings, message, **kwargs)
            broadcast_id = broadcast.id
        if send:
            enqueue(broadcast_id)
        return broadcast_id

    def progress(self, broadcast_id: int) -> dict[str, Any]:
        with self.database.session() as session:
            return progress(session, broadcast_id)

    def wait(
        self, broadcast_id: int, timeout_s: float = 90, *, sweep_every_s: float | None = None
    ) -> dict[str, Any]:
        """Until the broadcast completes. With `sweep_every_s`, this process plays beat's part."""
        deadline = time.monotonic() + timeout_s
        last_sweep = time.monotonic()
        while time.monotonic() < deadline:
            state = self.progress(broadcast_id)
            if state["state"] == "completed":
                return state
            if sweep_every_s and time.monotonic() - last_sweep >= sweep_every_s:
                sweep(self.database, self.settings)
                last_sweep = time.monotonic()
            time.sleep(0.2)
        raise AssertionError(f"broadcast {broadcast_id} did not complete: {self.progress(broadcast_id)}")


def broadcast_row(session: Session) -> Broadcast:
    """An incident and its broadcast, as bare rows, for tests that add deliveries by hand."""
    incident = Incident(kind="incident", title="t", status="investigating", impact="minor", message={})
    session.add(incident)
    session.flush()
    broadcast = Broadcast(incident_id=incident.id, event="incident_opened")
    session.add(broadcast)
    session.flush()
    return broadcast


def purge_queues() -> None:
    """Empties the run's Celery queues, including tasks a stopped worker held back (a gate check
    due in a minute). Tests share the run's Redis prefix but not their databases: a task left by
    one test would otherwise run in the next against the other database's rows."""
    import redis

    from config import get_settings
    from dispatcher.engine.broker import QUEUES, queue_keys
    from dispatcher.engine.inbox import stream_key
    from dispatcher.engine.journal import answers_key

    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url or "")
    keys = [key for queue in QUEUES for key in queue_keys(queue, settings)]
    keys += [settings.redis_prefix + k for k in ("unacked", "unacked_index", "unacked_mutex")]
    keys.append(answers_key(settings))  # provider answers kept for rows of another test's database
    # Rate-limit buckets and their wait lines: a test starts with the providers' limits untouched,
    # as a fresh deployment does, rather than behind the slots earlier tests booked (X allows one
    # post per 10 s, so a dozen earlier public posts would push this test's past its gate timeout).
    keys += list(client.scan_iter(match=settings.redis_prefix + "od:rate:*", count=1000))
    keys.append(stream_key(settings))  # status reports acknowledged for another test's database
    client.delete(*keys)
    client.close()
