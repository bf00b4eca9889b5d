"""Writes that arrive together are kept together: one blocking write for every request waiting on it.

A provider callback may be answered 2xx only once its reports are kept (dispatcher/engine/inbox.py).
At a flood, dozens of callbacks are in flight at once, and each used to keep its one report with an
XADD of its own, on a thread of the pool: the hop to the thread and back, and the round trip, per
callback, on the API's one GIL beside the commanders. Here the callbacks that arrive while a write
is on its way wait for the next one and share it; each is answered once the write that carried its
items returns, and sees its error if that write failed. One write at a time, awaited on the event
loop (an asyncio client): handing each write to a thread and back cost 0.63 against 0.59 CPU-ms a
callback (benchmarks/callbacks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """`await put(items)` returns once `write` has taken them, with whatever arrived beside them."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._waiting: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0  # blocking writes made (for tests and /metrics)

    async def put(self, items: Sequence[T]) -> None:
        """Raises what the write that carried `items` raised; nothing of theirs is then kept."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._waiting.append((items, done))
        # a writer left on another loop (an app served again after its loop closed) never returns
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._write([item for items, _ in group for item in items])
            except Exception as exc:  # each waiter decides what its failure means (webhooks.keep)
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)
            finally:
                self.writes += 1
