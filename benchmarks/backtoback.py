"""Back to back at the default limits: incident A, then incident B a few seconds later, while A's
SMS still crawl at Twilio's shipped 1/s. How soon do B's admins hear?

Every run is a fresh stack (API, workers, beat, sandbox, a private schema) with the shipped limits
(Twilio 1/s per number, SendGrid 10 requests/s) and the big-broadcast audience (50 admins, 30% SMS).
A is opened, B `--gap` seconds after A's API answer; B's admin messages are found by their
delivery ids and timed from B's API answer to the sandbox's receipt (same machine, same clock).
Nothing waits for A to finish: at 1/s its SMS take hours.

    .venv/bin/python -m benchmarks.backtoback --subscribers 100000 --runs 5
    .venv/bin/python -m benchmarks.backtoback --subscribers 100000 --runs 5 --workers 1

Writes benchmarks/results/backtoback-<db>-<n>-w<workers>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks.stack import (
    MESSAGE,
    RESULTS,
    Stack,
    audience,
    callbacks_of,
    cpu_cost,
    machine,
    summarize,
    ts,
)

SECOND = {**MESSAGE, "title": "Login fails for some customers", "summary": "Sign-in returns errors."}


def admin_deliveries(stack: Stack, broadcast_id: int, timeout_s: float = 120) -> dict[int, str]:
    """Delivery id -> channel of a broadcast's first tier, once planned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = stack.progress(broadcast_id)
        tier0 = next((t for t in state["tiers"] if t["tier"] == 0), None)
        if tier0 is not None and tier0["state"] in ("sending", "done"):
            rows = stack.sql(
                "SELECT id, channel FROM deliveries WHERE broadcast_id = :b AND tier = 0", b=broadcast_id
            )
            return {int(i): str(c) for i, c in rows}
        time.sleep(0.05)
    raise TimeoutError(f"broadcast {broadcast_id}'s first tier was not planned; logs in {stack.tmp}")


def arrivals(stack: Stack, ids: dict[int, str], timeout_s: float, offset: int = 0) -> dict[int, float]:
    """Sandbox receipt time per delivery id, reading the sandbox's records as they come (from
    `offset` on) until all arrived or `timeout_s` passed."""
    wanted = {str(i): i for i in ids}
    found: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(ids) and time.monotonic() < deadline:
        page = stack.sandbox.http.get("/sandbox/messages", params={"offset": offset, "limit": 20_000}).json()
        offset += len(page)
        for record in page:
            delivery_id = wanted.get(str(record.get("delivery_id")))
            if delivery_id is not None and record["channel"] == ids[delivery_id]:
                found.setdefault(delivery_id, record["received_at"])
        if len(page) < 20_000:
            time.sleep(0.2)
    return found


def one_run(args: argparse.Namespace, subs: list[Any]) -> dict[str, Any]:
    env = {"DISPATCHER_LOG_LEVEL": "WARNING"}  # the shipped limits: nothing else
    stack = Stack(db=args.db, workers=args.workers, env=env, name="b2b", lane=args.lane).prepare()
    try:
        stack.import_subscribers(subs)
        stack.start()
        stack.api.post("/v1/preview", json=MESSAGE, headers=stack.auth()).raise_for_status()
        cpu_before = stack.cpu()
        _, body_a, answered_a = stack.open_incident()
        time.sleep(max(0.0, answered_a + args.gap - time.time()))
        _, body_b, answered_b = stack.open_incident(SECOND)
        a_ids = admin_deliveries(stack, body_a["broadcast"]["id"])
        b_ids = admin_deliveries(stack, body_b["broadcast"]["id"])
        b_times = arrivals(stack, b_ids, args.timeout)
        a_times = arrivals(stack, {i: c for i, c in a_ids.items() if c != "sms"}, 30)
        b_email = [t for i, t in b_times.items() if b_ids[i] == "email"]
        b_sms = [t for i, t in b_times.items() if b_ids[i] == "sms"]
        tiers_b = {t["tier"]: t for t in stack.progress(body_b["broadcast"]["id"])["tiers"]}
        a_sms_done = stack.sql(
            "SELECT count(*) FROM deliveries WHERE broadcast_id = :b AND channel = 'sms' AND state = 'sent'",
            b=body_a["broadcast"]["id"],
        )[0][0]
        cpu_after = stack.cpu()
        # what the service spent from A's POST to B's admins measured, on what was sent by then
        accepted = stack.sql(
            "SELECT count(*) FROM deliveries WHERE broadcast_id IN (:a, :b) "
            "AND state IN ('sent', 'delivered', 'bounced', 'undelivered')",
            a=body_a["broadcast"]["id"],
            b=body_b["broadcast"]["id"],
        )[0][0]
        callbacks = callbacks_of(stack.sandbox.stats()).get("all", {}).get("posts", 0)
        cost = cpu_cost(
            {n: cpu_after[n] - cpu_before.get(n, 0.0) for n in cpu_after},
            int(accepted),
            callbacks if stack.to_service else 0,
        )
        return {
            "cpu_cost": cost,
            "b_first_admin_ms": round((min(b_times.values()) - answered_b) * 1000, 1),
            "b_all_admin_emails_ms": round((max(b_email) - answered_b) * 1000, 1),
            "b_all_admins_s": round((max(b_times.values()) - answered_b), 2)
            if len(b_times) == len(b_ids)
            else None,
            "b_admins": {"expected": len(b_ids), "received": len(b_times), "sms_received": len(b_sms)},
            "a_first_admin_ms": round((min(a_times.values()) - answered_a) * 1000, 1),
            # B's first tier released (planned, queued): what is left of B's first admin is sending
            "b_tier0_started_ms": round(((ts(tiers_b[0]["started_at"]) or 0) - answered_b) * 1000, 1),
            "a_sms_sent_when_measured": int(a_sms_done),
        }
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (each one pool child)")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds from A's API answer to B's POST")
    parser.add_argument("--timeout", type=float, default=120.0, help="how long to wait for B's admins")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument(
        "--lane",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the urgent lane beside the pool, as `up` runs it (--no-lane: the pool alone)",
    )
    args = parser.parse_args()
    subs = audience(args.subscribers)
    runs = []
    for i in range(args.runs):
        result = one_run(args, subs)
        runs.append(result)
        print(f"run {i + 1}: {json.dumps(result)}", flush=True)
    summary = {
        f: summarize([r[f] for r in runs if r[f] is not None])
        for f in (
            "b_first_admin_ms",
            "b_all_admin_emails_ms",
            "b_all_admins_s",
            "b_tier0_started_ms",
            "a_first_admin_ms",
        )
        if any(r[f] is not None for r in runs)
    }
    out = {
        "benchmark": "backtoback",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": args.db,
        "command": " ".join([".venv/bin/python -m benchmarks.backtoback", *sys.argv[1:]]),
        "subscribers": args.subscribers,
        "workers": args.workers,
        "lane": args.lane,
        "gap_s": args.gap,
        "summary": summary,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # "-callbacks": since issue 17 the sandbox's callbacks go to the API (the older files: to its sink)
    lane = "" if args.lane else "-no-lane"
    path = RESULTS / f"backtoback-{args.db}-{args.subscribers}-w{args.workers}-callbacks{lane}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
