"""What writing a delivery's history costs on the sending path: the claim (pending -> sending) and the
recording (sending -> sent) of 10,000 deliveries in batches of 500, as engine/sending.py does them,
through `engine.transitions.transition`, on a fresh database, repeated.

    .venv/bin/python -m benchmarks.history --db postgresql --reps 7
    .venv/bin/python -m benchmarks.history --db postgresql --reps 7 --without-history

`--without-history` replaces the history insert with nothing (the migration's indexes stay), so the
two runs split the cost between the `delivery_events` rows and the new indexes on `deliveries`. Run
on the commit before migration 0009 for the figure before both. Prints seconds per 10,000 rows.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy

from benchmarks.stack import PG_URL

N, BATCH = 10_000, 500


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--without-history", action="store_true")
    args = parser.parse_args()

    from dispatcher.engine import transitions
    from dispatcher.store.db import Database
    from dispatcher.store.migrate import upgrade

    if args.without_history:
        transitions.record_events = lambda session, rows: None  # type: ignore[attr-defined]
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"od_bench_history_{uuid.uuid4().hex[:6]}"
    if args.db == "postgresql":
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        sep = "&" if "?" in PG_URL else "?"
        url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'history.db'}"
    database = Database(url)
    try:
        upgrade(database)
        timings: dict[str, list[float]] = {"claim": [], "record": []}
        for _ in range(args.reps):
            for step, seconds in run_once(database).items():
                timings[step].append(seconds)
    finally:
        database.dispose()
        if args.db == "postgresql":
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    label = "without history" if args.without_history else "with history"
    for step, values in timings.items():
        print(
            f"{args.db} {label}: {step} of {N:,} rows, s: median {statistics.median(values):.3f}, "
            f"best {min(values):.3f}, worst {max(values):.3f}"
        )


def run_once(database: Any) -> dict[str, float]:
    from dispatcher.domain.states import DeliveryState as S
    from dispatcher.engine.transitions import transition
    from dispatcher.store.bulk import insert_ignoring
    from dispatcher.store.models import Broadcast, BroadcastTier, Delivery, Incident

    now = datetime.now(UTC)
    with database.session() as session:
        incident = Incident(
            kind="incident", title="bench", status="investigating", impact="major", message={}
        )
        session.add(incident)
        session.flush()
        broadcast = Broadcast(incident_id=incident.id, event="incident_opened")
        session.add(broadcast)
        session.flush()
        session.add(BroadcastTier(broadcast_id=broadcast.id, tier=0, planned=N, outstanding=N))
        rows = [
            {
                "broadcast_id": broadcast.id,
                "tier": 0,
                "channel": "email",
                "address": f"u{i}@example.com",
                "state": "pending",
                "attempts": 0,
                "sends": 0,
                "locale": "en",
                "created_at": now,
                "updated_at": now,
            }
            for i in range(N)
        ]
        unique = ["broadcast_id", "channel", "address"]
        ids = sorted(r[0] for r in insert_ignoring(session, Delivery.__table__, rows, unique, (Delivery.id,)))
    steps = {
        "claim": (S.PENDING, S.SENDING, {"attempts": Delivery.attempts + 1, "sends": Delivery.sends + 1}),
        "record": (S.SENDING, S.SENT, {"provider_message_id": "sg-1"}),
    }
    out: dict[str, float] = {}
    for step, (expect, to, values) in steps.items():
        started = time.perf_counter()
        for start in range(0, N, BATCH):
            with database.session() as session:
                transition(session, ids[start : start + BATCH], expect=expect, to=to, now=now, values=values)
        out[step] = time.perf_counter() - started
    return out


if __name__ == "__main__":
    main()
