"""Big broadcast: how fast the first admin hears, and how long everyone takes.

Real path: the database (SQLite file or the machine's PostgreSQL), Celery workers on Redis, the
real provider SDKs and the provider sandbox in its own process. The broadcast is created the way
the API creates it (open_incident + enqueue after commit); times are measured from that moment to
the sandbox's own receipt timestamps (same machine, same clock).

    .venv/bin/python -m benchmarks.fanout --subscribers 100000 --runs 3 --db postgresql

Writes benchmarks/results/fanout-<db>-<n>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def audience(n: int) -> list[Any]:
    """50 admins, 5,000 stakeholders, the rest customers; all email, 30% SMS, 2,000 org channels."""
    from dispatcher.subscribers import SubscriberIn

    subs = []
    for i in range(n):
        lists = ["admins"] if i < 50 else ["stakeholders"] if i < 5050 else ["customers"]
        subs.append(
            SubscriberIn(
                external_id=f"u{i}",
                lists=lists,
                email=f"user{i}@bench.example",
                phone=f"+1415{2000000 + i:07d}" if i % 10 < 3 else None,
                slack_channel=f"C{i % 2000:06d}" if i >= 50 else None,
            )
        )
    return subs


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process and its children (the worker pool) in MB."""
    total = 0
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]))
        except OSError:
            continue
    return round(total / 1024, 1)


