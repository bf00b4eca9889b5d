"""Big broadcast, against the usual way, and scaling: how fast the first admin hears, how long everyone
takes, what it costs.

Real path: POST /v1/incidents to the API (uvicorn, its own process), Celery workers on Redis, the
database (a private PostgreSQL schema or SQLite), the real provider SDKs and the provider sandbox in
its own process. Times run from the moment the API answered to the sandbox's own receipt timestamps
and the service's tier timings (same machine, same clock).

    # 1. big broadcast: 100,000 subscribers, 5 runs
    .venv/bin/python -m benchmarks.fanout --subscribers 100000 --runs 5
    # 2. against the naive dispatcher (benchmarks/naive.py), same audience, same stack, same run
    .venv/bin/python -m benchmarks.fanout --subscribers 10000 --runs 3 --naive
    # 3. the big broadcast read in 6 languages and 20 time zones (issue 16): rendering cost and first admin
    .venv/bin/python -m benchmarks.fanout --subscribers 100000 --runs 3 --languages
    # 4. scaling: 1,000 / 10,000 / 100,000 subscribers with one and two worker processes
    .venv/bin/python -m benchmarks.fanout --scaling 1000,10000,100000 --worker-counts 1,2 --runs 1

Writes benchmarks/results/{fanout,compare,scaling}-<db>-....json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

import psutil

from benchmarks.stack import MESSAGE as MESSAGE_BODY
from benchmarks.stack import RESULTS, Stack, admin_addresses, audience, machine, summarize, ts

CHANNELS = ("email", "sms", "chat", "social")
PROVIDER_OF = {"email": "sendgrid", "sms": "twilio", "chat": "slack", "social": "x"}
FAST_LIMITS = {
    # a Twilio messaging service / short code and a SendGrid plan sized for 100k, as in production
    "DISPATCHER_RATE_TWILIO_PER_S": "500",
    "DISPATCHER_RATE_SENDGRID_PER_S": "20",
}
# --messaging-service: the same throughput through a Twilio messaging service (MessagingServiceSid)
MESSAGING_SERVICE = {
    "DISPATCHER_TWILIO_MESSAGING_SERVICE_SID": "MG" + "5" * 32,
    "DISPATCHER_RATE_TWILIO_MESSAGING_SERVICE_PER_S": "500",
    "DISPATCHER_RATE_SENDGRID_PER_S": "20",
}


def arrivals(stack: Stack, full: bool) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Admin arrival times, and per channel the first and last arrival (all records when `full`;
    otherwise the first 5,000, which hold tier 0)."""
    admins = admin_addresses()
    records = stack.sandbox.iter_messages() if full else iter(stack.sandbox.messages(limit=5000))
    admin_times: list[float] = []
    channels: dict[str, dict[str, float]] = {}
    for m in records:
        if m["channel"] == "webhook":  # the service's status callbacks, not deliveries
            continue
        t = m["received_at"]
        if m["recipient"] in admins:
            admin_times.append(t)
        c = channels.setdefault(m["channel"], {"first": t, "last": t, "count": 0})
        c["first"], c["last"], c["count"] = min(c["first"], t), max(c["last"], t), c["count"] + 1
    return admin_times, channels


def measure(stack: Stack, run: Any) -> dict[str, Any]:
    """CPU and machine-wide CPU around `run()`."""
    cpu_before, machine_before = stack.cpu(), psutil.cpu_times()
    result = run()
    cpu_after, machine_after = stack.cpu(), psutil.cpu_times()
    cpu = {n: round(cpu_after[n] - cpu_before.get(n, 0.0), 1) for n in cpu_after}
    busy = sum(
        getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice", "irq")
    )
    ours = sum(cpu.values())
    result["cpu_s"] = cpu
    result["sandbox_cpu_share"] = round(cpu.get("sandbox", 0) / max(0.001, ours), 3)
    result["machine_busy_cpu_s"] = round(busy, 1)
    result["other_processes_cpu_s"] = round(max(0.0, busy - ours), 1)
    result["peak_rss_mb"] = stack.peak_rss()
    return result


