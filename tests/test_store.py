"""The store on PostgreSQL and SQLite: migrations from empty, constraints that keep data honest."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError, StatementError

from dispatcher.auth import Role, bootstrap_keys, create_key, find_key, revoke_key
from dispatcher.domain.errors import ConfigurationError
from dispatcher.store.db import Database
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