class Stack:
    """Sandbox, workers and beat as separate processes, as in production."""

    def __init__(self, database_url: str, workers: int, env: dict[str, str]) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **env,
            "DATABASE_URL": database_url,
            "DISPATCHER_SANDBOX_URL": self.sandbox_url,
            "DISPATCHER_PUBLIC_URL": f"{self.sandbox_url}/hooks/service",
        }
        self.workers = workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logdir = Path(tempfile.mkdtemp(prefix="od-bench-"))

    def spawn(self, name: str, argv: list[str]) -> None:
        log = (self.logdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> None:
        py = sys.executable
        self.spawn(
            "sandbox", [py, "-m", "channels.sandbox", "--port", str(self.port), "--log-level", "warning"]
        )
        celery = [py, "-m", "celery", "-A", "dispatcher.celery_app"]
        for i in range(self.workers):
            self.spawn(
                f"worker{i}",
                [
                    *celery,
                    "worker",
                    "-Q",
                    "control,email,chat,sms,social,webhook",
                    "-c",
                    "1",
                    "-n",
                    f"bench{i}-{uuid.uuid4().hex[:4]}@%h",
                    "--loglevel",
                    "WARNING",
                ],
            )
        self.spawn("beat", [*celery, "beat", "-s", str(self.logdir / "schedule"), "--loglevel", "WARNING"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.sandbox_url + "/sandbox/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(3)  # workers connect to the broker

    def cpu_seconds(self, name: str) -> float:
        """CPU of the process and its live children (a Celery worker's pool does the work)."""
        root = self.procs[name].pid
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry.name) == root or int(fields[1]) == root:
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def warm_up(settings: Any) -> None:
    """What an API process does once at start: import the channel stack, compile the templates."""
    from channels.base import RenderContext
    from channels.registry import build_channels
    from dispatcher.message import EventKind, OutageMessage

    for adapter in build_channels(settings).values():
        adapter.condense(
            OutageMessage(title="warm-up").stamped(), RenderContext(event=EventKind.INCIDENT_OPENED)
        )


def run_once(stack: Stack, database: Any, settings: Any, n: int) -> dict[str, Any]:
    from dispatcher.broadcasts import enqueue, open_incident
    from dispatcher.message import OutageMessage
    from dispatcher.progress import progress

    httpx.delete(stack.sandbox_url + "/sandbox/messages")
    admin_emails = {f"user{i}@bench.example" for i in range(50)}
    admin_phones = {f"+1415{2000000 + i:07d}" for i in range(50) if i % 10 < 3}
    cpu_before = {name: stack.cpu_seconds(name) for name in stack.procs}
    message = OutageMessage(
        title="Checkout API errors",
        impact="major",
        summary="Card payments fail for some.",
        status_page_url="https://status.example.com",
    )
    created = time.time()
    with database.session() as session:
        _, broadcast = open_incident(session, settings, message)
        broadcast_id = broadcast.id
    enqueue(broadcast_id)
    created_done = time.time()
    while True:
        with database.session() as session:
            state = progress(session, broadcast_id)
        if state["state"] == "completed":
            break
        time.sleep(0.25)
    finished = time.time()
    first = httpx.get(stack.sandbox_url + "/sandbox/messages", params={"limit": 2000}, timeout=60).json()
    records = first if isinstance(first, list) else first.get("messages", [])
    admin_times = [
        m["received_at"] for m in records if m["recipient"] in admin_emails or m["recipient"] in admin_phones
    ]
    stats = httpx.get(stack.sandbox_url + "/sandbox/stats", timeout=30).json()
    cpu = {name: round(stack.cpu_seconds(name) - cpu_before[name], 1) for name in stack.procs}
    elapsed = finished - created
    tiers = {t["tier"]: t for t in state["tiers"]}
    return {
        "create_ms": round((created_done - created) * 1000, 1),
        "first_admin_ms": round((min(admin_times) - created) * 1000, 1),
        "all_admins_ms": round((max(admin_times) - created) * 1000, 1),
        "admins_received": len(admin_times),
        "complete_s": round(elapsed, 2),
        "deliveries": state["totals"]["sent"],
        "failed": state["totals"]["failed"],
        "deliveries_per_s": round(state["totals"]["sent"] / elapsed, 1),
        "provider_calls": {p: stats[p]["calls"] for p in ("sendgrid", "twilio", "slack", "x")},
        "tier_gates": {t: tiers[t]["gate"] for t in sorted(tiers)},
        "cpu_s": cpu,
        "sandbox_cpu_share": round(cpu["sandbox"] / max(0.001, sum(cpu.values())), 3),
        "peak_rss_mb": {name: peak_rss_mb(proc.pid) for name, proc in stack.procs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="od-bench-db-"))
    schema = f"bench_{run_id}"
    database_url = (
        f"sqlite:///{tmp / 'bench.db'}"
        if args.db == "sqlite"
        else f"{PG_URL}?options=-csearch_path%3D{schema}"
    )
    env = {
        "REDIS_URL": REDIS_URL,
        "DISPATCHER_REDIS_PREFIX": f"bench-{run_id}:",
        "DATABASE_URL": database_url,
        "DISPATCHER_RATE_TWILIO_PER_S": "500",  # a messaging service / short code, not one long code
        "DISPATCHER_RATE_SENDGRID_PER_S": "20",
    }
    os.environ.update(env)
    import sqlalchemy

    if args.db == "postgresql":
        admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    from config import get_settings
    from dispatcher.store.db import get_database
    from dispatcher.store.migrate import upgrade
    from dispatcher.store.subscribers import import_many

    settings = get_settings()
    database = get_database(settings)
    upgrade(database)
    started = time.time()
    subs = audience(args.subscribers)
    for start in range(0, len(subs), 5000):
        with database.session() as session:
            import_many(session, settings, subs[start : start + 5000])
    print(f"imported {len(subs)} subscribers in {time.time() - started:.1f}s", flush=True)

    stack = Stack(database_url, args.workers, env)
    runs = []
    try:
        stack.start()
        os.environ["DISPATCHER_SANDBOX_URL"] = stack.sandbox_url
        get_settings.cache_clear()
        settings = get_settings()
        warm_up(settings)
        for i in range(args.runs):
            result = run_once(stack, database, settings, args.subscribers)
            runs.append(result)
            print(f"run {i + 1}: {json.dumps(result)}", flush=True)
    finally:
        stack.stop()
        if args.db == "postgresql":
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"bench-{run_id}:*", count=1000):
            client.delete(key)

    def summary(field: str) -> dict[str, float]:
        values = [r[field] for r in runs]
        return {"median": statistics.median(values), "worst": max(values)}

    report = {
        "benchmark": "fanout",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "db": args.db,
        "subscribers": args.subscribers,
        "workers": args.workers,
        "runs": runs,
        "summary": {
            f: summary(f)
            for f in ("create_ms", "first_admin_ms", "all_admins_ms", "complete_s", "deliveries_per_s")
        },
        "command": " ".join(["python -m benchmarks.fanout", *sys.argv[1:]]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fanout-{args.db}-{args.subscribers}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
