"""At the providers' limits: do we finish close to the bound the limits set, without ever exceeding them?

- SMS: 3,000 messages, the sandbox limiting Twilio to 100 msg/s (429 beyond it) and answering each
  call after 150 ms; the service configured with the same limit (DISPATCHER_RATE_TWILIO_PER_S=100).
  Bound: 3,000 / 100 = 30 s.
- Chat: 100 Slack channels, 3 broadcasts (the incident and two updates, posted back to back through
  the API), the sandbox limiting each channel to 1 post/s. Bound: the third post to a channel cannot
  come sooner than 2 s after the first.

Run at each DISPATCHER_RATE_HEADROOM given, `--runs` times each. Reports completion time against
the bound and the highest rate the sandbox saw in any 1-second window (overall for Twilio, per
channel for Slack), plus the 429s the sandbox answered. For Twilio also the arrival distribution the
sandbox measured (`arrival_profile`): requests per second, the busiest 1-second window, how far each
request arrived after the rate-limit slot it was given (the dispatcher stamps the slot on requests
to the sandbox), and the first arrival after the API's answer. With several runs the summary gives
the median of each figure and the worst busiest second.

    .venv/bin/python -m benchmarks.limits            # --sms 3000 --chat 100 --headroom 0.8,0.9,0.95,1.0
    .venv/bin/python -m benchmarks.limits --chat 0 --headroom 0.9 --runs 3    # SMS only

Writes benchmarks/results/limits-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from benchmarks.stack import RESULTS, Stack, machine, phone, ts
from dispatcher.engine.ratelimit import busiest_window

SMS_LIMIT = 100
SMS_LATENCY_MS = 150


def subscribers(sms: int, chat: int) -> list[Any]:
    from dispatcher.domain.subscribers import SubscriberIn

    subs = [SubscriberIn(external_id=f"s{i}", lists=["customers"], phone=phone(i)) for i in range(sms)]
    subs += [
        SubscriberIn(external_id=f"c{i}", lists=["customers"], slack_channel=f"C{i:06d}") for i in range(chat)
    ]
    return subs


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def arrival_profile(
    arrivals: Sequence[tuple[float, float | None, float | None]], answered: float, interval: float
) -> dict[str, Any]:
    """What the sandbox saw: requests per whole second from the first arrival, the busiest 1-second
    window, the spacing of consecutive arrivals (ms), the first and last arrivals after the API's
    answer (s); for the requests that carried their slot, how late they were sent and arrived (ms)
    and how much slot time went unused (s; a slot unused is throughput lost, `interval` apart)."""
    times = sorted(a for a, _, _ in arrivals)
    if not times:
        return {}
    first = times[0]
    per_second = [0] * (int(times[-1] - first) + 1)
    for t in times:
        per_second[int(t - first)] += 1
    stamped = [(a, s, d) for a, s, d in arrivals if s is not None and d is not None]
    quantiles = (("min", 0.0), ("p1", 0.01), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    gaps = [1000 * (b - a) for a, b in pairwise(times)]
    out: dict[str, Any] = {
        "first_arrival_s": round(first - answered, 3),
        "last_arrival_s": round(times[-1] - answered, 3),
        "busiest_1s": busiest_window(times),
        "per_second": per_second,
        "spacing_ms": {
            q: round(percentile(gaps, v), 2) for q, v in (("p1", 0.01), ("p50", 0.5), ("p99", 0.99))
        }
        if gaps
        else {},
    }
    if stamped:
        for name, values in (
            ("slot_to_arrival_ms", [1000 * (a - s) for a, s, _ in stamped]),
            ("slot_to_sent_ms", [1000 * (d - s) for _, s, d in stamped]),
            ("sent_to_arrival_ms", [1000 * (a - d) for a, _, d in stamped]),
        ):
            out[name] = {q: round(percentile(values, v), 2) for q, v in quantiles}
        slots = sorted(s for _, s, _ in stamped)
        out["unused_slot_time_s"] = round(sum(max(0.0, b - a - interval) for a, b in pairwise(slots)), 2)
        out["stamped"] = len(stamped)
    return out


def run(headroom: float, sms: int, chat: int, db: str, raw: Path | None = None) -> dict[str, Any]:
    env = {
        "DISPATCHER_RATE_TWILIO_PER_S": str(SMS_LIMIT),
        "DISPATCHER_RATE_SLACK_PER_CHANNEL_PER_S": "1",
        "DISPATCHER_RATE_HEADROOM": str(headroom),
    }
    stack = Stack(db=db, workers=2, env=env, name="limits").prepare()
    try:
        stack.import_subscribers(subscribers(sms, chat))
        stack.start()
        stack.sandbox.faults("twilio", rate_limit_per_s=SMS_LIMIT, latency_ms=SMS_LATENCY_MS)
        stack.sandbox.faults("slack", rate_limit_per_s=1)
        stack.api.post("/v1/preview", json={"title": "warm-up"}, headers=stack.auth()).raise_for_status()

        stack.sandbox.clear()
        body = {"title": "Text messages delayed", "impact": "minor", "channels": ["sms"]}
        _, created, answered = stack.open_incident(body)
        state = stack.wait_completed(created["broadcast"]["id"])
        last = max(ts(t["all_accepted_at"]) or 0 for t in state["tiers"])
        stats = stack.sandbox.stats()["twilio"]
        seen = stack.sandbox.arrivals("twilio")
        profile = arrival_profile(seen, answered, 1 / (SMS_LIMIT * headroom))
        if raw is not None:
            raw.mkdir(parents=True, exist_ok=True)
            path = raw / f"arrivals-h{headroom}-{time.strftime('%H%M%S')}.json"
            path.write_text(json.dumps({"answered": answered, "arrivals": seen}))
        bound = sms / SMS_LIMIT
        sms_result = {
            "messages": state["totals"]["sent"],
            "failed": state["totals"]["failed"],
            "complete_s": round(last - answered, 2),
            "bound_s": bound,
            "over_bound_pct": round(100 * ((last - answered) / bound - 1), 1),
            "paced_bound_s": round(bound / headroom, 2),
            "max_per_1s": stats["max_per_1s"],
            "limit_per_s": SMS_LIMIT,
            "calls": stats["calls"],
            "sandbox_429s": stats["faults"],
            "arrivals": profile,
        }
        print(f"headroom {headroom} sms: {json.dumps(sms_result)}", flush=True)
        if not chat:
            return {"headroom": headroom, "sms": sms_result}

        stack.sandbox.clear()
        body = {"title": "Chat notices", "impact": "minor", "status": "investigating", "channels": ["chat"]}
        _, created, first_answer = stack.open_incident(body)
        incident = created["incident"]["id"]
        broadcasts = [created["broadcast"]["id"]]
        for status in ("identified", "monitoring"):
            _, updated, _ = stack.post_update(incident, {"status": status, "channels": ["chat"]})
            broadcasts.append(updated["broadcast"]["id"])
        states = [stack.wait_completed(b) for b in broadcasts]
        last = max(ts(t["all_accepted_at"]) or 0 for s in states for t in s["tiers"])
        stats = stack.sandbox.stats()["slack"]
        posts = stack.sandbox.messages("chat")
        first_post = min(m["received_at"] for m in posts)
        per_channel = stats.get("max_per_1s_by_channel", {})
        chat_result = {
            "channels": chat,
            "posts": len(posts),
            "failed": sum(s["totals"]["failed"] for s in states),
            "complete_s": round(last - first_answer, 2),
            "first_to_last_post_s": round(max(m["received_at"] for m in posts) - first_post, 2),
            "bound_s": 2.0,
            "max_per_1s_any_channel": max(per_channel.values(), default=0),
            "limit_per_channel_per_s": 1,
            "calls": stats["calls"],
            "sandbox_429s": stats["faults"],
        }
        print(f"headroom {headroom} chat: {json.dumps(chat_result)}", flush=True)
        return {"headroom": headroom, "sms": sms_result, "chat": chat_result}
    finally:
        stack.close()


def summary(headroom: float, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The SMS runs at one headroom: median completion, over-bound, lag; the worst busiest second."""
    sms = [r["sms"] for r in rows]
    lags = [s["arrivals"]["slot_to_arrival_ms"] for s in sms if "slot_to_arrival_ms" in s.get("arrivals", {})]
    out = {
        "headroom": headroom,
        "runs": len(sms),
        "complete_s": [s["complete_s"] for s in sms],
        "median_complete_s": round(statistics.median(s["complete_s"] for s in sms), 2),
        "median_over_bound_pct": round(statistics.median(s["over_bound_pct"] for s in sms), 1),
        "worst_max_per_1s": max(s["max_per_1s"] for s in sms),
        "sandbox_429s": sum(s["sandbox_429s"] for s in sms),
        "median_first_arrival_s": round(statistics.median(s["arrivals"]["first_arrival_s"] for s in sms), 3),
    }
    if lags:
        out["median_slot_to_arrival_ms"] = {
            q: round(statistics.median(lag[q] for lag in lags), 2) for q in lags[0]
        }
    print(f"headroom {headroom}: {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sms", type=int, default=3000)
    parser.add_argument("--chat", type=int, default=100)
    parser.add_argument("--headroom", default="0.8,0.9,0.95,1.0")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--runs", type=int, default=1, help="runs at each headroom (medians reported)")
    parser.add_argument("--raw", type=Path, help="a folder for each run's raw arrivals (arrival, slot, sent)")
    args = parser.parse_args()
    headrooms = [float(h) for h in args.headroom.split(",")]
    rows = [run(h, args.sms, args.chat, args.db, args.raw) for h in headrooms for _ in range(args.runs)]
    out = {
        "benchmark": "limits",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": args.db,
        "command": " ".join([".venv/bin/python -m benchmarks.limits", *sys.argv[1:]]),
        "rows": rows,
        "summary": [summary(h, [r for r in rows if r["headroom"] == h]) for h in headrooms],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"limits-{args.db}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
