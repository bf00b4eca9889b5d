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
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress

from fastapi import Request

# The longest a callback waits for commanders: a steady stream of them still lets callbacks through.
HOLD_S = 0.5


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


class Precedence:
    """How many commanders' requests are in flight, and the callbacks waiting for none to be.

    Thread-safe: a request may be marked from any thread. A waiting callback sleeps on a future that
    the last commander out wakes, on the waiter's own loop, not on a timer: at a flood dozens wait at
    once, and waking each every few milliseconds to look took the GIL from the very commander they
    wait for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        self._quiet = threading.Event()  # set while no commander's request is in flight
        self._quiet.set()

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    @contextmanager
    def first(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._quiet.clear()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._quiet.set()
                woken, self._waiters = (self._waiters, {}) if self._in_flight == 0 else ({}, self._waiters)
            for loop, waiters in woken.items():
                with suppress(RuntimeError):  # that loop has closed, and its waiters with it
                    loop.call_soon_threadsafe(_release, waiters)

    def wait_quiet(self, hold_s: float | None = None) -> None:
        """The blocking `wait_turn`, for a thread (the inbox's applier, whose batches take the GIL
        and the database's write lock): returns once no commander's request is in flight, or after
        `hold_s` (HOLD_S)."""
        self._quiet.wait(HOLD_S if hold_s is None else hold_s)

    async def wait_turn(self, hold_s: float | None = None) -> None:
        """Returns once no commander's request is in flight, or after `hold_s` (HOLD_S)."""
        if not self._in_flight:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self._in_flight:
                return
            self._waiters.setdefault(loop, []).append(waiter)
        timer = loop.call_later(HOLD_S if hold_s is None else hold_s, _release, [waiter])
        try:
            await waiter
        finally:
            timer.cancel()
            with self._lock:  # out by the hold, or cancelled: no commander need wake it now
                waiters = self._waiters.get(loop, [])
                if waiter in waiters:
                    waiters.remove(waiter)


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
