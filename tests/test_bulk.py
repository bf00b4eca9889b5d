"""Set-based SQL (dispatcher/store/bulk.py) on PostgreSQL and SQLite: same rows, same answers."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from dispatcher.store.bulk import id_in, insert_ignoring, update_rows
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery
from tests.harness import broadcast_row

UNIQUE = ["broadcast_id", "channel", "address"]


def _rows(broadcast_id: int, addresses: list[str], **extra: object) -> list[dict[str, object]]:
    now = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    return [
        {"broadcast_id": broadcast_id, "tier": 2, "channel": "email", "address": a, "subscriber_id": None,
         "locale": "en", "state": "pending", "attempts": 0, "created_at": now, "updated_at": now, **extra}
        for a in addresses
    ]  # fmt: skip


def test_insert_ignoring_skips_existing_keys_and_keeps_per_row_values(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast_row(session).id
        insert_ignoring(session, Delivery.__table__, _rows(broadcast_id, ["a@x.com", "b@x.com"]), UNIQUE)
    rows = _rows(broadcast_id, ["b@x.com", "c@x.com", "d@x.com"])
    rows[1] |= {"locale": "de", "last_error_code": "quiet_hours"}  # a row with a key the others lack
    with db.session() as session:
        insert_ignoring(session, Delivery.__table__, rows, UNIQUE)
    with db.session() as session:
        found = session.execute(
            select(Delivery.address, Delivery.locale, Delivery.last_error_code, Delivery.tier).order_by(
                Delivery.address
            )
        ).all()
    assert [tuple(r) for r in found] == [
        ("a@x.com", "en", None, 2),
        ("b@x.com", "en", None, 2),
        ("c@x.com", "de", "quiet_hours", 2),
        ("d@x.com", "en", None, 2),
    ]


def test_insert_ignoring_one_row_and_no_rows(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast_row(session).id
        insert_ignoring(session, Delivery.__table__, [], UNIQUE)
        insert_ignoring(session, Delivery.__table__, _rows(broadcast_id, ["only@x.com"]), UNIQUE)
    with db.session() as session:
        assert session.scalars(select(Delivery.address)).all() == ["only@x.com"]


def test_id_in_and_update_rows_touch_exactly_the_named_rows(db: Database) -> None:
    with db.session() as session:
        broadcast_id = broadcast_row(session).id
        insert_ignoring(
            session, Delivery.__table__, _rows(broadcast_id, [f"u{i}@x.com" for i in range(5)]), UNIQUE
        )
    with db.session() as session:
        ids = session.scalars(select(Delivery.id).order_by(Delivery.id)).all()
        picked = session.scalars(select(Delivery.id).where(id_in(session, Delivery.id, ids[1:3]))).all()
        assert sorted(picked) == ids[1:3]
        assert session.scalars(select(Delivery.id).where(id_in(session, Delivery.id, []))).all() == []
        update_rows(
            session,
            Delivery.__table__,
            [
                {"id": ids[0], "provider_message_id": "SM0"},
                {"id": ids[1], "provider_message_id": "SM1"},
                {"id": ids[2], "last_error_code": "500", "last_error": "boom"},
                {"id": ids[3], "last_error_code": "500", "last_error": "boom"},
            ],
        )
    with db.session() as session:
        found = session.execute(
            select(Delivery.provider_message_id, Delivery.last_error_code, Delivery.last_error).order_by(
                Delivery.id
            )
        ).all()
    assert [tuple(r) for r in found] == [
        ("SM0", None, None),
        ("SM1", None, None),
        (None, "500", "boom"),
        (None, "500", "boom"),
        (None, None, None),
    ]
