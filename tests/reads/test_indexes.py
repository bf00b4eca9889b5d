"""Every receipts filter's first page is an index read on PostgreSQL, never a Seq Scan of deliveries:
a broadcast of 20,000 deliveries (beside two others) loaded in bulk, analysed, and each page's
query EXPLAINed as `receipts` runs it. A sequential scan there is what makes a 100k broadcast's
page take seconds instead of milliseconds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from dispatcher.reads.receipts import receipts, receipts_query
from dispatcher.store.bulk import insert_rows
from dispatcher.store.db import Database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import Delivery, Subscriber
from tests.conftest import fresh_database_url
from tests.reads.helpers import T0, broadcast, incident

N = 20_000


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[Database, int]]:
    database = Database(fresh_database_url("postgresql", "indexes"))
    upgrade(database)
    with database.session() as session:
        inc = incident(session).id
        ids = [broadcast(session, inc).id for _ in range(3)]
        insert_rows(
            session,
            Subscriber.__table__,
            [
                {
                    "external_id": f"cust-{i}",
                    "email": f"user{i}@example.com",
                    "unsubscribe_token": f"t{i}",
                    "channels": [],
                    "components": [],
                    "regions": [],
                    "opt_outs": [],
                    "locale": "en",
                    "timezone": "UTC",
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in range(N)
            ],
        )
        subscriber_ids = [row[0] for row in session.execute(text("SELECT id FROM subscribers ORDER BY id"))]
        for broadcast_id, size in zip(ids, (5_000, N, 5_000), strict=True):
            for start in range(0, size, 5_000):
                insert_rows(
                    session,
                    Delivery.__table__,
                    [_row(broadcast_id, i, subscriber_ids[i]) for i in range(start, start + 5_000)],
                )
        session.execute(text("ANALYZE deliveries"))
        session.execute(text("ANALYZE subscribers"))
    yield database, ids[1]
    database.dispose()


def _row(broadcast_id: int, i: int, subscriber_id: int) -> dict[str, Any]:
    """Shaped like a big broadcast: mostly delivered, 1% failed; email, then SMS, some chat; most
    people in the last tier; changes spread over an hour."""
    channel = "email" if i % 10 < 7 else "sms" if i % 10 < 9 else "chat"
    address = {"email": f"user{i}@example.com", "sms": f"+1415{i:07d}", "chat": f"#room-{i}"}[channel]
    return {
        "broadcast_id": broadcast_id,
        "subscriber_id": subscriber_id,
        "tier": 0 if i % 100 == 0 else 1 if i % 10 == 1 else 2,
        "channel": channel,
        "address": address,
        "locale": "en",
        "state": "failed" if i % 100 == 7 else "sent" if i % 10 == 3 else "delivered",
        "attempts": 1,
        "sends": 1,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=i % 3600),
    }


FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "state=failed": {"state": "failed"},
    "state=delivered": {"state": "delivered"},
    "channel=sms": {"channel": "sms"},
    "channel=chat": {"channel": "chat"},
    "tier=0": {"tier": 0},
    "tier=2": {"tier": 2},
    "state+channel+tier": {"state": "failed", "channel": "sms", "tier": 2},
    "q=email": {"q": "User1234@Example.com"},
    "q=phone": {"q": "+1 415 001 2347"},
    "q=external_id": {"q": "cust-4321"},
    "since/until": {"since": T0 + timedelta(minutes=10), "until": T0 + timedelta(minutes=11)},
    "since/until 5 s": {"since": T0 + timedelta(minutes=30), "until": T0 + timedelta(minutes=30, seconds=5)},
    "since+state": {"since": T0 + timedelta(minutes=58), "state": "failed"},
}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filters_first_page_reads_an_index(big: tuple[Database, int], name: str) -> None:
    database, broadcast_id = big
    with database.session() as session:
        query = receipts_query(session, broadcast_id, **FILTERS[name], limit=100)
        compiled = query.compile(dialect=session.get_bind().dialect)
        raw = (
            session.connection()
            .exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params)
            .scalar()
        )
        page = receipts(session, broadcast_id, **FILTERS[name])
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    on_deliveries = [n for n in _nodes(plan) if n.get("Relation Name") == "deliveries"]
    kinds = {n["Node Type"] for n in on_deliveries}
    assert "Seq Scan" not in kinds, json.dumps(plan, indent=1)
    assert kinds & {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, json.dumps(plan, indent=1)
    assert page["receipts"], name  # each filter finds rows, so the plan is for a real page
