"""The per-client limit of the status routes (the page, the feeds, the `/api/v2/` JSON): generous,
shared by every API process, and never a Redis round trip on the request's way.

Each process counts its requests in memory and, every FLUSH_S, adds them to Redis in one pipeline
(INCRBY + EXPIRE per client), reading back every process's totals. So a request costs a dict update,
and a client hammering several processes is still held to one limit (over by at most what the
processes let through in one FLUSH_S). Clients already near the limit ("heavy": half of it or more)
are re-read on every flush even when this process saw nothing from them.

While Redis is dead the counts stay in the process (kept and retried), so each process still limits
a client on its own, and the routes answer as ever: the status page must stay up when we are down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import redis
from fastapi import Request

from config import Settings
from dispatcher.public.pages import WINDOW_S, client_address
from dispatcher.store.redis_client import key

log = logging.getLogger(__name__)

FLUSH_S = 0.25  # how often a process shares its counts
TIMEOUT_S = 0.25  # Redis must answer within this, or the flush is retried later
BACKOFF_S = 2.0  # after a failed flush, the next attempt waits this long


class StatusLimit:
    """One process's view of every client's count in the current hourly window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.status_requests_per_hour
        self._lock = threading.Lock()
        self._window = self._now_window()
        self._pending: Counter[str] = Counter()  # counted here, not yet added to Redis
        self._known: dict[str, int] = {}  # every process's total, as Redis last said
        self._redis: redis.Redis | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0

    @staticmethod
    def _now_window() -> int:
        return int(time.time() // WINDOW_S)

    def hit(self, who: str) -> int | None:
        """Counts one request of `who`; seconds until the window ends when the limit is spent."""
        window = self._now_window()
        with self._lock:
            if window != self._window:
                self._window, self._known = window, {}
                self._pending.clear()
            self._pending[who] += 1
            count = self._known.get(who, 0) + self._pending[who]
        self._start()
        if count <= self.limit:
            return None
        return max(1, int((window + 1) * WINDOW_S - time.time()) + 1)

    def _start(self) -> None:
        if self._thread is None and self.settings.redis_url:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="status-limit", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()

    def _client(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
            )
        return self._redis

    def flush(self) -> None:
        """Adds this process's counts to Redis and learns every process's totals; on a Redis error
        the counts are kept for the next attempt and the limit goes on counting locally."""
        if not self.settings.redis_url or time.monotonic() < self._retry_at:
            return
        with self._lock:
            window, pending = self._window, self._pending
            self._pending = Counter()
            heavy = [w for w, n in self._known.items() if n * 2 >= self.limit and w not in pending]
        if not pending and not heavy:
            return
        names = {
            who: key("public", "status", who, window, settings=self.settings) for who in [*pending, *heavy]
        }
        try:
            pipe = self._client().pipeline(transaction=False)
            for who, n in pending.items():
                pipe.incrby(names[who], n)
                pipe.expire(names[who], WINDOW_S + 5)
            for who in heavy:
                pipe.get(names[who])
            replies = pipe.execute()
        except redis.RedisError as exc:
            self._retry_at = time.monotonic() + BACKOFF_S
            with self._lock:
                if window == self._window:
                    self._pending.update(pending)  # kept: counted locally, added once Redis answers
            log.debug("status limit not shared (Redis): %s", type(exc).__name__)
            return
        totals = {who: int(replies[2 * i]) for i, who in enumerate(pending)}
        offset = 2 * len(pending)
        totals.update({who: int(replies[offset + i] or 0) for i, who in enumerate(heavy)})
        with self._lock:
            if window == self._window:
                self._known.update(totals)

    def close(self) -> None:
        """Stops the flusher after one last flush, so no count of this process is lost."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.flush()
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def over_status_limit(request: Request) -> int | None:
    """Counts this request against its client's hourly window (DISPATCHER_STATUS_REQUESTS_PER_HOUR);
    seconds to wait when spent, else None. The app holds the one StatusLimit (dispatcher/app.py)."""
    limit: StatusLimit = request.app.state.status_limit
    return limit.hit(client_address(request, limit.settings.trusted_proxy_hops))
