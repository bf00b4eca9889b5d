"""A broadcast's progress followed live: the one loop behind both SSE streams (the API's, keyed by
a bearer key, and the dashboard's, keyed by a session cookie). Each caller formats the events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.engine.progress import progress
from dispatcher.store.db import Database

POLL_S = 0.5


@dataclass(frozen=True)
class Tick:
    """One thing to tell the client: `progress` (changed), `completed` (the last one), `heartbeat`
    (nothing changed for a while) or `revoked` (the caller may no longer read: the stream ends)."""

    kind: str
    progress: dict[str, Any] | None = None


def read_progress(database: Database, broadcast_id: int) -> dict[str, Any]:
    with database.session() as session:
        return progress(session, broadcast_id)


async def progress_ticks(
    database: Database,
    broadcast_id: int,
    first: dict[str, Any],
    *,
    still_allowed: Callable[[], bool],
    disconnected: Callable[[], Awaitable[bool]],
    heartbeat_s: float,
    poll_s: float = POLL_S,
) -> AsyncIterator[Tick]:
    """Yields a tick each time the progress changes, until it is completed; the caller's right to
    read (`still_allowed`, run in a thread) is checked once per heartbeat, so a revoked key's or
    a signed-out session's open stream ends within one."""
    current: dict[str, Any] = first
    last: dict[str, Any] | None = None
    beat = checked = time.monotonic()
    while True:
        if time.monotonic() - checked >= heartbeat_s:
            checked = time.monotonic()
            if not await asyncio.to_thread(still_allowed):
                yield Tick("revoked")
                return
        if current != last:
            done = current["state"] == "completed"
            yield Tick("completed" if done else "progress", current)
            if done:
                return
            last, beat = current, time.monotonic()
        elif time.monotonic() - beat >= heartbeat_s:
            yield Tick("heartbeat")
            beat = time.monotonic()
        await asyncio.sleep(poll_s)
        if await disconnected():
            return
        current = await asyncio.to_thread(read_progress, database, broadcast_id)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: str) -> str:
    """One Server-Sent Event; `data` may span lines (each gets its own `data:` field)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"
