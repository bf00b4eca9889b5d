"""Scale-out: one broadcast shared by two separate worker groups, and what one delivery costs the
shared state (Redis, PostgreSQL) that lets the service grow past one machine.

The API and the workers keep nothing of their own between requests and tasks: everything they share
is in Redis (the Celery broker, the global rate limits, the breakers) and PostgreSQL (deliveries,
counts, receipts). So more capacity is more processes, here two `celery worker` processes started on
their own with their own `--hostname` (two groups, as two machines would run them), fed by one
broker. The run shows:

- every delivery sent exactly once (the sandbox's records against the deliveries' table), and every
  email and SMS delivered, the callbacks going to the API as in production;
- the providers' limits kept across both groups (the sandbox's highest count in any one second);
- the split of deliveries between the groups (each `dispatcher.send_batch` task's result, in each
  group's own log);
- Redis commands per delivery (INFO commandstats before and after, on the stack's private Redis: no
  one else's commands in it) and PostgreSQL rows written per delivery (pg_stat_user_tables,
  n_tup_ins + n_tup_upd + n_tup_del, in the stack's own schema);
- the CPU-seconds of each process per 1,000 deliveries and callbacks, and from those the rate at which
  each resource would be full.

    .venv/bin/python -m benchmarks.scaleout --subscribers 5000 --concurrency 1 --twilio-per-s 100

SendGrid at 20 requests/s and Twilio at `--twilio-per-s` (100 by default: low enough that the SMS
are bound by it, so the run shows both groups keeping one limit between them).

Writes benchmarks/results/scaleout-postgresql-<n>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from typing import Any

import psutil
import redis

from benchmarks.fanout import FAST_LIMITS, measure, wait_delivered, warm_up
from benchmarks.stack import RESULTS, Stack, audience, callbacks_of, machine, ts

GROUPS = ("a", "b")
SEND_RESULT = re.compile(r"dispatcher\.send_batch\[[^\]]+\] succeeded in [0-9.e-]+s: (\d+)")
STATS_FLUSH_S = 11  # PostgreSQL 15 flushes an idle backend's table counters within 10 s
TWILIO_PER_S = 100  # low enough that the SMS are bound by it: both groups share one limit


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def pg_writes(stack: Stack) -> dict[str, int]:
    """Rows inserted, updated and deleted per table of the stack's schema, as PostgreSQL counts them."""
    rows = stack.sql(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE schemaname = :s",
        s=stack.schema,
    )
    return {str(name): int(ins) + int(upd) + int(dele) for name, ins, upd, dele in rows}


def pg_counts(stack: Stack) -> dict[str, int]:
    rows = stack.sql(
        "SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del) FROM pg_stat_user_tables "
        "WHERE schemaname = :s",
        s=stack.schema,
    )
    ins, upd, dele = (int(x or 0) for x in rows[0])
    return {"inserted": ins, "updated": upd, "deleted": dele}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items(), key=lambda x: -x[1]) if v}


def group_split(stack: Stack) -> dict[str, int]:
    """Rows each group's send_batch tasks recorded (claimed and answered), from its own log."""
    return {
        g: sum(int(n) for n in SEND_RESULT.findall(stack.processes.log(f"worker{g}").read_text()))
        for g in GROUPS
    }


def exactly_once(stack: Stack, broadcast_id: int) -> dict[str, Any]:
    """The sandbox's records against the broadcast's deliveries: each (channel, address) expected
    once and received once (the social post: counted, its address is the account); duplicates,
    missing and unexpected counted."""
    rows = stack.sql("SELECT channel, address FROM deliveries WHERE broadcast_id = :b", b=broadcast_id)
    expected = Counter((str(c), str(a).lower()) for c, a in rows if c != "social")
    received: Counter[tuple[str, str]] = Counter()
    social = 0
    for m in stack.sandbox.iter_messages():
        if m["channel"] == "social":
            social += 1
        elif m["channel"] != "webhook":
            received[(str(m["channel"]), str(m["recipient"]).lower())] += 1
    social_expected = sum(1 for c, _ in rows if c == "social")
    extra = stack.sql(
        "SELECT coalesce(sum(sends - 1 - resends), 0) FROM deliveries WHERE broadcast_id = :b "
        "AND sends > 1 + resends",
        b=broadcast_id,
    )
    return {
        "expected": sum(expected.values()) + social_expected,
        "received": sum(received.values()) + social,
        "duplicates": sum(n - 1 for n in received.values() if n > 1) + max(0, social - social_expected),
        "missing": sum(1 for k in expected if k not in received) + max(0, social_expected - social),
        "unexpected": sum(1 for k in received if k not in expected),
        "extra_sends_counted": int(extra[0][0]),
    }


