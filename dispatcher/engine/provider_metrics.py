"""Provider call time and rate-limit waits, added up by every worker in Redis and exposed by the
API's /metrics: a Celery prefork pool cannot serve Prometheus itself, but a hash of running totals
costs one pipelined round trip per batch."""

from __future__ import annotations

import redis

from config import Settings
from dispatcher.store.redis_client import key

FIELDS = ("batches", "recipients", "call_seconds", "waits", "wait_seconds")


def _key(provider: str, settings: Settings) -> str:
    return key("stats", "provider", provider, settings=settings)


def record(
    client: redis.Redis,
    settings: Settings,
    provider: str,
    *,
    recipients: int,
    call_seconds: float,
    waits: int,
    wait_seconds: float,
) -> None:
    pipe = client.pipeline(transaction=False)
    name = _key(provider, settings)
    pipe.hincrby(name, "batches", 1)
    pipe.hincrby(name, "recipients", recipients)
    pipe.hincrbyfloat(name, "call_seconds", call_seconds)
    pipe.hincrby(name, "waits", waits)
    pipe.hincrbyfloat(name, "wait_seconds", wait_seconds)
    pipe.execute()


def read(client: redis.Redis, settings: Settings, providers: tuple[str, ...]) -> dict[str, dict[str, float]]:
    pipe = client.pipeline(transaction=False)
    for provider in providers:
        pipe.hgetall(_key(provider, settings))
    totals = {}
    for provider, raw in zip(providers, pipe.execute(), strict=True):
        totals[provider] = {f: float(raw.get(f.encode(), 0)) for f in FIELDS}
    return totals
