"""The webhook inbox: providers' status reports kept in Redis the moment they are acknowledged, and
applied in bulk behind the request.

A webhook request only checks the signature, parses and appends the reports to a Redis stream
(`accept`, well under a millisecond) before it answers 2xx; it never waits for the database. One
`Applier` per API process reads the stream as a consumer group, applies everything waiting in one
transaction (status_reports.apply_reports: one set-based UPDATE per kind of move, the counters in
the same transaction) and only then acknowledges and deletes the entries. So during a flood the
database sees a few large transactions a second instead of one per callback, and a commander's
request is not queued behind them.

Nothing acknowledged is lost: an entry leaves the stream only after its reports are committed. An
applier that dies (kill -9 right after the 2xx) leaves its entries pending under its name; every
applier keeps a short-lived heartbeat key, and the others (or the process that replaces it) claim
the entries of a consumer whose heartbeat is gone. A database outage keeps entries waiting, retried
with backoff. Applying twice is harmless: reports only move rows forward (domain/reports.py).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import redis
from sqlalchemy.exc import SQLAlchemyError

from channels.base import StatusReport
from config import Settings
from dispatcher.engine.status_reports import apply_reports
from dispatcher.store.db import Database
from dispatcher.store.redis_client import get_async_redis, get_redis, key

log = logging.getLogger(__name__)

GROUP = "appliers"
BATCH_ENTRIES = 200  # stream entries per transaction: a Twilio callback is one report, a SendGrid post many
HEARTBEAT_S = 5.0  # an applier silent this long is taken for dead and its entries claimed
BLOCK_MS = 1000
# A round that applied something waits out the rest of this before the next: during a flood the
# database then takes at most ten larger transactions a second from each applier, not one per few
# callbacks, and a commander's transaction finds the write lock (SQLite's only one) free more often.
ROUND_S = 0.1
MAX_BACKOFF_S = 5.0


def stream_key(settings: Settings) -> str:
    return key("inbox", "status_reports", settings=settings)


def _alive_key(settings: Settings, consumer: str) -> str:
    return key("inbox", "alive", consumer, settings=settings)


def _entry(reports: Sequence[StatusReport]) -> dict[str, str]:
    return {"r": json.dumps([list(r) for r in reports], separators=(",", ":"))}


def accept(settings: Settings, reports: Sequence[StatusReport]) -> None:
    """Keeps `reports` for the appliers; raises redis.RedisError when Redis cannot take them (the
    caller then applies them itself, or refuses the request so the provider retries)."""
    get_redis(settings).xadd(stream_key(settings), _entry(reports))  # type: ignore[arg-type]


async def accept_async(settings: Settings, reports: Sequence[StatusReport]) -> None:
    """`accept` awaited on the event loop, as the API's webhooks keep their reports."""
    await get_async_redis(settings).xadd(stream_key(settings), _entry(reports))  # type: ignore[arg-type]


def waiting(settings: Settings) -> int:
    """Entries accepted and not yet applied (for /readyz, /metrics and tests that wait on them)."""
    return int(get_redis(settings).xlen(stream_key(settings)))


def wait_applied(settings: Settings, timeout_s: float = 30.0) -> bool:
    """Waits until every accepted report is applied; False if some are still waiting at the end."""
    deadline = time.monotonic() + timeout_s
    while waiting(settings):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _decode(entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[StatusReport]:
    reports: list[StatusReport] = []
    for _id, fields in entries:
        try:
            reports += [StatusReport(*r) for r in json.loads(fields[b"r"])]
        except (KeyError, TypeError, ValueError):  # not ours to apply; never block the stream on it
            log.error("dropped a malformed inbox entry %r", _id)
    return reports


class Applier:
    """This process's reader of the inbox: a daemon thread, started with the API and stopped with it."""

    def __init__(
        self, database: Database, settings: Settings, *, defer: Callable[[], None] | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        # blocks while a commander's request is in flight in this process (bounded by its caller):
        # the batch in hand then waits, in Redis, instead of taking the GIL and the write lock
        self._defer = defer
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.applied = 0  # reports applied by this applier (for tests and /metrics)
        self._claimed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inbox-applier", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops after the batch in hand; what is not yet applied stays in the stream, pending under
        this consumer, and is claimed by the next applier once the heartbeat lapses."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                if self.step():
                    self._stop.wait(max(0.0, ROUND_S - (time.monotonic() - started)))
                backoff = 0.0
            except (redis.RedisError, SQLAlchemyError) as exc:
                backoff = min(MAX_BACKOFF_S, max(0.25, backoff * 2))
                log.warning("inbox: %s; retrying in %.2f s", type(exc).__name__, backoff)
                self._stop.wait(backoff)
            except Exception:  # a bug must not silently stop receipts for the process's lifetime
                log.exception("inbox applier failed; retrying")
                self._stop.wait(MAX_BACKOFF_S)

    def step(self, block_ms: int = BLOCK_MS) -> int:
        """One round: heartbeat, claim the dead's entries, apply our pending ones (left by an error)
        or wait for new ones. Returns how many reports it applied."""
        client = get_redis(self.settings)
        name = stream_key(self.settings)
        client.set(_alive_key(self.settings, self.consumer), "1", px=int(HEARTBEAT_S * 1000))
        try:
            client.xgroup_create(name, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if time.monotonic() - self._claimed_at >= HEARTBEAT_S / 2:
            self._claimed_at = time.monotonic()
            self._claim_from_the_dead(client, name)
        entries = self._read(client, name, "0", block_ms=None)  # ours, left by an earlier error
        if not entries:
            entries = self._read(client, name, ">", block_ms=block_ms)
        if not entries:
            return 0
        reports = _decode(entries)
        if self._defer is not None:
            self._defer()
        if reports:
            apply_reports(self.database, self.settings, reports)
        ids = [entry_id for entry_id, _ in entries]
        pipe = client.pipeline(transaction=True)
        pipe.xack(name, GROUP, *ids)
        pipe.xdel(name, *ids)
        pipe.execute()
        self.applied += len(reports)
        return len(reports)

    def _read(
        self, client: redis.Redis, name: str, start: str, *, block_ms: int | None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        answer = client.xreadgroup(GROUP, self.consumer, {name: start}, count=BATCH_ENTRIES, block=block_ms)
        if not answer:
            return []
        return [(i, f) for i, f in answer[0][1] if f]  # a deleted entry comes back as (id, None)

    def _claim_from_the_dead(self, client: redis.Redis, name: str) -> None:
        for consumer in client.xinfo_consumers(name, GROUP):
            other = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if other == self.consumer or client.exists(_alive_key(self.settings, other)):
                continue
            if consumer["pending"]:
                pending = client.xpending_range(name, GROUP, "-", "+", BATCH_ENTRIES, consumername=other)
                ids = [p["message_id"] for p in pending]
                if ids:
                    client.xclaim(name, GROUP, self.consumer, 0, ids)
                    log.info("inbox: claimed %d entries of %s, which stopped", len(ids), other)
                    continue  # the rest of its entries next round
            client.xgroup_delconsumer(name, GROUP, other)
