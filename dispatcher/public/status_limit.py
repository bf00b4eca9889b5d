"""The per-client limit of the status routes (the page, the feeds, the `/api/v2/` JSON), which must
answer while Redis is dead: its own client with sub-second timeouts, and after one Redis failure
the limit is skipped for BACKOFF_S (fail open) instead of every request waiting on a dead socket."""

from __future__ import annotations

import threading
import time

import redis
from fastapi import Request

from config import Settings
from dispatcher.public.pages import WINDOW_S, client_address
from dispatcher.store.per_process import PerProcess
from dispatcher.store.redis_client import key, require_redis_url

TIMEOUT_S = 0.25
BACKOFF_S = 5.0
CLIENTS: PerProcess[str, redis.Redis] = PerProcess()
_down_until = 0.0
_lock = threading.Lock()


def _client(settings: Settings) -> redis.Redis:
    url = require_redis_url(settings)
    return CLIENTS.get(
        url, lambda: redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
    )


def status_over_limit(settings: Settings, request: Request) -> int | None:
    """Counts this request against its client's hourly window (DISPATCHER_STATUS_REQUESTS_PER_HOUR);
    seconds to wait when spent, else None. None, uncounted, while Redis is failing."""
    global _down_until
    if time.monotonic() < _down_until or not settings.redis_url:
        return None
    now = time.time()
    window = int(now // WINDOW_S)
    who = client_address(request, settings.trusted_proxy_hops)
    name = key("public", "status", who, window, settings=settings)
    try:
        pipe = _client(settings).pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_S + 5)
        count = int(pipe.execute()[0])
    except redis.RedisError:
        with _lock:
            _down_until = time.monotonic() + BACKOFF_S
        return None
    if count <= settings.status_requests_per_hour:
        return None
    return max(1, int((window + 1) * WINDOW_S - now) + 1)
