"""The public status page under load while the service is sending the big broadcast: does the page keep
up (requests/s, p50, p99), and does the broadcast's first admin still hear as soon?

The big broadcast's stack and audience (benchmarks/fanout.py: 100,000 subscribers, 2 workers, the
API in its own uvicorn process, PostgreSQL, the provider sandbox). Per round: one broadcast with no
load (the reference), then, for each path, one broadcast with wrk hammering that path on loopback
from `--lead-s` before the incident is opened until `--duration` seconds have passed (bounded in
time; the broadcast's first tiers fall inside it). Between them, each path under load with the
service idle (`--idle-s`), to tell the route's own cost from the broadcast's competition for the CPU.

wrk is the load generator (Debian: `apt-get install -y wrk`); the benchmark stops before it builds
anything if wrk is not on PATH. Every request is a full 200 (wrk sends no If-None-Match), and the
per-client limit on public views is raised for the run (one loopback client would otherwise be
answered 429 after 300 views an hour); the limit's Redis round trip is still made on every request.

    .venv/bin/python -m benchmarks.statuspage                           # 100k, /status and summary.json
    .venv/bin/python -m benchmarks.statuspage --subscribers 5000 --paths /healthz --duration 10

Writes benchmarks/results/statuspage-<db>-<n>.json and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.fanout import FAST_LIMITS, build_stack, dispatcher_run, warm_up
from benchmarks.stack import RESULTS, Stack, machine, summarize

PATHS = ("/status", "/api/v2/summary.json")
# one loopback client is every client here: lift the per-address view limits (still counted in Redis)
UNLIMITED = {
    "DISPATCHER_PUBLIC_VIEWS_PER_HOUR": "1000000000",
    "DISPATCHER_STATUS_REQUESTS_PER_HOUR": "1000000000",
}
MARK = "WRK-RESULT "
# wrk's done() hook: the figures as one JSON line, so nothing is parsed out of its human output
REPORT_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
    .. '"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
    .. '"non_2xx_3xx":%d,"timeouts":%d}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean, e.connect, e.read,
    e.write, e.status, e.timeout))
end
""".replace("MARK", MARK)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "wrk is not installed: this benchmark uses it as its load generator. "
            "On Debian/Ubuntu: apt-get install -y wrk (as root), then run it again."
        )
    return found


