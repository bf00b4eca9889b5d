"""A broadcast's progress followed live: the one loop behind both SSE streams (the API's, keyed by
a bearer key, and the dashboard's, keyed by a session cookie). Each caller formats the events; the
values come from the process's one reader of the broadcast (`progress_hub.ProgressHub`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.api.progress_hub import POLL_S, ProgressHub


@dataclass(frozen=True)
class Tick:
    """One thing to tell the client: `progress` (changed), `completed` (the last one), `heartbeat`
    (nothing changed for a while) or `revoked` (the caller may no longer read: the stream ends)."""

    kind: str
    progress: dict[str, Any] | None = None


async def progress_ticks(
    hub: ProgressHub,
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
    a signed-out session's open stream ends within one. `first` is the caller's own read (its 404
    comes before the stream starts); the later values are the hub's, which this stream waits for at
    most `poll_s` at a time, so heartbeats and a disconnect are noticed while nothing changes."""
    if first["state"] == "completed":  # nothing left to follow: no reader started for it
        yield Tick("completed", first)
        return
    async with hub.subscribe(broadcast_id, first) as feed:
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
            await feed.wait(poll_s)
            if await disconnected():
                return
            current = feed.latest


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: str) -> str:
    """One Server-Sent Event; `data` may span lines (each gets its own `data:` field)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"