def dispatcher_run(stack: Stack, n: int) -> dict[str, Any]:
    stack.sandbox.clear()

    def run() -> dict[str, Any]:
        latency, body, answered = stack.open_incident()
        broadcast_id = body["broadcast"]["id"]
        state = stack.wait_completed(broadcast_id)
        admin_times, channels = arrivals(stack, full=n <= 20_000)
        stats = stack.sandbox.stats()
        tiers = state["tiers"]
        all_accepted = max(ts(t["all_accepted_at"]) or 0 for t in tiers)
        completed = ts(state["completed_at"]) or time.time()
        elapsed = completed - answered
        sent = state["totals"]["sent"]
        return {
            "api_ms": round(latency, 1),
            "first_admin_ms": round((min(admin_times) - answered) * 1000, 1),
            # from the request instead: under load the answer itself may come after the first admin
            "request_to_first_admin_ms": round((min(admin_times) - answered) * 1000 + latency, 1),
            "all_admins_ms": round((max(admin_times) - answered) * 1000, 1),
            "admins_received": len(admin_times),
            "all_tiers_accepted_s": round(all_accepted - answered, 2),
            "complete_s": round(elapsed, 2),
            "deliveries": sent,
            "failed": state["totals"]["failed"],
            "deliveries_per_s": round(sent / max(0.001, all_accepted - answered), 1),
            "provider_calls": {c: stats[PROVIDER_OF[c]]["calls"] for c in CHANNELS},
            "per_channel_s": {
                c: {"first": round(v["first"] - answered, 3), "last": round(v["last"] - answered, 3)}
                for c, v in channels.items()
            }
            if n <= 20_000
            else None,
            "tier_gates": {str(t["tier"]): t["gate"] for t in tiers},
            "tier_all_accepted_s": {
                str(t["tier"]): round(ts(t["all_accepted_at"]) - answered, 2) for t in tiers
            },
        }

    return measure(stack, run)


def naive_run(stack: Stack, subs: list[Any]) -> dict[str, Any]:
    from benchmarks import naive

    tasks = naive.plan(subs)
    expected = len(tasks)
    stack.sandbox.clear()

    def run() -> dict[str, Any]:
        started = time.time()
        naive.broadcast(tasks)
        enqueued = time.time()
        last_count, last_change = -1, time.monotonic()
        while True:
            stats = stack.sandbox.stats()
            count = sum(stats[p]["accepted"] for p in PROVIDER_OF.values())
            if count >= expected:
                break
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > 120:
                raise TimeoutError(f"naive dispatcher stalled at {count}/{expected}")
            time.sleep(0.25)
        admin_times, channels = arrivals(stack, full=True)
        stats = stack.sandbox.stats()
        last = max(v["last"] for v in channels.values())
        return {
            "enqueue_ms": round((enqueued - started) * 1000, 1),
            "first_admin_ms": round((min(admin_times) - started) * 1000, 1),
            "all_admins_ms": round((max(admin_times) - started) * 1000, 1),
            "complete_s": round(last - started, 2),
            "deliveries": sum(v["count"] for v in channels.values()),
            "deliveries_per_s": round(expected / max(0.001, last - started), 1),
            "provider_calls": {c: stats[PROVIDER_OF[c]]["calls"] for c in CHANNELS},
            "per_channel_s": {
                c: {"first": round(v["first"] - started, 3), "last": round(v["last"] - started, 3)}
                for c, v in channels.items()
            },
        }

    return measure(stack, run)


def warm_up(stack: Stack) -> None:
    """What an API process does once after it starts: import the channel stack, compile templates."""
    stack.api.post("/v1/preview", json=MESSAGE_BODY, headers=stack.auth()).raise_for_status()


def start_naive_workers(stack: Stack, count: int) -> None:
    prefix = f"naive-{stack.run_id}:"
    env = {"NAIVE_REDIS_URL": stack.redis_url, "NAIVE_PREFIX": prefix, "NAIVE_SANDBOX_URL": stack.sandbox_url}
    os.environ.update(env)
    for i in range(count):
        stack.spawn(
            f"naive{i}",
            [
                *(sys.executable, "-m", "celery", "-A", "benchmarks.naive", "worker", "-Q", "naive"),
                *("-P", "threads", "-c", "16", "-n", f"naive{i}-{stack.run_id}@%h", "--loglevel", "WARNING"),
                *("--without-gossip", "--without-mingle"),
            ],
            env,
        )
    time.sleep(4)