class Load:
    """One bounded wrk run against one URL, started in the background."""

    def __init__(self, wrk: str, url: str, connections: int, duration_s: int, script: Path) -> None:
        argv = [wrk, "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "5s", "-s", str(script), url]
        self.url, self.started = url, time.time()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate()
        line = next((x for x in out.splitlines() if x.startswith(MARK)), None)
        if self.proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed on {self.url} (exit {self.proc.returncode}):\n{out}")
        raw = json.loads(line[len(MARK) :])
        seconds = raw["duration_us"] / 1e6
        errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
        return {
            "requests": raw["requests"],
            "seconds": round(seconds, 2),
            "requests_per_s": round(raw["requests"] / max(0.001, seconds), 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2),
            "p90_ms": round(raw["p90_us"] / 1000, 2),
            "p99_ms": round(raw["p99_us"] / 1000, 2),
            "max_ms": round(raw["max_us"] / 1000, 2),
            "mean_ms": round(raw["mean_us"] / 1000, 2),
            "bytes_per_response": round(raw["bytes"] / max(1, raw["requests"])),
            "non_2xx_3xx": raw["non_2xx_3xx"],
            "socket_errors": errors,
            "started_at": round(self.started, 3),
        }


def check_route(stack: Stack, path: str) -> dict[str, Any]:
    """One plain GET before any load: the route must answer 200 (else the figures would be of a 404)."""
    response = httpx.get(stack.api_url + path, timeout=30)
    if response.status_code != 200:
        raise SystemExit(
            f"GET {path} answered {response.status_code}: is the route there? "
            "(try --paths /healthz for a dry run of the harness)"
        )
    return {
        "status": response.status_code,
        "content_type": response.headers.get("content-type"),
        "bytes": len(response.content),
        "cache_control": response.headers.get("cache-control"),
        "etag": response.headers.get("etag"),
    }


def loaded_run(
    stack: Stack, args: argparse.Namespace, wrk: str, script: Path, path: str | None
) -> dict[str, Any]:
    """The big broadcast, with wrk on `path` from `lead_s` before the incident (none: no load)."""
    load, spy, load_average = None, None, [round(x, 2) for x in os.getloadavg()]
    if path is not None:
        load = Load(wrk, stack.api_url + path, args.connections, args.duration, script)
        if args.profile:
            spy = profile(stack, args.profile, path, args.duration)
        time.sleep(args.lead_s)
    result = dispatcher_run(stack, args.subscribers)
    result["loaded_path"] = path
    result["load_average_before"] = load_average
    if load is not None:
        result["load"] = load.result()
        result["load"]["lead_s"] = args.lead_s
    if spy is not None:
        spy.wait()
    return result


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile(stack: Stack, folder: Path, path: str, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy on the API process while it is loaded (collapsed stacks, one file per path): where a
    request's time goes, for --profile."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"api{path.replace('/', '_')}.txt"
    pid = stack.processes.children["api"].pid
    argv = [
        str(py_spy()),
        "record",
        "-p",
        str(pid),
        "-d",
        str(seconds),
        "-f",
        "raw",
        "-o",
        str(out),
        "-r",
        "50",
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (each one pool child)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated paths to load")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (no load, then each path loaded)")
    parser.add_argument("--duration", type=int, default=60, help="seconds of wrk load per loaded broadcast")
    parser.add_argument("--lead-s", type=float, default=3.0, help="load before the incident is opened")
    parser.add_argument("--idle-s", type=int, default=15, help="seconds of load on the idle service")
    parser.add_argument("--connections", type=int, default=16, help="wrk's open connections")
    parser.add_argument("--profile", type=Path, help="py-spy the API under each load into this folder")
    args = parser.parse_args()
    wrk = wrk_binary()
    if args.profile and not py_spy():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy (and root, or ptrace rights)")
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    script = Path(tempfile.mkstemp(prefix="statuspage-", suffix=".lua")[1])
    script.write_text(REPORT_LUA)
    stack, _ = build_stack(args.db, args.workers, args.subscribers, {**FAST_LIMITS, **UNLIMITED})
    runs: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    try:
        stack.start()
        warm_up(stack)
        routes = {path: check_route(stack, path) for path in paths}
        print(f"routes: {json.dumps(routes)}", flush=True)
        for i in range(args.rounds):
            for path in [None, *paths]:
                result = loaded_run(stack, args, wrk, script, path)
                runs.append(result)
                print(f"round {i + 1}, load {path}: {json.dumps(result)}", flush=True)
                if i == 0 and path is None:  # the snapshot now holds an incident, as mid-broadcast
                    for p in paths:
                        idle[p] = Load(wrk, stack.api_url + p, args.connections, args.idle_s, script).result()
                        print(f"idle service, load {p}: {json.dumps(idle[p])}", flush=True)
    finally:
        stack.close()
        script.unlink(missing_ok=True)

    def broadcast(of: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            f: summarize([r[f] for r in of])
            for f in ("first_admin_ms", "all_admins_ms", "all_tiers_accepted_s")
        }

    summary: dict[str, Any] = {
        "no load": {"broadcast": broadcast([r for r in runs if r["loaded_path"] is None])}
    }
    for path in paths:
        mine = [r for r in runs if r["loaded_path"] == path]
        load = {f: summarize([r["load"][f] for r in mine]) for f in ("requests_per_s", "p50_ms", "p99_ms")}
        load["requests_per_s"]["worst"] = min(r["load"]["requests_per_s"] for r in mine)
        summary[path] = {
            "broadcast": broadcast(mine),
            "load": load,
            "non_2xx_3xx": sum(r["load"]["non_2xx_3xx"] for r in mine),
            "socket_errors": sum(r["load"]["socket_errors"] for r in mine),
            "idle": idle.get(path),
        }
    out = {
        "benchmark": "statuspage",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": args.db,
        "command": " ".join([".venv/bin/python -m benchmarks.statuspage", *sys.argv[1:]]),
        "subscribers": args.subscribers,
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "lead_s": args.lead_s,
        "routes": routes,
        "summary": summary,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"statuspage-{args.db}-{args.subscribers}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
