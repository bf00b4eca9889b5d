"""The callback path alone: what one signed Twilio status callback costs the API, in a minute instead
of a full flood.

The flood benchmark (benchmarks/fanout.py) measures callbacks among everything else a broadcast does
on the same two cores, so a change to the webhook path moves its figures by less than their noise.
Here the API (uvicorn, its own process, the inbox's applier inside it as `up` runs it) is the only
process of ours; a thread pool in this process posts `--posts` signed callbacks (`--clients` at a
time) and the API's CPU-seconds are read around them. The same number of `GET /healthz` gives the
floor every request pays (the server, the middleware, routing), so what the webhook itself adds is
the difference. The callbacks name deliveries that do not exist: the applier's work per report is
the no-match case here, and the flood measures the rest.

A commander beside the flood: `--probes` incidents are opened one at a time on the quiet API, then
again while a third batch of `--posts` callbacks pours in, and their `POST /v1/incidents` latency
compared. With no workers and no sandbox sending, this is what the callbacks alone, in the same API
process, do to a commander: the flood benchmark adds the sends and the sandbox on the same cores.

    .venv/bin/python -m benchmarks.callbacks                      # SQLite (the embedded default)
    .venv/bin/python -m benchmarks.callbacks --db postgresql --posts 10000
    .venv/bin/python -m benchmarks.callbacks --callbacks hooks    # to the providers' door, as `up`

With `--callbacks hooks` the callbacks (and the floor's `/healthz`) go to the process `up` gives the
providers (`create_callbacks_app`, which applies them) and its CPU is read; the commander's probes
still go to the people's API, which then applies none.

Writes benchmarks/results/callbacks-<db>.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from statistics import median
from typing import Any
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator

from benchmarks.stack import MESSAGE, RESULTS, Stack, cpu_seconds, machine

WARM_UP = 200  # requests before the clock starts: imports, pools and caches filled


def twilio_callbacks(stack: Stack, count: int) -> list[tuple[str, str, str]]:
    """`count` status callbacks (path, form body, signature), signed as the sandbox's Twilio signs."""
    validator = RequestValidator(stack.sandbox_secret)
    base = stack.callback_url.rstrip("/")
    out = []
    for i in range(count):
        params = {
            "MessageSid": f"SM{i:032x}",
            "MessageStatus": "delivered" if i % 2 else "sent",
            "AccountSid": "AC" + "0" * 32,
            "To": "+15550001111",
        }
        path = f"/v1/webhooks/twilio?{urlencode({'delivery_id': 10_000_000 + i})}"
        out.append((path, urlencode(params), validator.compute_signature(base + path, params)))
    return out


def hammer(
    base_url: str, count: int, clients: int, call: Callable[[httpx.Client, int], int]
) -> tuple[float, list[float]]:
    """`count` calls over `clients` threads; the wall time and each call's latency. Any answer but
    2xx stops the run: a figure over failed requests would measure the failure path."""
    latencies: list[float] = []
    failures: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for i in range(k, count, clients):
                started = time.perf_counter()
                status = call(http, i)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    failures.append(f"request {i}: {status}")
                    return

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"stopped: {failures[0]}")
    return time.perf_counter() - started, sorted(latencies)


