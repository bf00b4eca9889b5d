"""The store on PostgreSQL and SQLite: migrations from empty, constraints that keep data honest."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session

from dispatcher.auth import Role, bootstrap_keys, create_key, find_key, revoke_key
from dispatcher.domain.errors import ConfigurationError
from dispatcher.store.db import BUSY_TIMEOUT_MS, Database, take_write_lock
from dispatcher.store.migrate import current_revision, upgrade
from dispatcher.store.models import ApiKey, Base, Broadcast, Delivery
from tests.conftest import fresh_database_url
from tests.harness import broadcast_row

EXPECTED_TABLES = {t.name for t in Base.metadata.sorted_tables}


def test_migrations_apply_from_empty(backend: str) -> None:
    database = Database(fresh_database_url(backend, "migrate_from_empty"))
    assert current_revision(database) is None
    upgrade(database)
    tables = set(inspect(database.engine).get_table_names())
    assert tables >= EXPECTED_TABLES
    assert current_revision(database) == "0013"
    upgrade(database)  # a second run is a no-op, as on every restart
    assert current_revision(database) == "0013"
    database.dispose()


def test_migrations_match_the_models(backend: str) -> None:
    """Nothing in models.py is missing from the migrations (or the other way round)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    database = Database(fresh_database_url(backend, "drift"))
    upgrade(database)
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []
    database.dispose()


def test_one_delivery_per_broadcast_channel_and_address(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast_row(session).id
        session.add(Delivery(broadcast_id=broadcast_id, tier=0, channel="email", address="a@example.com"))
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(Delivery(broadcast_id=broadcast_id, tier=1, channel="email", address="a@example.com"))
    with db.session() as session:  # the failed request left nothing behind
        assert session.scalar(select(sqlalchemy.func.count()).select_from(Delivery)) == 1


def test_timestamps_come_back_aware_and_naive_ones_are_refused(db: Database) -> None:
    with db.session() as session:
        broadcast = broadcast_row(session)
        broadcast_id = broadcast.id
    with db.session() as session:
        created = session.get(Broadcast, broadcast_id).created_at
        assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
    with pytest.raises(StatementError, match="naive datetime"), db.session() as session:
        session.get(Broadcast, broadcast_id).completed_at = datetime(2026, 1, 1)
        session.flush()


def test_api_keys_are_stored_hashed_and_can_be_revoked(db: Database) -> None:
    with db.session() as session:
        key = create_key(session, Role.VIEWER, "dash")
    with db.session() as session:
        stored = session.scalars(select(ApiKey)).one()
        assert key not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
        assert find_key(session, key).role == "viewer"
        assert find_key(session, key + "x") is None
        assert revoke_key(session, stored.id) is True
    with db.session() as session:
        assert find_key(session, key) is None
        assert revoke_key(session, stored.id) is False  # already revoked


C_KEY = "c-key-" + "c" * 27  # bootstrap keys need 32 characters
V_KEY = "v-key-" + "v" * 27


def test_bootstrap_keys_is_idempotent_and_names_the_setting(db: Database) -> None:
    with db.session() as session:
        assert bootstrap_keys(session, f"commander:{C_KEY}, viewer:{V_KEY}") == 2
    with db.session() as session:
        assert bootstrap_keys(session, f"commander:{C_KEY},viewer:{V_KEY}") == 0
        assert find_key(session, C_KEY).role == "commander"
    with pytest.raises(ConfigurationError, match="DISPATCHER_API_KEYS"), db.session() as session:
        bootstrap_keys(session, "root:k")


def _holder(path: str) -> sqlite3.Connection:
    """Another writer holding SQLite's write lock, as a worker's transaction does."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def _busy_timeout(session: Session) -> int:
    return int(session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar_one())


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[tuple[Database, str]]:
    """A migrated SQLite database of its own, and its file's path for other writers."""
    path = str(tmp_path / "urgent.db")
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    yield database, path
    database.dispose()


def test_an_urgent_session_holds_sqlite_write_lock_from_its_start(sqlite_file: tuple[Database, str]) -> None:
    """A commander's transaction takes the lock before its first statement (then never waits
    mid-way), and leaves the connection's usual wait for the lock behind it."""
    database, path = sqlite_file
    with database.session(urgent=True) as session:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _holder(path)
        assert _busy_timeout(session) == BUSY_TIMEOUT_MS
        create_key(session, Role.COMMANDER, label="urgent")
    _holder(path).rollback()  # released at commit
    with database.session() as session:
        assert session.scalar(select(ApiKey.label)) == "urgent"


def test_an_urgent_session_waits_for_the_writer_ahead_of_it(sqlite_file: tuple[Database, str]) -> None:
    database, path = sqlite_file
    other = _holder(path)
    other.execute(
        "INSERT INTO subscriber_lists (name, tier, created_at) VALUES ('ahead', 0, '2026-12-07 00:00:00')"
    )
    order: list[str] = []

    def finish_the_other() -> None:
        time.sleep(0.3)
        order.append("the other commits")
        other.execute("COMMIT")

    threading.Thread(target=finish_the_other).start()
    with database.session(urgent=True) as session:
        order.append("urgent begins")
        names = session.scalars(sqlalchemy.text("SELECT name FROM subscriber_lists")).all()
    assert order == ["the other commits", "urgent begins"]
    assert names == ["ahead"]  # it began after the other's commit, and sees it


def test_an_urgent_session_gives_up_with_the_database_error(sqlite_file: tuple[Database, str]) -> None:
    database, path = sqlite_file
    other = _holder(path)
    session = Session(database.engine)
    try:
        with pytest.raises(OperationalError, match="locked"):
            take_write_lock(session, timeout_s=0.05)
        assert _busy_timeout(session) == BUSY_TIMEOUT_MS
    finally:
        session.close()
        other.rollback()


def test_an_urgent_session_is_a_session_on_every_database(db: Database) -> None:
    with db.session(urgent=True) as session:
        create_key(session, Role.COMMANDER, label="urgent")
    with db.session() as session:
        assert session.scalar(select(ApiKey.label).where(ApiKey.label == "urgent")) == "urgent"