def remove_naive_keys(stack: Stack) -> None:
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    keys = list(client.scan_iter(match=f"naive-{stack.run_id}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


# --languages: the audience spread over every shipped language and 20 zones (120 combinations)
LOCALES = ("en", "de", "fr", "es", "pt-BR", "ja")
ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/Paris",
    "Europe/Madrid",
    "Europe/London",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Africa/Johannesburg",
    "Europe/Vienna",
    "America/Mexico_City",
    "Asia/Dubai",
    "America/Toronto",
)


def build_stack(
    db: str, workers: int, n: int, env: dict[str, str] | None = None, *, languages: bool = False
) -> tuple[Stack, list[Any]]:
    stack = Stack(db=db, workers=workers, env=env or FAST_LIMITS, name="bench").prepare()
    subs = audience(n, LOCALES, ZONES) if languages else audience(n)
    took = stack.import_subscribers(subs)
    print(f"imported {n} subscribers in {took:.1f}s", flush=True)
    return stack, subs


SUMMARY_FIELDS = ("api_ms", "first_admin_ms", "all_admins_ms", "all_tiers_accepted_s", "complete_s")


def peak_memory(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Highest VmHWM of any one process per component (a worker = its main process and pool child)."""
    peaks: dict[str, float] = defaultdict(float)
    for r in runs:
        for name, v in r["peak_rss_mb"].items():
            peaks[name] = max(peaks[name], v["max"])
    return dict(peaks)


def report(kind: str, args: argparse.Namespace, extra: dict[str, Any], name: str) -> None:
    out = {
        "benchmark": kind,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": args.db,
        "command": " ".join([".venv/bin/python -m benchmarks.fanout", *sys.argv[1:]]),
        **extra,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("runs",)}, indent=2))
    print(f"written to {path}")


def rendering_cost(stack: Stack, subs: list[Any]) -> dict[str, Any]:
    """Every variant the audience needs, rendered in this process by the engine's own code (the
    key of each subscriber, the message as each key reads it, each channel's condenser): what the
    workers spend on rendering in one broadcast, measured without the rest of it."""
    from channels.registry import build_channels
    from dispatcher.domain.message import EventKind, OutageMessage
    from dispatcher.domain.variant_key import VariantKey, reader_key
    from dispatcher.engine.variants import broadcast_locales, readers_adapters, render_key

    settings = stack.settings()
    message = OutageMessage.model_validate(MESSAGE_BODY).stamped()
    policy = {"message": message.model_dump(mode="json")}
    languages = broadcast_locales(policy)
    keys = {reader_key(s.locale, s.timezone, languages, settings.default_locale) for s in subs}
    adapters = build_channels(settings)
    readers = readers_adapters(adapters, public=False)  # as the planner renders a subscriber's key
    event = EventKind.INCIDENT_OPENED.value
    started = time.perf_counter()
    rendered = sum(len(render_key(event, policy, message, key, readers, settings)) for key in keys)
    public = readers_adapters(adapters, public=True).keys() - readers.keys()  # the social post, once
    rendered += len(
        render_key(event, policy, message, VariantKey(), {c: adapters[c] for c in public}, settings)
    )
    took = time.perf_counter() - started
    return {
        "combinations": len({(s.locale, s.timezone) for s in subs}),
        "keys": len(keys),
        "variants": rendered,
        "rendering_s": round(took, 3),
        "per_variant_ms": round(took * 1000 / max(1, rendered), 2),
    }


def big(args: argparse.Namespace) -> None:
    env = MESSAGING_SERVICE if args.messaging_service else FAST_LIMITS
    stack, subs = build_stack(args.db, args.workers, args.subscribers, env, languages=args.languages)
    runs: list[dict[str, Any]] = []
    naive_runs: list[dict[str, Any]] = []
    try:
        stack.start()
        warm_up(stack)
        if args.naive:
            start_naive_workers(stack, args.workers)
        for i in range(args.runs):
            result = dispatcher_run(stack, args.subscribers)
            runs.append(result)
            print(f"run {i + 1}: {json.dumps(result)}", flush=True)
            if args.naive:
                result = naive_run(stack, subs)
                naive_runs.append(result)
                print(f"naive {i + 1}: {json.dumps(result)}", flush=True)
    finally:
        if args.naive:
            remove_naive_keys(stack)
        stack.close()
    summary = {f: summarize([r[f] for r in runs]) for f in (*SUMMARY_FIELDS, "deliveries_per_s")}
    summary["deliveries_per_s"]["worst"] = min(r["deliveries_per_s"] for r in runs)
    extra: dict[str, Any] = {
        "subscribers": args.subscribers,
        "workers": args.workers,
        "summary": summary,
        "peak_rss_mb": peak_memory(runs),
        "sandbox_cpu_share": summarize([r["sandbox_cpu_share"] for r in runs]),
        "runs": runs,
    }
    if args.languages:
        extra["rendering"] = rendering_cost(stack, subs)
        print(f"rendering: {json.dumps(extra['rendering'])}", flush=True)
    if not args.naive:
        suffix = ("-mg" if args.messaging_service else "") + ("-languages" if args.languages else "")
        report("fanout", args, extra, f"fanout-{args.db}-{args.subscribers}{suffix}.json")
        return
    naive_summary = {
        f: summarize([r[f] for r in naive_runs]) for f in ("first_admin_ms", "all_admins_ms", "complete_s")
    }
    per_channel: dict[str, Any] = {}
    for c in CHANNELS:
        ours = summarize([r["per_channel_s"][c]["last"] for r in runs])["median"]
        theirs = summarize([r["per_channel_s"][c]["last"] for r in naive_runs])["median"]
        ours_first = summarize([r["per_channel_s"][c]["first"] for r in runs])["median"]
        theirs_first = summarize([r["per_channel_s"][c]["first"] for r in naive_runs])["median"]
        per_channel[c] = {
            "dispatcher_last_s": ours,
            "naive_last_s": theirs,
            "ratio_total": round(theirs / max(0.001, ours), 2),
            "dispatcher_first_s": ours_first,
            "naive_first_s": theirs_first,
        }
    extra["naive"] = {"summary": naive_summary, "peak_rss_mb": peak_memory(naive_runs), "runs": naive_runs}
    extra["ratio_naive_over_dispatcher"] = {
        "complete": round(naive_summary["complete_s"]["median"] / summary["complete_s"]["median"], 2),
        "first_admin": round(
            naive_summary["first_admin_ms"]["median"] / summary["first_admin_ms"]["median"], 2
        ),
        "all_admins": round(naive_summary["all_admins_ms"]["median"] / summary["all_admins_ms"]["median"], 2),
        "per_channel": per_channel,
    }
    report("compare", args, extra, f"compare-{args.db}-{args.subscribers}.json")


def row_of(n: int, workers: int, runs: list[dict[str, Any]], source: str) -> dict[str, Any]:
    return {
        "subscribers": n,
        "workers": workers,
        "source": source,
        "complete_s": summarize([r["complete_s"] for r in runs]),
        "first_admin_ms": summarize([r["first_admin_ms"] for r in runs]),
        "deliveries_per_s": summarize([r["deliveries_per_s"] for r in runs]),
        "peak_rss_mb": peak_memory(runs),
        "sandbox_cpu_share": summarize([r["sandbox_cpu_share"] for r in runs]),
        "runs": runs,
    }


def scaling(args: argparse.Namespace) -> None:
    rows = []
    for n in [int(x) for x in args.scaling.split(",")]:
        for workers in [int(x) for x in args.worker_counts.split(",")]:
            previous = RESULTS / f"fanout-{args.db}-{n}.json"
            if args.reuse and previous.exists() and json.loads(previous.read_text())["workers"] == workers:
                done = json.loads(previous.read_text())  # the big-broadcast benchmark's own runs
                rows.append(row_of(n, workers, done["runs"], source=previous.name))
                print(f"{n} x {workers}: reused {previous.name}", flush=True)
                continue
            stack, _ = build_stack(args.db, workers, n)
            try:
                stack.start()
                warm_up(stack)
                runs = [dispatcher_run(stack, n) for _ in range(args.runs)]
            finally:
                stack.close()
            row = row_of(n, workers, runs, source="this run")
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    report("scaling", args, {"rows": rows}, f"scaling-{args.db}.json")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (each one pool child)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--naive", action="store_true", help="run the naive dispatcher after each run")
    parser.add_argument(
        "--messaging-service",
        action="store_true",
        help="SMS through a Twilio messaging service at 500/s instead of a 500/s long-code limit",
    )
    parser.add_argument(
        "--languages", action="store_true", help="subscribers spread over 6 languages and 20 time zones"
    )
    parser.add_argument("--scaling", help="comma-separated subscriber counts: the scaling benchmark")
    parser.add_argument("--worker-counts", default="1,2")
    parser.add_argument(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scaling: reuse fanout-<db>-<n>.json (the big broadcast's runs) where it has the same workers",
    )
    args = parser.parse_args()
    if args.scaling:
        scaling(args)
    else:
        big(args)


if __name__ == "__main__":
    main()
