"""A circuit breaker per provider, in Redis so every worker sees the same state.

Consecutive retryable failures (5xx, timeouts) past a threshold open it for a while: sends to that
provider stop hammering it, and recipients whose tier allows failover are tried on their next channel.
"""

from __future__ import annotations

import redis

from config import Settings
from dispatcher.store.redis_client import key


class Breaker:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def _keys(self, provider: str) -> tuple[str, str]:
        return (
            key("breaker", provider, "failures", settings=self._settings),
            key("breaker", provider, "open", settings=self._settings),
        )

    def is_open(self, provider: str) -> bool:
        return bool(self._client.exists(self._keys(provider)[1]))

    def open_for(self, provider: str) -> float:
        """Seconds until the breaker closes again (0 when closed)."""
        ttl = self._client.pttl(self._keys(provider)[1])
        return max(0.0, ttl / 1000) if ttl and ttl > 0 else 0.0

    def record(self, provider: str, *, successes: int, failures: int) -> bool:
        """Records a batch's results; returns True when this call opened the breaker."""
        failures_key, open_key = self._keys(provider)
        if successes:
            self._client.delete(failures_key)
            return False
        if not failures:
            return False
        pipe = self._client.pipeline()
        pipe.incrby(failures_key, failures)
        pipe.expire(failures_key, int(self._settings.breaker_open_s * 4) + 1)
        count = pipe.execute()[0]
        if count >= self._settings.breaker_failures:
            opened = self._client.set(open_key, "1", px=int(self._settings.breaker_open_s * 1000), nx=True)
            self._client.delete(failures_key)
            return bool(opened)
        return False
