"""This process's Redis client; every key the service writes goes through `key()` for its prefix."""

from __future__ import annotations

import os

import redis

from config import Settings, get_settings
from dispatcher.domain.errors import ConfigurationError


def require_redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise ConfigurationError(
            "REDIS_URL is not set: set it, or run `outage-dispatcher up` for an embedded Redis",
            fields=["REDIS_URL"],
        )
    return settings.redis_url


_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis(settings: Settings | None = None) -> redis.Redis:
    """One pooled client per process and URL (a fresh one after a fork)."""
    url = require_redis_url(settings or get_settings())
    cache_key = (os.getpid(), url)
    if cache_key not in _clients:
        _clients[cache_key] = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
    return _clients[cache_key]


def key(*parts: object, settings: Settings | None = None) -> str:
    prefix = (settings or get_settings()).redis_prefix
    return prefix + "od:" + ":".join(str(p) for p in parts)
