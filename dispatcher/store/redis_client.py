"""This process's Redis client; every key the service writes goes through `key()` for its prefix."""

from __future__ import annotations

import redis

from config import Settings
from dispatcher.domain.errors import ConfigurationError
from dispatcher.store.per_process import PerProcess


def require_redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise ConfigurationError(
            "REDIS_URL is not set: set it, or run `outage-dispatcher up` for an embedded Redis",
            fields=["REDIS_URL"],
        )
    return settings.redis_url


CLIENTS: PerProcess[str, redis.Redis] = PerProcess()


def get_redis(settings: Settings) -> redis.Redis:
    """One pooled client per process and URL (a fresh one after a fork)."""
    url = require_redis_url(settings)
    return CLIENTS.get(
        url,
        lambda: redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        ),
    )


def key(*parts: object, settings: Settings) -> str:
    prefix = settings.redis_prefix
    return prefix + "od:" + ":".join(str(p) for p in parts)
