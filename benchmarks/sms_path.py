"""The SMS path's floor: the CPU one message costs before the rest of a worker's work is counted.

Issue 17 asks for half the CPU per SMS delivery (1.38-1.51 ms per SMS in an SMS-only broadcast before
the SMS path moved to urllib3, so about 0.7 ms). The flood benchmark measures a worker's whole
share: the claim and the recording, the status reports applied, the pacing, planning, Celery. This
measures the parts that every message pays however the rest is arranged, in this process, against
the provider sandbox (its own process), with no database and no worker:

- `sdk_one_by_one`: Twilio's SDK, `messages.create` through our transport, one message after another;
- `sdk_lanes`: the same as a batch sends it, 250 at a time on the send threads (`send_concurrency`);
- `claim`: one rate-limit slot reserved in Redis (the Lua script and its round trip), at a limit so
  fast that no request waits;
- `paced_lanes`: `sdk_lanes` with each message's slot reserved and waited for, as a later tier's
  batch does (at `--rate` messages a second).

CPU is this process's user and system time (every thread) around each step, per message. The
sandbox's status callbacks go to its own receiver, so nothing else of ours runs.

    .venv/bin/python -m benchmarks.sms_path                  # 5,000 messages a step
    .venv/bin/python -m benchmarks.sms_path --messages 20000 --rate 2000

Writes benchmarks/results/sms-path.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from benchmarks.stack import RESULTS, ROOT, SHARED_REDIS_URL, machine, phone
from dispatcher.supervisor import Supervisor, free_port, is_200

BATCH = 250  # SmsChannel.max_batch


def cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


@contextmanager
def sandbox(secret: str) -> Iterator[str]:
    """The provider sandbox in its own process; yields its URL."""
    port = free_port()
    processes = Supervisor(logs=Path(tempfile.mkdtemp(prefix="od-sms-path-")), cwd=ROOT)
    env = {**os.environ, "DISPATCHER_SANDBOX_SECRET": secret}
    processes.spawn("sandbox", [sys.executable, "-m", "channels.sandbox", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        if not processes.wait_http(url + "/sandbox/health", 30, ok=is_200):
            raise RuntimeError(f"the sandbox did not start; its log: {processes.log('sandbox')}")
        yield url
    finally:
        processes.stop(["sandbox"], grace_s=5)


def per_message(step: Callable[[], int]) -> dict[str, float]:
    """Runs `step` (which returns how many messages it handled) and reports its cost per message."""
    started, wall = cpu_s(), time.perf_counter()
    count = step()
    used, took = cpu_s() - started, time.perf_counter() - wall
    return {"messages": count, "cpu_ms_per_message": round(used * 1000 / count, 4), "wall_s": round(took, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sms_path", description=__doc__)
    parser.add_argument("--messages", type=int, default=5000, help="messages in each step")
    parser.add_argument("--rate", type=float, default=2000.0, help="the limit `paced_lanes` keeps, per s")
    args = parser.parse_args(argv)
    secret = secrets.token_urlsafe(32)
    prefix = f"sms-path-{uuid.uuid4().hex[:8]}:"
    with sandbox(secret) as url:
        os.environ.update(
            {
                "REDIS_URL": SHARED_REDIS_URL,
                "DISPATCHER_REDIS_PREFIX": prefix,
                "DISPATCHER_SANDBOX_URL": url,
                "DISPATCHER_SANDBOX_SECRET": secret,
                "DISPATCHER_CALLBACK_URL": f"{url}/hooks/service",  # the sandbox's own receiver
                "DISPATCHER_RATE_TWILIO_PER_S": str(args.rate),
            }
        )
        try:
            steps = run_steps(args.messages)
        finally:
            client = redis.Redis.from_url(SHARED_REDIS_URL)
            for name in client.scan_iter(f"{prefix}*"):
                client.delete(name)
    result: dict[str, Any] = {
        "benchmark": "sms_path",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.sms_path", *(argv if argv is not None else sys.argv[1:])]),
        "rate_per_s": args.rate,
        "steps": steps,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "sms-path.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


def run_steps(n: int) -> dict[str, dict[str, float]]:
    from channels.base import ChannelName, Failure, Recipient
    from channels.sms.adapter import SmsChannel
    from config import Settings
    from dispatcher.engine.ratelimit import Limit, Pacer, RateLimiter
    from dispatcher.store.redis_client import get_redis, key

    settings = Settings()
    sms = SmsChannel(settings)
    text = "Outage: checkout is down. We are on it."
    variant = sms.load_variant({"channel": "sms", "text": text, "encoding": "GSM-7", "segments": 1})
    limiter = RateLimiter(get_redis(settings), headroom=settings.rate_headroom)
    recipients = [Recipient(i + 1, phone(i)) for i in range(n)]
    sms.warm()
    sms.send(variant, recipients[:BATCH])  # warm: the pool's connections, the SDK's imports

    def accepted(outcomes: list[Any]) -> int:
        taken = sum(1 for o in outcomes if o.accepted)
        if taken != len(outcomes):
            raise RuntimeError(f"the sandbox refused {len(outcomes) - taken} of {len(outcomes)} messages")
        return taken

    def one_by_one() -> int:
        return accepted([sms._send_one(variant.text, r) for r in recipients])

    def lanes() -> int:
        return sum(accepted(sms.send(variant, recipients[i : i + BATCH])) for i in range(0, n, BATCH))

    def claims() -> int:
        bucket = [key("rate", "sms-path", "claim", settings=settings)]
        for _ in range(n):
            limiter.claim(bucket, Limit(1e6), 1.0)
        return n

    def paced() -> int:
        """Batches of 250, each with its own pacer; the rows a batch found no slot for within its
        window go in the next batch, as a handed-back batch's rows come back."""
        sent, left = 0, list(recipients)
        while left:
            batch, left = left[:BATCH], left[BATCH:]
            pacer = Pacer(ChannelName.SMS, limiter, settings, urgent=False, requests=len(batch))
            outcomes = sms.send(variant, batch, pacer)
            unslotted = {o.delivery_id for o in outcomes if o.failure is Failure.NO_SLOT}
            sent += accepted([o for o in outcomes if o.delivery_id not in unslotted])
            left = [r for r in batch if r.delivery_id in unslotted] + left
        return sent

    return {
        "sdk_one_by_one": per_message(one_by_one),
        "sdk_lanes": per_message(lanes),
        "claim": per_message(claims),
        "paced_lanes": per_message(paced),
    }


if __name__ == "__main__":
    main()
