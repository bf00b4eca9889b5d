"""The one database session pattern: `with database.session() as s: ...` commits or rolls back.

Engines are per process: a Celery worker forks, and a connection pool must never cross a fork.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from dispatcher.store.per_process import PerProcess

BUSY_TIMEOUT_MS = 30_000  # how long a SQLite writer waits for the one write lock before it fails
URGENT_POLL_MS = 1  # how often an urgent session asks for it (SQLite's own handler backs off to 100 ms)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; busy_timeout waits instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self, *, urgent: bool = False) -> Iterator[Session]:
        """`urgent`: a commander's write. On SQLite it takes the write lock before its first
        statement, asking every millisecond (`take_write_lock`); elsewhere it changes nothing."""
        session = self._sessions()
        try:
            if urgent and self.is_sqlite:
                take_write_lock(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def take_write_lock(session: Session, timeout_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """Begins `session`'s SQLite transaction holding the write lock (BEGIN IMMEDIATE), asking for it
    every URGENT_POLL_MS until `timeout_s`. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20,
    25... ms between tries, so at a receipts flood a commander's first write slept 8 to 110 ms for a
    lock the workers and the inbox hold a few ms at a time; asking often, it takes the lock soon
    after it is free, ahead of writers still asleep in their backoff."""
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    deadline = time.monotonic() + timeout_s
    raw.execute(f"PRAGMA busy_timeout={URGENT_POLL_MS}")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


DATABASES: PerProcess[str, Database] = PerProcess()


def get_database(settings: Settings) -> Database:
    """This process's Database for the configured URL (a fresh one after a fork)."""
    url = settings.effective_database_url
    return DATABASES.get(url, lambda: Database(url))
