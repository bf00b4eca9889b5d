"""Big broadcast, against the usual way, and scaling: how fast the first admin hears, how long everyone
takes, what it costs.

Real path: POST /v1/incidents to the API (uvicorn, its own process), Celery workers on Redis, the
database (a private PostgreSQL schema or SQLite), the real provider SDKs and the provider sandbox in
its own process. Times run from the moment the API answered to the sandbox's own receipt timestamps
and the service's tier timings (same machine, same clock).

As in production, every SMS brings two signed Twilio callbacks to POST /v1/webhooks/twilio and every
email SendGrid's events (processed, delivered) in batches to POST /v1/webhooks/sendgrid, served by an
API process of their own as `up` runs them (`--callbacks api`: by the commanders' one), and a run
lasts until every email and SMS is *delivered* (`--callbacks sink`: to a receiver in the sandbox
instead, the service never sees them, and a run ends once all is accepted). Each run reports the
callbacks ingested per second, the webhooks' p50/p99 as the sandbox measured them (non-2xx answers
and failures: 0), `--probes` small incidents (admins only) opened on the quiet service and again at
the peak of the flood (their POST /v1/incidents latency, and each one's time to first admin), and
the CPU-seconds of the service's processes per 1,000 deliveries and per 1,000 callbacks.

    # 1. big broadcast: 100,000 subscribers, 5 runs
    .venv/bin/python -m benchmarks.fanout --subscribers 100000 --runs 5
    # 2. against the naive dispatcher (benchmarks/naive.py), same audience, same stack, same run
    .venv/bin/python -m benchmarks.fanout --subscribers 10000 --runs 3 --naive
    # 3. the big broadcast read in 6 languages and 20 time zones (issue 16): rendering cost and first admin
    .venv/bin/python -m benchmarks.fanout --subscribers 100000 --runs 3 --languages
    # 4. scaling: 1,000 / 10,000 / 100,000 subscribers with one and two worker processes
    .venv/bin/python -m benchmarks.fanout --scaling 1000,10000,100000 --worker-counts 1,2 --runs 1
    # 5. the callback flood (issue 17), profiled with py-spy: worker pool child and API, for the run
    .venv/bin/python -m benchmarks.fanout --subscribers 10000 --runs 1 --py-spy /tmp/profiles
    # 6. the issue's SMS flood, a second incident opened every second through it (first admin at the peak)
    .venv/bin/python -m benchmarks.fanout --subscribers 3000 --sms-only --twilio-per-s 300 \
        --probes 8 --probe-gap 1

Writes benchmarks/results/{fanout,compare,scaling}-<db>-....json (a big broadcast: ...-<n>-hooks.json,
-api.json or -sink.json, -pyspy when profiled) and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import psutil

from benchmarks.stack import MESSAGE as MESSAGE_BODY
from benchmarks.stack import (
    RESULTS,
    Stack,
    admin_addresses,
    audience,
    callbacks_of,
    cpu_cost,
    machine,
    summarize,
    ts,
)

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
    otherwise the first 5,000, which hold tier 0); the probes' messages left out."""
    admins = admin_addresses()
    records = stack.sandbox.iter_messages() if full else iter(stack.sandbox.messages(limit=5000))
    admin_times: list[float] = []
    channels: dict[str, dict[str, float]] = {}
    for m in records:
        if m["channel"] == "webhook":  # the service's status callbacks, not deliveries
            continue
        if PROBE_MARK in str(m.get("subject") or "") + str(m.get("text") or ""):
            continue
        t = m["received_at"]
        if m["recipient"] in admins:
            admin_times.append(t)
        c = channels.setdefault(m["channel"], {"first": t, "last": t, "count": 0})
        c["first"], c["last"], c["count"] = min(c["first"], t), max(c["last"], t), c["count"] + 1
    return admin_times, channels


def sms_per_second(stack: Stack, since: float) -> list[int]:
    """SMS the sandbox accepted in each second from `since` (the broadcast's answer), probes left
    out: where the SMS stream ran below its limit, and for how long."""
    counts: dict[int, int] = defaultdict(int)
    for m in stack.sandbox.iter_messages():
        if m["channel"] == "sms" and PROBE_MARK not in str(m.get("text") or ""):
            counts[int(m["received_at"] - since)] += 1
    return [counts.get(i, 0) for i in range(max(counts, default=-1) + 1)]