def measured(
    stack: Stack, count: int, clients: int, call: Callable[[httpx.Client, int], int]
) -> dict[str, Any]:
    """Posts/s, the CPU-ms per request of the process the callbacks go to (its applier included,
    once the inbox is empty) and the latency as the clients saw it."""
    from dispatcher.engine import inbox

    pid = stack.processes.children["api-hooks" if stack.callbacks == "hooks" else "api"].pid
    before = cpu_seconds(pid)
    wall, latencies = hammer(stack.hooks_url, count, clients, call)
    inbox.wait_applied(stack.settings(), timeout_s=60)
    used = cpu_seconds(pid) - before
    n = len(latencies)
    return {
        "requests": n,
        "per_s": round(n / wall),
        "api_cpu_ms_per_request": round(used * 1000 / n, 3),
        "p50_ms": round(latencies[n // 2] * 1000, 1),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 1),
    }


def commander(stack: Stack, probes: int, label: str, gap_s: float = 0.0) -> list[float]:
    """`probes` small incidents opened one after the other, `gap_s` apart: each one's latency, ms."""
    out = []
    for i in range(probes):
        body = {**MESSAGE, "title": f"Commander probe {label} {i} {time.time_ns()}"}
        out.append(stack.open_incident(body)[0])
        time.sleep(gap_s)
    return out


def beside_the_flood(
    stack: Stack, probes: int, flood: Callable[[], object], flood_s: float
) -> dict[str, Any]:
    """The commander's latency quiet, then while `flood` (lasting about `flood_s`) runs in a thread:
    the probes start once it is under way and are spread over its middle."""
    quiet = commander(stack, probes, "quiet")
    thread = threading.Thread(target=flood)
    thread.start()
    time.sleep(min(0.5, flood_s / 5))
    during = commander(stack, probes, "flood", gap_s=max(0.0, flood_s * 0.6 / probes - 0.03))
    still_flooding = thread.is_alive()
    thread.join()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"p50_ms": round(median(ordered), 1), "max_ms": round(ordered[-1], 1)}

    return {
        "quiet": summary(quiet),
        "during": summary(during),
        "ratio_p50": round(median(during) / median(quiet), 2),
        "flood_outlasted_the_probes": still_flooding,
        "quiet_ms": [round(v, 1) for v in quiet],
        "during_ms": [round(v, 1) for v in during],
    }


def run(db: str, posts: int, clients: int, probes: int, callbacks: str = "api") -> dict[str, Any]:
    with Stack(db=db, workers=0, lane=False, name="callbacks", callbacks=callbacks) as stack:
        stack.prepare().start(beat=False)
        bodies = twilio_callbacks(stack, WARM_UP + 2 * posts)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}

        def callback(http: httpx.Client, i: int) -> int:
            path, body, signature = bodies[i]
            signed = {**headers, "X-Twilio-Signature": signature}
            return http.post(path, content=body, headers=signed).status_code

        def health(http: httpx.Client, _i: int) -> int:
            return http.get("/healthz").status_code

        hammer(stack.api_url, WARM_UP, clients, callback)
        webhook = measured(stack, posts, clients, lambda http, i: callback(http, WARM_UP + i))
        floor = measured(stack, posts, clients, health)
        flood_s = posts / webhook["per_s"]
        again = WARM_UP + posts  # fresh callbacks: the second flood applies as the first did
        beside = (
            beside_the_flood(
                stack,
                probes,
                lambda: hammer(stack.hooks_url, posts, clients, lambda h, i: callback(h, again + i)),
                flood_s,
            )
            if probes
            else None
        )
    return {
        "webhook": webhook,
        "floor_healthz": floor,
        "webhook_over_floor_cpu_ms": round(
            webhook["api_cpu_ms_per_request"] - floor["api_cpu_ms_per_request"], 3
        ),
        "commander_beside_the_flood": beside,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--probes", type=int, default=10, help="commander incidents, quiet and in a flood")
    parser.add_argument(
        "--callbacks", choices=["api", "hooks"], default="api", help="people's API or providers' door"
    )
    args = parser.parse_args()
    runs = [run(args.db, args.posts, args.clients, args.probes, args.callbacks) for _ in range(args.runs)]
    result = {
        "benchmark": "callbacks",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python -m benchmarks.callbacks", *sys.argv[1:]]),
        "machine": machine(),
        "db": args.db,
        "posts": args.posts,
        "clients": args.clients,
        "callbacks_to": args.callbacks,
        "runs": runs,
    }
    suffix = "-hooks" if args.callbacks == "hooks" else ""
    path = RESULTS / f"callbacks-{args.db}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
