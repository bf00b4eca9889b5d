"""Commanders first: while a commander's request is in flight, provider callbacks wait at the door.

One API process serves both. During a flood its callbacks (parsing, signature checks, the inbox's
XADD) keep its GIL busy, and a commander's request, which needs ~15 ms of CPU in many short turns,
waited 5-6 times its quiet latency with no sends at all (benchmarks/callbacks.py, "beside the
flood"). So a callback that arrives while a commander's request is in flight waits, asynchronously
and for at most HOLD_S, before it is read; a provider waits seconds for its answer (Twilio 15 s),
and nothing is lost: the callback is answered, and kept, right after.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from fastapi import Request

# The longest a callback waits for commanders: a steady stream of them still lets callbacks through.
HOLD_S = 0.5
POLL_S = 0.002


class Precedence:
    """How many commanders' requests are in flight (thread-safe; they run in the thread pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    @contextmanager
    def first(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    async def wait_turn(self, hold_s: float | None = None) -> None:
        """Returns once no commander's request is in flight, or after `hold_s` (HOLD_S)."""
        deadline = time.monotonic() + (HOLD_S if hold_s is None else hold_s)
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)


def precedence_of(request: Request) -> Precedence:
    precedence: Precedence = request.app.state.precedence
    return precedence


async def commander_first(request: Request) -> AsyncIterator[None]:
    """A route dependency: the request counts as a commander's from before its key is checked."""
    with precedence_of(request).first():
        yield


async def after_commanders(request: Request) -> None:
    """A route dependency for provider callbacks: waits its turn before the body is read."""
    await precedence_of(request).wait_turn()