def measure(stack: Stack, run: Any) -> dict[str, Any]:
    """CPU and machine-wide CPU around `run()`, and the CPU per 1,000 deliveries and callbacks."""
    cpu_before, machine_before = stack.cpu(), psutil.cpu_times()
    result = run()
    cpu_after, machine_after = stack.cpu(), psutil.cpu_times()
    cpu = {n: round(cpu_after[n] - cpu_before.get(n, 0.0), 2) for n in cpu_after}
    busy = sum(
        getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice", "irq")
    )
    ours = sum(cpu.values())
    result["cpu_s"] = cpu
    result["sandbox_cpu_share"] = round(cpu.get("sandbox", 0) / max(0.001, ours), 3)
    result["machine_busy_cpu_s"] = round(busy, 1)
    result["other_processes_cpu_s"] = round(max(0.0, busy - ours), 1)
    ingested = result.get("callbacks", {}).get("all", {}).get("posts", 0) if stack.to_service else 0
    result["cpu_cost"] = cpu_cost(cpu, result.get("deliveries_all", result.get("deliveries", 0)), ingested)
    result["peak_rss_mb"] = stack.peak_rss()
    return result


PROBE_MARK = "Probe "  # every probe's title starts with it
PROBE_SCOPE = ["probe"]  # a component only the admins (who are scoped to nothing) hear about
# The peak: the first moment callbacks reach the API at FLOOD_PER_S or more, over the last
# FLOOD_WINDOW_S (PeakProber). Half the broadcast accepted, the earlier trigger, fell after the flood
# in two runs of three on SQLite at 3,000: no callback arrived while the probes were opened.
FLOOD_PER_S = 100
FLOOD_WINDOW_S = 0.5


def callback_posts(stack: Stack) -> int:
    """Status webhook POSTs the sandbox has made so far (to the API, or to its sink)."""
    return int(callbacks_of(stack.sandbox.stats()).get("all", {}).get("posts", 0))


