"""At the providers' limits: do we finish close to the bound the limits set, without ever exceeding them?

- SMS: 3,000 messages, the sandbox limiting Twilio to 100 msg/s (429 beyond it) and answering each
  call after 150 ms; the service configured with the same limit (DISPATCHER_RATE_TWILIO_PER_S=100).
  Bound: 3,000 / 100 = 30 s.
- Chat: 100 Slack channels, 3 broadcasts (the incident and two updates, posted back to back through
  the API), the sandbox limiting each channel to 1 post/s. Bound: the third post to a channel cannot
  come sooner than 2 s after the first.

Run at each DISPATCHER_RATE_HEADROOM given (default: 0.8; 0.9, the shipped setting; 0.95; and 1.0,
to show why it is not 1.0). Reports completion time against the bound and the highest rate the
sandbox saw in any 1-second window (overall for Twilio, per channel for Slack), plus the 429s the
sandbox answered.

    .venv/bin/python -m benchmarks.limits                  # --sms 3000 --chat 100 --headroom 0.8,0.9,0.95,1.0

Writes benchmarks/results/limits-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks.stack import RESULTS, Stack, machine, phone, ts

SMS_LIMIT = 100
SMS_LATENCY_MS = 150


def subscribers(sms: int, chat: int) -> list[Any]:
    from dispatcher.domain.subscribers import SubscriberIn

    subs = [SubscriberIn(external_id=f"s{i}", lists=["customers"], phone=phone(i)) for i in range(sms)]
    subs += [
        SubscriberIn(external_id=f"c{i}", lists=["customers"], slack_channel=f"C{i:06d}") for i in range(chat)
    ]
    return subs


def run(headroom: float, sms: int, chat: int, db: str) -> dict[str, Any]:
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
        }
        print(f"headroom {headroom} sms: {json.dumps(sms_result)}", flush=True)

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sms", type=int, default=3000)
    parser.add_argument("--chat", type=int, default=100)
    parser.add_argument("--headroom", default="0.8,0.9,0.95,1.0")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    args = parser.parse_args()
    rows = [run(float(h), args.sms, args.chat, args.db) for h in args.headroom.split(",")]
    out = {
        "benchmark": "limits",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "db": args.db,
        "command": " ".join([".venv/bin/python -m benchmarks.limits", *sys.argv[1:]]),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"limits-{args.db}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
