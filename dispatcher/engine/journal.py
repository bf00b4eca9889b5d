"""Provider answers kept outside the database until they are recorded in it.

Between a provider's answer and the transaction that records it lies the one window a duplicate
comes from: lose the answer (the database is down, the worker is killed) and the lease expires and
the message goes out again. So a worker keeps each batch's answers in Redis the moment they arrive,
and forgets them once recorded; the sweeper records whatever is left before it expires any lease.

Redis, not a local spool: the sweeper runs in any worker process on any host, and must see every
worker's answers, including those of a host that never comes back. An answer is lost only if Redis
is lost too before it is recorded (two faults at once); that row then falls back to its lease and
is sent again, counted. One hash, field = delivery id: at most the rows in flight are in it.

"Never sent" is an answer too (`Failure.NO_SLOT`): the rows a batch hands back unsent, and the rows
of a claim whose worker gave up without hearing whether it committed. The sweeper hands those back
with their counted send undone, so a database outage never makes the count exceed the copies.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from channels.base import ChannelName, Failure, Outcome
from config import Settings
from dispatcher.store.redis_client import key


def answers_key(settings: Settings) -> str:
    return key("answers", settings=settings)


@dataclass(frozen=True)
class Kept:
    """One provider answer not yet known to be recorded, with the claim that sent it."""

    broadcast_id: int
    channel: ChannelName
    claim: str
    outcome: Outcome
    kept_at: float  # epoch seconds


def _encode(broadcast_id: int, channel: ChannelName, claim: str, outcome: Outcome) -> str:
    o = outcome
    return json.dumps(
        {
            "b": broadcast_id,
            "c": channel.value,
            "k": claim,
            "o": [o.accepted, o.provider_message_id, o.failure and o.failure.value, o.code, o.error],
            "r": o.retry_after,
            "s": o.suppression,
            "t": round(time.time(), 3),
        },
        separators=(",", ":"),
    )


def _decode(delivery_id: int, raw: bytes | str) -> Kept:
    data: dict[str, Any] = json.loads(raw)
    accepted, message_id, failure, code, error = data["o"]
    outcome = Outcome(
        delivery_id,
        bool(accepted),
        provider_message_id=message_id,
        failure=Failure(failure) if failure else None,
        code=code,
        error=error,
        retry_after=data.get("r"),
        suppression=data.get("s"),  # absent in answers kept before it existed
    )
    return Kept(int(data["b"]), ChannelName(data["c"]), str(data["k"]), outcome, float(data.get("t", 0)))


def keep(
    client: redis.Redis,
    settings: Settings,
    broadcast_id: int,
    channel: ChannelName,
    claim: str,
    outcomes: list[Outcome],
    only_new: bool = False,
) -> bool:
    """Writes the batch's answers in one round trip; False (never raises) when Redis is down.
    `only_new` leaves a row's answer that is already kept (a later claim's real answer) alone."""
    if not outcomes:
        return True
    mapping = {str(o.delivery_id): _encode(broadcast_id, channel, claim, o) for o in outcomes}
    try:
        if only_new:
            pipe = client.pipeline(transaction=False)
            for field, value in mapping.items():
                pipe.hsetnx(answers_key(settings), field, value)
            pipe.execute()
        else:
            client.hset(answers_key(settings), mapping=mapping)  # type: ignore[arg-type]
    except redis.RedisError:
        return False
    return True


def forget(client: redis.Redis, settings: Settings, delivery_ids: list[int]) -> None:
    """Drops recorded answers; a failure only leaves work the sweeper will find already done."""
    if not delivery_ids:
        return
    try:
        for start in range(0, len(delivery_ids), 1000):
            client.hdel(answers_key(settings), *(str(i) for i in delivery_ids[start : start + 1000]))
    except redis.RedisError:
        pass


def kept(client: redis.Redis, settings: Settings, limit: int = 100_000) -> list[Kept]:
    """Every answer still kept (raises RedisError: the caller decides what Redis down means)."""
    found: list[Kept] = []
    for field, raw in client.hscan_iter(answers_key(settings), count=1000):
        found.append(_decode(int(field), raw))
        if len(found) >= limit:
            break
    return found


def kept_for(client: redis.Redis, settings: Settings, delivery_ids: list[int]) -> set[int]:
    """Which of these rows have an answer kept (for the lease check just before expiry)."""
    if not delivery_ids:
        return set()
    values = client.hmget(answers_key(settings), [str(i) for i in delivery_ids])
    return {i for i, v in zip(delivery_ids, values, strict=True) if v is not None}