class Rate:
    """A counter's rate over the last `window_s` seconds of readings."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: deque[tuple[float, int]] = deque()

    def rate(self, count: int) -> float:
        now = time.monotonic()
        self._seen.append((now, count))
        while len(self._seen) > 2 and now - self._seen[1][0] >= self.window_s:
            self._seen.popleft()
        first_at, first = self._seen[0]
        return (count - first) / (now - first_at) if now - first_at >= self.window_s / 2 else 0.0


class PeakProber(threading.Thread):
    """Watches the callbacks reaching the service from the moment the broadcast is answered, and
    opens the peak probes the first moment they arrive at FLOOD_PER_S or more. The flood comes
    mostly after the sends are accepted (the `delivered` callbacks), so it is watched through the
    whole run, not only while the broadcast is sending. A run whose callbacks never flow that fast
    is probed after they stop (`trigger`: "after the run")."""

    def __init__(self, stack: Stack, count: int, gap_s: float = 0.0) -> None:
        super().__init__(name="peak-prober", daemon=True)
        self.stack, self.count, self.gap_s = stack, count, gap_s
        self.probes: list[dict[str, Any]] = []
        self.at_peak: dict[str, Any] = {}
        self._halt = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            flood = Rate(FLOOD_WINDOW_S)
            while not self._halt.is_set():
                rate = flood.rate(callback_posts(self.stack))
                if rate >= FLOOD_PER_S:
                    self._probe("flood", rate)
                    return
                self._halt.wait(0.1)
        except BaseException as exc:  # handed to finish(), raised in the run's own thread
            self._error = exc

    def _probe(self, trigger: str, rate: float) -> None:
        before, started = callback_posts(self.stack), time.monotonic()
        self.probes = open_probes(self.stack, self.count, "peak", self.gap_s)
        after = callback_posts(self.stack)
        self.at_peak = {
            "trigger": trigger,
            "gap_s": self.gap_s,
            "callbacks_per_s_before": round(rate, 1),
            "callbacks_per_s_while_opening": round(
                (after - before) / max(0.001, time.monotonic() - started), 1
            ),
        }

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self._halt.set()
        self.join()
        if self._error is not None:
            raise self._error
        if not self.probes:
            self._probe("after the run", 0.0)
        return self.probes, self.at_peak


def scheduled_ms(pid: int) -> dict[int, tuple[float, float]]:
    """Each thread of a process: milliseconds on a core, and milliseconds runnable but waiting for
    one (Linux /proc/<pid>/task/*/schedstat). The second is what a busy machine adds to a request's
    own CPU, whatever the request does."""
    threads: dict[int, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
            on_cpu, runnable, _ = (task / "schedstat").read_text().split()
            threads[int(task.name)] = (int(on_cpu) / 1e6, int(runnable) / 1e6)
    return threads


def scheduled_during(
    before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
) -> dict[str, float]:
    """The API's threads between two readings: all of them, and the one that ran most (the thread
    serving the commander's request, at quiet and at the flood alike)."""
    spent = {
        tid: (ran - before.get(tid, (0.0, 0.0))[0], waited - before.get(tid, (0.0, 0.0))[1])
        for tid, (ran, waited) in after.items()
    }
    top_ran, top_waited = max(spent.values(), default=(0.0, 0.0))
    return {
        "api_cpu_ms": round(sum(r for r, _ in spent.values()), 1),
        "api_runnable_wait_ms": round(sum(w for _, w in spent.values()), 1),
        "handler_cpu_ms": round(top_ran, 1),
        "handler_runnable_wait_ms": round(top_waited, 1),
    }


def open_probes(stack: Stack, count: int, label: str, gap_s: float = 0.0) -> list[dict[str, Any]]:
    """`count` small incidents (scoped to a component only the 50 admins hear about), back to back
    or `gap_s` apart (from one opening to the next), each followed by the commander's other two
    requests (issue 17): reading its broadcast's progress (GET /v1/broadcasts/{id}) and posting an
    update to it. The latency of each, and each opening's answer time and title. Back to back, only
    the first is "a second incident at the peak": the rest queue behind the ones before them."""
    out = []
    for i in range(count):
        if i and gap_s:
            time.sleep(max(0.0, out[-1]["opened"] + gap_s - time.monotonic()))
        opened = time.monotonic()
        title = f"{PROBE_MARK}{label} {i} {stack.run_id} {time.time_ns()}"
        body = {**MESSAGE_BODY, "title": title, "components": PROBE_SCOPE}
        api = stack.service()["api"].pid
        threads = scheduled_ms(api)
        latency, answer, answered = stack.open_incident(body)
        scheduled = scheduled_during(threads, scheduled_ms(api))
        broadcast = answer["broadcast"]["id"]
        started = time.perf_counter()
        stack.progress(broadcast)
        read_ms = (time.perf_counter() - started) * 1000
        update = {"status": "identified", "summary": f"{PROBE_MARK}update: the cause is found."}
        update_ms, updated, _ = stack.post_update(answer["incident"]["id"], update)
        out.append(
            {
                "title": title,
                "opened": opened,
                "api_ms": round(latency, 1),
                # the API's threads while the opening was in flight (callbacks wait for it)
                **scheduled,
                "read_ms": round(read_ms, 1),
                "update_ms": round(update_ms, 1),
                "answered": answered,
                "broadcast": broadcast,
                "update_broadcast": updated["broadcast"]["id"] if updated.get("broadcast") else None,
            }
        )
    return out


def probe_broadcasts(probes: list[dict[str, Any]]) -> list[int]:
    """Every broadcast the probes made: each opening's and each update's."""
    return [b for p in probes for b in (p["broadcast"], p.get("update_broadcast")) if b is not None]


def note_first_admins(stack: Stack, probes: list[dict[str, Any]]) -> None:
    """Each probe's `admin_ms`: from its answer to its first admin's receipt at the sandbox, in one
    pass over the sandbox's messages (left out for a probe no admin heard), `all_admins_ms` to the
    last of its admins' messages (its opening's and its update's); and its `tier_start_ms`,
    from its answer to its admins' tier starting (the rest of `admin_ms` is the batch, its slot and
    the request)."""
    admins = admin_addresses()
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for m in stack.sandbox.iter_messages():
        if m["recipient"] not in admins:
            continue
        text = str(m.get("subject") or "") + str(m.get("text") or "")
        for i, probe in enumerate(probes):
            if m["received_at"] >= probe["answered"] - 5 and probe["title"] in text:
                first[i] = min(first.get(i, m["received_at"]), m["received_at"])
                last[i] = max(last.get(i, m["received_at"]), m["received_at"])
    for i, received in first.items():
        probes[i]["admin_ms"] = round((received - probes[i]["answered"]) * 1000, 1)
        # every message the probe sent its admins (its opening's and its update's)
        probes[i]["all_admins_ms"] = round((last[i] - probes[i]["answered"]) * 1000, 1)
    for probe in probes:  # where the time went: up to the admins' tier starting, and after it
        started = ts(stack.progress(probe["broadcast"])["tiers"][0]["started_at"])
        if started is not None:
            probe["tier_start_ms"] = round((started - probe["answered"]) * 1000, 1)


def probes_summary(probes: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 and p99 of each of the commander's requests (`api`: opening the incident) and of each
    probe's first admin (`admin`). `first_admin_ms` is the first probe's alone, as every result
    before December 7 night reported it: one sample, and in the quiet set the cold one."""
    out: dict[str, Any] = {"n": len(probes)}
    for name in (
        "api",
        "api_cpu",
        "api_runnable_wait",
        "handler_cpu",
        "handler_runnable_wait",
        "read",
        "update",
        "admin",
        "all_admins",
        "tier_start",
    ):
        latencies = sorted(p[f"{name}_ms"] for p in probes if f"{name}_ms" in p)
        if not latencies:
            continue
        out[f"{name}_ms"] = latencies
        out[f"{name}_p50_ms"] = latencies[(len(latencies) - 1) // 2]
        out[f"{name}_p99_ms"] = latencies[min(len(latencies) - 1, int(0.99 * len(latencies) + 0.5) - 1)]
    out["first_admin_ms"] = probes[0].get("admin_ms") if probes else None
    return out


def quiet_probes(stack: Stack, count: int) -> dict[str, Any]:
    """The probes on the quiet service, one at a time, each waited for (its callbacks too)."""
    probes = []
    for _ in range(count):
        [probe] = open_probes(stack, 1, "quiet")
        for broadcast in probe_broadcasts([probe]):
            stack.wait_completed(broadcast)
        probes.append(probe)
    stack.sandbox.http.post("/sandbox/drain", params={"timeout": 60})
    note_first_admins(stack, probes)
    return probes_summary(probes)


WAITING = ("pending", "sending", "sent")  # an email or SMS not yet reported delivered, bounced, ...


def wait_delivered(stack: Stack, broadcast_id: int, stall_s: float = 60) -> dict[str, Any]:
    """Until no email or SMS of the broadcast still waits for its provider's report, or none has
    moved for `stall_s` (a report lost: `waiting` says how many, and should be 0): the count by
    state and the last `delivered_at`, read from the deliveries themselves."""
    from sqlalchemy import func, select

    from dispatcher.store.models import Delivery

    last_waiting, last_change = -1, time.monotonic()
    while True:
        with stack.database.session() as session:
            rows = session.execute(
                select(Delivery.channel, Delivery.state, func.count(), func.max(Delivery.delivered_at))
                .where(Delivery.broadcast_id == broadcast_id)
                .group_by(Delivery.channel, Delivery.state)
            ).all()
        waiting = sum(n for c, st, n, _ in rows if c in ("email", "sms") and st in WAITING)
        if waiting != last_waiting:
            last_waiting, last_change = waiting, time.monotonic()
        if waiting == 0 or time.monotonic() - last_change > stall_s:
            last = max((at for *_, at in rows if at is not None), default=None)
            return {
                "waiting": waiting,
                "delivered": sum(n for _, st, n, _ in rows if st == "delivered"),
                "by_channel_state": {f"{c}:{st}": n for c, st, n, _ in rows},
                "last_delivered_at": last.timestamp() if last is not None else None,
            }
        time.sleep(0.5)


def accepted_in(stack: Stack, broadcast_ids: list[int]) -> int:
    """Deliveries the providers accepted (sent or reported after) in these broadcasts."""
    from sqlalchemy import func, select

    from dispatcher.store.models import Delivery

    with stack.database.session() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Delivery.broadcast_id.in_(broadcast_ids),
                    Delivery.state.in_(("sent", "delivered", "bounced", "undelivered")),
                )
            )
            or 0
        )


def dispatcher_run(stack: Stack, n: int, probes: int = 0, probe_gap_s: float = 0.0) -> dict[str, Any]:
    stack.sandbox.clear()
    quiet = quiet_probes(stack, probes) if probes else None
    stack.sandbox.clear()

    def run() -> dict[str, Any]:
        latency, body, answered = stack.open_incident()
        broadcast_id = body["broadcast"]["id"]
        prober = PeakProber(stack, probes, probe_gap_s)
        if probes:
            prober.start()
        deadline = time.monotonic() + 1800
        while True:
            state = stack.progress(broadcast_id)
            if state["state"] == "completed":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"broadcast {broadcast_id} did not complete: logs in {stack.tmp}")
            time.sleep(0.25)
        delivered = wait_delivered(stack, broadcast_id) if stack.to_service else None
        peak, at_peak = prober.finish() if probes else ([], {})
        for probe_broadcast in probe_broadcasts(peak):
            stack.wait_completed(probe_broadcast)
        stack.sandbox.http.post("/sandbox/drain", params={"timeout": 300})
        admin_times, channels = arrivals(stack, full=n <= 20_000)
        stats = stack.sandbox.stats()
        tiers = state["tiers"]
        all_accepted = max(ts(t["all_accepted_at"]) or 0 for t in tiers)
        completed = ts(state["completed_at"]) or time.time()
        elapsed = completed - answered
        totals = state["totals"]
        sent = totals["sent"] + totals["delivered"]
        callbacks = callbacks_of(stats)
        result: dict[str, Any] = {
            "callbacks_to": stack.callbacks,
            "api_ms": round(latency, 1),
            "first_admin_ms": round((min(admin_times) - answered) * 1000, 1),
            # from the request instead: under load the answer itself may come after the first admin
            "request_to_first_admin_ms": round((min(admin_times) - answered) * 1000 + latency, 1),
            "all_admins_ms": round((max(admin_times) - answered) * 1000, 1),
            "admins_received": len(admin_times),
            "all_tiers_accepted_s": round(all_accepted - answered, 2),
            "complete_s": round(elapsed, 2),
            "deliveries": sent,
            # every delivery of the run, the probes' too: what the CPU was spent on
            "deliveries_all": accepted_in(stack, [broadcast_id, *probe_broadcasts(peak)]),
            "failed": totals["failed"],
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
            "callbacks": callbacks,
            "sms_per_s": sms_per_second(stack, answered),
            # the limit kept, probes included: the sandbox's busiest 1-second window and its 429s
            "sms_busiest_1s": stats["twilio"]["max_per_1s"],
            "sms_429s": stats["twilio"]["faults"],
        }
        if delivered is not None:
            last = delivered["last_delivered_at"]
            result["delivered"] = delivered
            result["all_delivered_s"] = round(last - answered, 2) if last else None
        if probes:
            if peak:
                note_first_admins(stack, peak)
            result["probes"] = {
                "quiet": quiet,
                "peak": {
                    **probes_summary(peak),
                    **at_peak,
                }
                if peak
                else None,
            }
        return result

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
    db: str,
    workers: int,
    n: int,
    env: dict[str, str] | None = None,
    *,
    languages: bool = False,
    callbacks: str = "api",
    sms_only: bool = False,
) -> tuple[Stack, list[Any]]:
    stack = Stack(db=db, workers=workers, env=env or FAST_LIMITS, name="bench", callbacks=callbacks)
    stack.prepare()
    spoken = (LOCALES, ZONES) if languages else ()
    subs = audience(n, *spoken, scoped=True, sms_only=sms_only)
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


class Profiler:
    """py-spy recording the first worker (its pool child: --subprocesses) and the API for one run,
    in py-spy's raw (collapsed stacks) format. Only the thread holding the GIL is sampled (--gil):
    py-spy's idle detection counts a thread blocked in a socket read (psycopg, redis, requests) as
    busy, so without it the shares are of wall time in each path, not of CPU."""

    def __init__(self, stack: Stack, folder: Path, label: str) -> None:
        import shutil

        self.files: dict[str, Path] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("worker0", "api"):
            pid = stack.processes.children[name].pid
            out = folder / f"{label}-{name}.txt"
            argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "100", "--gil"]
            argv += ["-o", str(out)]
            argv += ["--subprocesses", "--nonblocking"] if name.startswith("worker") else ["--nonblocking"]
            self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.files[name] = out
        time.sleep(1)  # attached before the run starts

    def stop(self) -> dict[str, Any]:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(timeout=60)
        return {name: top_frames(path) for name, path in self.files.items() if path.exists()}


def top_frames(path: Path, count: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks: samples, and the frames with the most samples inclusive (on
    the stack) and self (on top), as shares of all samples."""
    inclusive: dict[str, int] = defaultdict(int)
    own: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        for frame in set(frames):
            inclusive[frame] += samples
        if frames:
            own[frames[-1]] += samples

    def top(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, round(n / max(1, total), 3)) for f, n in sorted(d.items(), key=lambda x: -x[1])[:count]]

    return {"file": str(path), "samples": total, "inclusive": top(inclusive), "self": top(own)}


def big(args: argparse.Namespace) -> None:
    env = dict(MESSAGING_SERVICE if args.messaging_service else FAST_LIMITS)
    if args.twilio_per_s:
        env["DISPATCHER_RATE_TWILIO_PER_S"] = str(args.twilio_per_s)
    stack, subs = build_stack(
        args.db,
        args.workers,
        args.subscribers,
        env,
        languages=args.languages,
        callbacks=args.callbacks,
        sms_only=args.sms_only,
    )
    runs: list[dict[str, Any]] = []
    naive_runs: list[dict[str, Any]] = []
    try:
        stack.start()
        warm_up(stack)
        if args.naive:
            start_naive_workers(stack, args.workers)
        for i in range(args.runs):
            label = f"fanout-{args.subscribers}-run{i + 1}"
            profiler = Profiler(stack, Path(args.py_spy), label) if args.py_spy else None
            result = dispatcher_run(stack, args.subscribers, 0 if args.naive else args.probes, args.probe_gap)
            if profiler is not None:
                result["profile"] = profiler.stop()
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
    if all(r.get("all_delivered_s") is not None for r in runs):
        summary["all_delivered_s"] = summarize([r["all_delivered_s"] for r in runs])
    extra: dict[str, Any] = {
        "subscribers": args.subscribers,
        "workers": args.workers,
        "callbacks_to": args.callbacks,
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
        suffix += "-sms" if args.sms_only else ""
        suffix += f"-twilio{args.twilio_per_s:g}" if args.twilio_per_s else ""
        suffix += f"-{args.callbacks}"  # where the callbacks went (issue 17): hooks, api or sink
        suffix += "-pyspy" if args.py_spy else ""  # a profiled run never overwrites an unprofiled one
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
    parser.add_argument(
        "--twilio-per-s",
        type=float,
        help="Twilio's limit instead of 500/s (issue 17's own flood: --sms-only --twilio-per-s 300)",
    )
    parser.add_argument(
        "--sms-only",
        action="store_true",
        help="every subscriber a phone and nothing else: the workers' CPU per SMS delivery",
    )
    parser.add_argument(
        "--callbacks",
        choices=["hooks", "api", "sink"],
        default="hooks",
        help=(
            "the sandbox's status webhooks to an API process of their own, which applies them, as "
            "`up` runs them (hooks); to the one API process commanders use too (api); or to its sink"
        ),
    )
    parser.add_argument(
        "--probes",
        type=int,
        default=5,
        help="small incidents (admins only) opened on the quiet service, then at the flood's peak",
    )
    parser.add_argument(
        "--probe-gap",
        type=float,
        default=0.0,
        help="seconds from one peak probe's opening to the next (0: back to back); each spaced probe "
        "is a second incident at the flood, not one queued behind the others",
    )
    parser.add_argument("--py-spy", help="folder: py-spy records worker0 and the API during each run")
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
