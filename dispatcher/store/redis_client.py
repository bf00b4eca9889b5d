"""This process's Redis client (and each event loop's asyncio one); every key the service writes
goes through `key()` for its prefix."""

from __future__ import annotations

import asyncio
import weakref

import redis
import redis.asyncio

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


_LOOP_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


def get_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """One pooled asyncio client per event loop and URL: an asyncio pool belongs to the loop that
    made it (a test client's app runs on a new loop each time)."""
    url = require_redis_url(settings)
    clients = _LOOP_CLIENTS.setdefault(asyncio.get_running_loop(), {})
    if url not in clients:
        clients[url] = redis.asyncio.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
    return clients[url]


async def close_async_redis() -> None:
    """Closes the running loop's asyncio clients (an app's lifespan, as it ends)."""
    for client in _LOOP_CLIENTS.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


def key(*parts: object, settings: Settings) -> str:
    prefix = settings.redis_prefix
    return prefix + "od:" + ":".join(str(p) for p in parts)
