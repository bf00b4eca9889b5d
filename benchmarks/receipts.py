"""The receipts API against a 100k-delivery broadcast on PostgreSQL: the first page of each filter,
median and worst over repeated calls, with the index each page's plan reads.

    .venv/bin/python -m benchmarks.receipts --deliveries 100000 --reps 20

Real path in one process: the app (FastAPI's TestClient, no network hop), a private PostgreSQL
schema loaded in bulk (100k subscribers, the broadcast's deliveries beside two smaller broadcasts)
and analysed. Writes benchmarks/results/receipts-postgresql-<n>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy

from benchmarks.stack import PG_URL, RESULTS, SHARED_REDIS_URL, machine

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
COMMAND = ".venv/bin/python -m benchmarks.receipts"
FILTERS: dict[str, dict[str, str]] = {
    "none": {},
    "state=failed": {"state": "failed"},
    "state=delivered": {"state": "delivered"},
    "channel=sms": {"channel": "sms"},
    "tier=0": {"tier": "0"},
    "state=failed&channel=sms&tier=2": {"state": "failed", "channel": "sms", "tier": "2"},
    "q=email": {"q": "User54321@Example.com"},
    "q=phone": {"q": "+1 415 005 4327"},
    "q=external_id": {"q": "cust-54321"},
    "since/until (1 min)": {"since": "2026-12-02T12:30:00Z", "until": "2026-12-02T12:31:00Z"},
}


def _row(broadcast_id: int, i: int, subscriber_id: int) -> dict[str, Any]:
    """A big broadcast's shape: mostly delivered, 1% failed; email, SMS, some chat; most people in the
    last tier; changes spread over an hour."""
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
        "last_error_code": "21211" if i % 100 == 7 else None,
        "created_at": T0,
        "updated_at": T0 + timedelta(seconds=i % 3600),
    }


def load(database: Any, n: int) -> int:
    from dispatcher.store.bulk import insert_rows
    from dispatcher.store.models import Broadcast, Delivery, Incident, Subscriber

    with database.session() as session:
        incident = Incident(
            kind="incident", title="bench", status="investigating", impact="major", message={}
        )
        session.add(incident)
        session.flush()
        broadcasts = [Broadcast(incident_id=incident.id, event="incident_opened") for _ in range(3)]
        session.add_all(broadcasts)
        session.flush()
        ids = [b.id for b in broadcasts]
    subscriber = {"channels": [], "components": [], "regions": [], "opt_outs": [], "locale": "en"}
    for start in range(0, n, 10_000):
        with database.session() as session:
            insert_rows(
                session,
                Subscriber.__table__,
                [
                    {
                        **subscriber,
                        "external_id": f"cust-{i}",
                        "email": f"user{i}@example.com",
                        "unsubscribe_token": f"t{i}",
                        "timezone": "UTC",
                        "created_at": T0,
                        "updated_at": T0,
                    }
                    for i in range(start, min(n, start + 10_000))
                ],
            )
    with database.session() as session:
        people = list(session.scalars(sqlalchemy.text("SELECT id FROM subscribers ORDER BY id")))
    for broadcast_id, size in zip(ids, (n // 10, n, n // 10), strict=True):
        for start in range(0, size, 10_000):
            with database.session() as session:
                rows = [_row(broadcast_id, i, people[i]) for i in range(start, min(size, start + 10_000))]
                insert_rows(session, Delivery.__table__, rows)
    with database.engine.connect() as conn:
        conn.execute(sqlalchemy.text("ANALYZE"))
        conn.commit()
    return ids[1]


def _indexes(plan: dict[str, Any]) -> Iterator[str]:
    if plan.get("Relation Name") == "deliveries" or "Index Name" in plan:
        yield plan.get("Index Name") or plan["Node Type"]
    for child in plan.get("Plans", []):
        yield from _indexes(child)


def measure(database: Any, settings: Any, key: str, broadcast_id: int, reps: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from dispatcher.app import create_app
    from dispatcher.reads.receipts import receipts_query

    out: dict[str, Any] = {}
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        for name, params in FILTERS.items():
            url = f"/v1/broadcasts/{broadcast_id}/receipts"
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                response = client.get(url, params=params, headers=headers)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
            found = len(response.json()["receipts"])
            with database.session() as session:
                typed = {
                    k: (
                        int(v) if k == "tier" else datetime.fromisoformat(v) if k in ("since", "until") else v
                    )
                    for k, v in params.items()
                }
                compiled = receipts_query(session, broadcast_id, **typed).compile(
                    dialect=session.get_bind().dialect
                )
                raw = (
                    session.connection()
                    .exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params)
                    .scalar()
                )
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
            out[name] = {
                "median_ms": round(statistics.median(times), 1),
                "worst_ms": round(max(times), 1),
                "rows": found,
                "reads": sorted(set(_indexes(plan))),
            }
            print(name, out[name], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("REDIS_URL", SHARED_REDIS_URL)
    os.environ["DISPATCHER_REDIS_PREFIX"] = f"bench-receipts-{uuid.uuid4().hex[:6]}:"
    from config import Settings
    from dispatcher.auth import Role, create_key
    from dispatcher.store.db import Database
    from dispatcher.store.migrate import upgrade

    schema = f"od_bench_receipts_{uuid.uuid4().hex[:6]}"
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in PG_URL else "?"
    database = Database(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")
    try:
        upgrade(database)
        started = time.monotonic()
        broadcast_id = load(database, args.deliveries)
        took = time.monotonic() - started
        print(f"loaded {args.deliveries:,} deliveries (+{args.deliveries // 5:,} beside) in {took:.1f}s")
        with database.session() as session:
            key = create_key(session, Role.VIEWER)
        results = measure(database, Settings(database_url=database.url), key, broadcast_id, args.reps)
    finally:
        database.dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    path = RESULTS / f"receipts-postgresql-{args.deliveries}.json"
    path.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                "machine": machine(),
                "command": f"{COMMAND} --deliveries {args.deliveries} --reps {args.reps}",
                "filters": results,
            },
            indent=2,
        )
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
