"""The dashboard's reads against a 100,000-delivery broadcast: how fast is the receipts API's first page
for each filter, and the broadcast's counts (GET /v1/broadcasts/{id})? Does every filter read an index?

The broadcast is written straight into PostgreSQL with bulk inserts (no sending: the reads do not care
how the rows got there): 100,000 subscribers, one delivery each (70% email, 20% SMS, 10% chat; 50
admins in tier 0, 5,000 stakeholders in tier 1, the rest in tier 2), mostly delivered, a few hundred
failed with their provider's code and message, changes spread over an hour. Before it, `--older`
older broadcasts (1 by default) of `--beside` deliveries each (100,000) to the same people, as a
dashboard usually looks at the newest broadcast: every query has to pick its broadcast's rows out of
a table that holds others' first, in id order (a service's history: `--older 9` makes it 1.1 million
rows). Counters to
match, ANALYZE, then the API alone (uvicorn, its own process) and N timed GETs per case with a viewer
key, after one warm-up request each. Then each receipts filter's query, as `receipts` builds it, under
EXPLAIN (ANALYZE, BUFFERS).

    .venv/bin/python -m benchmarks.dashboard                 # --deliveries 100000 --runs 20
    .venv/bin/python -m benchmarks.dashboard --older 9       # behind 900,000 older rows

Writes benchmarks/results/dashboard-postgresql-<n>[-after-<older>].json and prints the summary and the
plans.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from benchmarks.stack import RESULTS, VIEWER_KEY, Stack, machine, summarize

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
CHUNK = 5_000
FAILED_EVERY = 333  # a few hundred failed rows in 100k
FAILURES = {  # what each provider says when it refuses, as the adapters record it
    "sms": ("21211", "Invalid 'To' Phone Number"),
    "email": ("bounce", "550 5.1.1 The email account that you tried to reach does not exist"),
    "chat": ("channel_not_found", "channel_not_found"),
}


def channel_of(i: int) -> str:
    return "email" if i % 10 < 7 else "sms" if i % 10 < 9 else "chat"


def address_of(i: int) -> str:
    return {"email": f"user{i}@bench.example", "sms": f"+1415{2000000 + i:07d}", "chat": f"C{i:07d}"}[
        channel_of(i)
    ]


def tier_of(i: int) -> int:
    return 0 if i < 50 else 1 if i < 5050 else 2


def subscriber_row(i: int) -> dict[str, Any]:
    return {
        "external_id": f"u{i}",
        "email": f"user{i}@bench.example",
        "phone": f"+1415{2000000 + i:07d}",
        "unsubscribe_token": f"bench-token-{i}",
        "channels": [],
        "components": [],
        "regions": [],
        "opt_outs": [],
        "locale": "en",
        "timezone": "UTC",
        "created_at": T0,
        "updated_at": T0,
    }


def delivery_row(broadcast_id: int, i: int, subscriber_id: int) -> dict[str, Any]:
    channel = channel_of(i)
    failed = i % FAILED_EVERY == 7
    state = "failed" if failed else "sent" if i % 10 == 3 else "delivered"
    changed = T0 + timedelta(seconds=i % 3600)
    code, message = FAILURES[channel] if failed else (None, None)
    return {
        "broadcast_id": broadcast_id,
        "subscriber_id": subscriber_id,
        "tier": tier_of(i),
        "channel": channel,
        "address": address_of(i),
        "locale": "en",
        "state": state,
        "attempts": 1,
        "sends": 0 if failed else 1,
        "provider_message_id": None if failed else f"bench-{broadcast_id}-{i}",
        "last_error_code": code,
        "last_error": message,
        "created_at": T0,
        "sending_at": T0,
        "sent_at": None if failed else changed,
        "delivered_at": changed if state == "delivered" else None,
        "final_at": changed if failed else None,
        "updated_at": changed,
    }


def load(stack: Stack, n: int, beside: int, older: int = 1) -> dict[str, Any]:
    """The incident, an older broadcast and the measured one after it, their tiers, counters and
    deliveries."""
    from dispatcher.store.bulk import insert_rows
    from dispatcher.store.models import (
        Broadcast,
        BroadcastCount,
        BroadcastTier,
        Delivery,
        Incident,
        Subscriber,
    )

    started = time.monotonic()
    with stack.database.session() as session:
        incident = Incident(
            kind="incident",
            title="Checkout API errors",
            status="investigating",
            impact="major",
            message={"title": "Checkout API errors"},
        )
        session.add(incident)
        session.flush()
        broadcasts = []
        for _ in range(older + 1):
            row = Broadcast(
                incident_id=incident.id,
                event="incident_opened",
                state="completed",
                policy={"channels": ["email", "sms", "chat"]},
                created_at=T0,
                planned_at=T0,
                completed_at=T0 + timedelta(hours=1),
            )
            session.add(row)
            session.flush()
            broadcasts.append(row.id)
        people = max(n, beside)
        for start in range(0, people, CHUNK):
            insert_rows(
                session,
                Subscriber.__table__,
                [subscriber_row(i) for i in range(start, min(people, start + CHUNK))],
            )
        ids = [int(r[0]) for r in session.execute(text("SELECT id FROM subscribers ORDER BY id"))]
        for broadcast_id, size in zip(broadcasts, [beside] * older + [n], strict=True):
            counts: dict[tuple[int, str, str], int] = {}
            for start in range(0, size, CHUNK):
                rows = [delivery_row(broadcast_id, i, ids[i]) for i in range(start, min(size, start + CHUNK))]
                insert_rows(session, Delivery.__table__, rows)
                for r in rows:
                    key = (r["tier"], r["channel"], r["state"])
                    counts[key] = counts.get(key, 0) + 1
            for tier in (0, 1, 2, 3):
                planned = sum(k for (t, _, _), k in counts.items() if t == tier)
                session.add(
                    BroadcastTier(
                        broadcast_id=broadcast_id,
                        tier=tier,
                        state="done",
                        planned=planned,
                        outstanding=0,
                        gate="accepted",
                        started_at=T0,
                    )
                )
            for (tier, channel, state), k in counts.items():
                session.add(
                    BroadcastCount(broadcast_id=broadcast_id, tier=tier, channel=channel, state=state, n=k)
                )
    with stack.database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("deliveries", "subscribers", "broadcast_counts"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))  # as autovacuum would have, long since
    return {
        "broadcast_id": broadcasts[-1],
        "older_ids": broadcasts[:-1],
        "load_s": round(time.monotonic() - started, 1),
    }


def cases(broadcast_id: int, n: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (path, query): what a dashboard asks, the receipts filters as a pasted link has them."""
    somebody = n - 1234 - (n - 1234) % 10  # in the last tier, an email row (i % 10 == 0)
    receipts = f"/v1/broadcasts/{broadcast_id}/receipts"
    return {
        "GET /v1/broadcasts/{id}": (f"/v1/broadcasts/{broadcast_id}", {}),
        "receipts (no filter)": (receipts, {}),
        "receipts ?state=failed": (receipts, {"state": "failed"}),
        "receipts ?q=<external_id>": (receipts, {"q": f"u{somebody}"}),
        "receipts ?q=<address>": (receipts, {"q": address_of(somebody).upper()}),
        "receipts ?channel=sms": (receipts, {"channel": "sms"}),
        "receipts ?channel=sms&tier=0": (receipts, {"channel": "sms", "tier": 0}),
    }