def ceilings(result: dict[str, Any], cores: int) -> dict[str, Any]:
    """Deliveries per second at which each resource would be full, from this run's own costs: a
    worker core (CPU-s per delivery), an API core (CPU-s per callback, at this run's callbacks per
    delivery), and Redis at an assumed 100,000 commands/s on its one thread."""
    cost = result["cpu_cost"]
    deliveries = max(1, cost["deliveries"])
    callbacks_per_delivery = cost["callbacks"] / deliveries
    out: dict[str, Any] = {"cores_here": cores, "callbacks_per_delivery": round(callbacks_per_delivery, 3)}
    if cost["workers_per_1000_deliveries"]:
        out["per_worker_core"] = round(1000 / cost["workers_per_1000_deliveries"], 1)
    if cost["api_per_1000_callbacks"] and callbacks_per_delivery:
        out["per_api_core"] = round(1000 / (cost["api_per_1000_callbacks"] * callbacks_per_delivery), 1)
    ops = result["redis"]["calls_per_delivery"]
    out["redis_at_100k_ops_per_s"] = round(100_000 / ops, 1) if ops else None
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {**FAST_LIMITS, "DISPATCHER_RATE_TWILIO_PER_S": str(args.twilio_per_s)}
    stack = Stack(db="postgresql", redis="private", workers=0, env=env, name="scale")
    try:
        stack.prepare()
        took = stack.import_subscribers(audience(args.subscribers))
        print(f"imported {args.subscribers} subscribers in {took:.1f}s", flush=True)
        stack.start()
        for g in GROUPS:  # two separate groups: own process, own hostname, one broker
            stack.start_worker(
                g, args.concurrency, hostname=f"group{g.upper()}-{stack.run_id}@%h", loglevel="INFO"
            )
        stack.wait_workers()
        warm_up(stack)
        stack.sandbox.clear()
        client = redis.Redis.from_url(stack.redis_url)
        stack.database.dispose()  # this process's backends exit: their counters are flushed
        time.sleep(STATS_FLUSH_S)
        redis_before, pg_before, pg_tables_before = redis_calls(client), pg_counts(stack), pg_writes(stack)
        split_before = group_split(stack)

        def broadcast() -> dict[str, Any]:
            latency, body, answered = stack.open_incident()
            broadcast_id = body["broadcast"]["id"]
            state = stack.wait_completed(broadcast_id)
            delivered = wait_delivered(stack, broadcast_id)
            stack.sandbox.http.post("/sandbox/drain", params={"timeout": 300})
            stats = stack.sandbox.stats()
            totals = state["totals"]
            last = delivered["last_delivered_at"]
            all_accepted = max(ts(t["all_accepted_at"]) or 0 for t in state["tiers"])
            return {
                "broadcast_id": broadcast_id,
                "api_ms": round(latency, 1),
                "all_accepted_s": round(all_accepted - answered, 2),
                "all_delivered_s": round(last - answered, 2) if last else None,
                "deliveries": totals["sent"] + totals["delivered"],
                "failed": totals["failed"],
                "delivered": delivered,
                "callbacks": callbacks_of(stats),
                "max_per_1s": {p: stats[p]["max_per_1s"] for p in ("twilio", "sendgrid", "slack", "x")},
                "max_per_1s_slack_channel": max(stats["slack"].get("max_per_1s_by_channel", {0: 0}).values()),
                "rejected": {p: stats[p]["rejected"] for p in ("twilio", "sendgrid", "slack", "x")},
            }

        result = measure(stack, broadcast)
        time.sleep(STATS_FLUSH_S)
        redis_after, pg_after, pg_tables_after = redis_calls(client), pg_counts(stack), pg_writes(stack)
        client.close()
        split = delta(group_split(stack), split_before)
        deliveries = max(1, result["deliveries"])
        redis_ops = delta(redis_after, redis_before)
        redis_ops.pop("info", None)  # this benchmark's own
        pg = {k: pg_after[k] - pg_before[k] for k in pg_after}
        written = sum(pg.values())
        result["exactly_once"] = exactly_once(stack, result["broadcast_id"])
        result["limits"] = {
            "configured_per_s": {
                "twilio": float(env["DISPATCHER_RATE_TWILIO_PER_S"]),
                "sendgrid": float(env["DISPATCHER_RATE_SENDGRID_PER_S"]),
                "slack_per_channel": 1,
            },
            "max_seen_per_1s": {
                **result.pop("max_per_1s"),
                "slack_per_channel": result.pop("max_per_1s_slack_channel"),
            },
        }
        result["split"] = {
            "rows_recorded_by_group": split,
            "share": {g: round(n / max(1, sum(split.values())), 3) for g, n in split.items()},
        }
        result["redis"] = {
            "calls": sum(redis_ops.values()),
            "calls_per_delivery": round(sum(redis_ops.values()) / deliveries, 2),
            "top_commands": dict(list(redis_ops.items())[:12]),
        }
        result["postgresql"] = {
            **pg,
            "rows_written": written,
            "rows_written_per_delivery": round(written / deliveries, 2),
            "by_table": delta(pg_tables_after, pg_tables_before),
        }
        result["ceilings_deliveries_per_s"] = ceilings(result, psutil.cpu_count() or 1)
        return result
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1, help="pool children per worker group")
    parser.add_argument(
        "--twilio-per-s", type=float, default=TWILIO_PER_S, help="DISPATCHER_RATE_TWILIO_PER_S for the run"
    )
    args = parser.parse_args()
    result = run(args)
    out = {
        "benchmark": "scaleout",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": "postgresql",
        "command": " ".join([".venv/bin/python -m benchmarks.scaleout", *sys.argv[1:]]),
        "subscribers": args.subscribers,
        "groups": {g: {"concurrency": args.concurrency} for g in GROUPS},
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"scaleout-postgresql-{args.subscribers}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