def measure(api: httpx.Client, path: str, params: dict[str, Any], runs: int) -> tuple[list[float], Any]:
    headers = {"Authorization": f"Bearer {VIEWER_KEY}"}
    api.get(path, params=params, headers=headers).raise_for_status()  # warm-up: the first query's plan
    times, body = [], None
    for _ in range(runs):
        started = time.perf_counter()
        response = api.get(path, params=params, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        body = response.json()
    return times, body


def signed_in(stack: Stack) -> httpx.Client:
    """A browser's cookies after the dashboard's sign-in form with the viewer key (its CSRF
    double-submit included), so the page is timed as a signed-in ops engineer loads it."""
    browser = httpx.Client(base_url=stack.api_url, timeout=60)
    form = browser.get("/dashboard")
    form.raise_for_status()
    token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = browser.post("/dashboard/sign-in", data={"key": VIEWER_KEY, "csrf_token": token})
    if answer.status_code != 303:
        raise SystemExit(f"dashboard sign-in answered {answer.status_code}")
    return browser


def measure_page(
    browser: httpx.Client, path: str, params: dict[str, Any], runs: int
) -> tuple[list[float], dict[str, Any]]:
    """The whole server-rendered page (its counts, gates, chart and first receipts are in the HTML,
    so this is the time to the first paint of the counts, less the browser's own work)."""
    browser.get(path, params=params).raise_for_status()
    times, html = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        response = browser.get(path, params=params)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        html = response.text
    rows = html.count('<tr class="state-')
    return times, {"bytes": len(html), "receipt_rows": rows, "has_21211": "21211" in html}


def what_came_back(name: str, body: dict[str, Any]) -> dict[str, Any]:
    """The page's size and what it holds, so a fast wrong answer does not pass for a fast one."""
    if "receipts" not in body:
        return {"totals": {k: v for k, v in body["totals"].items() if v}}
    rows = body["receipts"]
    return {
        "rows": len(rows),
        "states": sorted({r["state"] for r in rows}),
        "codes": sorted({r["last_error_code"] for r in rows if r["last_error_code"]}),
        "more": body["next_cursor"] is not None,
    }


def explain(stack: Stack, broadcast_id: int, params: dict[str, Any]) -> str:
    """The page's query as dispatcher/reads/receipts.py builds it, under EXPLAIN (ANALYZE, BUFFERS)."""
    from dispatcher.reads.receipts import receipts_query

    with stack.database.session() as session:
        query = receipts_query(session, broadcast_id, **params, limit=100)
        compiled = query.compile(dialect=session.get_bind().dialect)
        rows = session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", compiled.params)
        return "\n".join(str(r[0]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=100_000, help="in the measured broadcast")
    parser.add_argument("--beside", type=int, default=100_000, help="deliveries of each older broadcast")
    parser.add_argument("--older", type=int, default=1, help="older broadcasts, before the measured one")
    parser.add_argument("--runs", type=int, default=20, help="timed requests per case")
    args = parser.parse_args()
    stack = Stack(db="postgresql", workers=0, name="dash", lane=False).prepare()
    try:
        loaded = load(stack, args.deliveries, args.beside, args.older)
        py = sys.executable
        stack.spawn(
            "api",
            [
                *(py, "-m", "uvicorn", "dispatcher.app:create_app", "--factory", "--host", "127.0.0.1"),
                *("--port", str(stack.api_port), "--no-access-log", "--log-level", "warning"),
            ],
        )
        stack.wait_http(stack.api_url + "/healthz")
        broadcast_id = loaded["broadcast_id"]
        results: dict[str, Any] = {}
        plans: dict[str, str] = {}
        for name, (path, params) in cases(broadcast_id, args.deliveries).items():
            times, body = measure(stack.api, path, params, args.runs)
            results[name] = {
                "ms": summarize([round(t, 2) for t in times]),
                "page": what_came_back(name, body),
            }
            print(f"{name}: {json.dumps(results[name])}", flush=True)
            if "receipts" in body:
                plans[name] = explain(stack, broadcast_id, params)
        browser = signed_in(stack)
        for name, params in (("page (no filter)", {}), ("page ?state=failed", {"state": "failed"})):
            times, held = measure_page(browser, f"/dashboard/broadcasts/{broadcast_id}", params, args.runs)
            case = f"/dashboard/broadcasts/{{id}} {name}"
            results[case] = {"ms": summarize([round(t, 2) for t in times]), "page": held}
            print(f"{case}: {json.dumps(results[case])}", flush=True)
    finally:
        stack.close()
    out = {
        "benchmark": "dashboard",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": "postgresql",
        "command": " ".join([".venv/bin/python -m benchmarks.dashboard", *sys.argv[1:]]),
        "deliveries": args.deliveries,
        "beside": args.beside,
        "older": args.older,
        "runs": args.runs,
        "load_s": loaded["load_s"],
        "results": results,
        "plans": plans,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    history = f"-after-{args.older}" if args.older != 1 else ""
    path = RESULTS / f"dashboard-postgresql-{args.deliveries}{history}.json"
    path.write_text(json.dumps(out, indent=2))
    for name, plan in plans.items():
        print(f"\n-- {name}\n{plan}")
    print("\n" + json.dumps({k: v for k, v in out.items() if k != "plans"}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
