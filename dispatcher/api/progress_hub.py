"""One progress reader per broadcast per process, shared by all of its live streams.

Each SSE stream used to poll the database on its own every POLL_S: 150 streams of one broadcast
on the embedded SQLite made the broadcast itself twice as slow (64 -> 115 s), its workers waiting
on the readers. Here a stream subscribes to its broadcast; the first subscriber starts one asyncio
task that reads the progress (in a thread) every POLL_S and offers each new value to every
subscriber, and the last one to leave stops it. A subscriber holds only the latest value, never a
queue, so a slow or stuck client costs the reader and the others nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from config import Settings
from dispatcher.engine.progress import progress
from dispatcher.store.db import Database, get_database

log = logging.getLogger(__name__)

POLL_S = 0.5


def read_progress(database: Database, broadcast_id: int) -> dict[str, Any]:
    with database.session() as session:
        return progress(session, broadcast_id)


class Feed:
    """One subscriber's view of its broadcast: the latest value offered, and a flag that a new one
    came. Offering never waits, whatever the subscriber is doing: a value not taken in time is
    replaced by the next one (a stream only ever shows the latest progress anyway)."""

    def __init__(self, first: dict[str, Any]) -> None:
        self.latest: dict[str, Any] = first
        self._fresh = asyncio.Event()

    def offer(self, value: dict[str, Any]) -> None:
        self.latest = value
        self._fresh.set()

    async def wait(self, timeout_s: float) -> bool:
        """Until a value not seen yet is offered (True) or `timeout_s` has gone by (False), so the
        stream still sends its heartbeats and notices a disconnect while nothing changes."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._fresh.wait()
        except TimeoutError:
            return False
        self._fresh.clear()
        return True


class _Reader:
    """The polling task of one broadcast and the feeds it offers each new value to."""

    def __init__(self, broadcast_id: int) -> None:
        self.broadcast_id = broadcast_id
        self.feeds: set[Feed] = set()
        self.joined: set[Feed] = set()  # feeds that have had no read made since they came
        self.latest: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def alive(self) -> bool:
        """False for a task that ended, or that belongs to a loop other than the running one (a
        test client without its lifespan runs each request on a loop of its own)."""
        return self.task is not None and not self.task.done() and self.loop is asyncio.get_running_loop()


class ProgressHub:
    """This process's readers, one per broadcast that has a live stream; made by `create_app`,
    kept on `app.state.progress_hub` and closed with the app's lifespan."""

    def __init__(self, settings: Settings, poll_s: float = POLL_S) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self._readers: dict[int, _Reader] = {}
        self._open = 0

    @property
    def readers(self) -> int:
        """Broadcasts being read now: one task each, however many streams follow it."""
        return len(self._readers)

    @property
    def subscribers(self) -> int:
        """Streams subscribed now, those whose reader has just delivered the completed value and
        left included (they end as they send it)."""
        return self._open

    def subscribers_of(self, broadcast_id: int) -> int:
        """Streams sharing the broadcast's running reader (0 when none runs)."""
        reader = self._readers.get(broadcast_id)
        return len(reader.feeds) if reader is not None else 0

    @contextlib.asynccontextmanager
    async def subscribe(self, broadcast_id: int, first: dict[str, Any]) -> AsyncIterator[Feed]:
        """A feed of the broadcast's progress, starting from `first` (the value the stream has
        already read and sent), for as long as the block runs."""
        feed = Feed(first)
        reader = self._readers.get(broadcast_id)
        if reader is None or not reader.alive():
            if reader is not None:
                self._stop(reader)
            reader = _Reader(broadcast_id)
            reader.loop = asyncio.get_running_loop()
            reader.task = asyncio.create_task(self._read(reader), name=f"progress-reader-{broadcast_id}")
            self._readers[broadcast_id] = reader
        reader.feeds.add(feed)
        reader.joined.add(feed)
        self._open += 1
        try:
            yield feed
        finally:
            self._open -= 1
            reader.feeds.discard(feed)
            reader.joined.discard(feed)
            if not reader.feeds and self._readers.get(broadcast_id) is reader:
                self._stop(reader)

    def _stop(self, reader: _Reader) -> None:
        if self._readers.get(reader.broadcast_id) is reader:
            del self._readers[reader.broadcast_id]
        if reader.task is not None and not reader.task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed: the task went with it
                reader.task.cancel()

    async def _read(self, reader: _Reader) -> None:
        """Every poll_s: read once, offer a changed value to every feed; after the completed value
        the reader leaves the hub (a later subscriber starts a new one). A failed read is logged
        (the error's type only: its text may hold a URL or parameters) and tried again at the next
        poll, so a database that is away a moment ends no stream; only the first failure of a run
        of them is a warning, to keep an outage from writing two lines a second per broadcast."""
        failures = 0
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                database = get_database(self.settings)
                value = await asyncio.to_thread(read_progress, database, reader.broadcast_id)
            except Exception as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "progress of broadcast %s not read (%s, %d in a row); trying again in %s s",
                    reader.broadcast_id,
                    type(exc).__name__,
                    failures,
                    self.poll_s,
                )
                continue
            if failures:
                log.info("progress of broadcast %s read again (%d failures)", reader.broadcast_id, failures)
                failures = 0
            # From here to the end of the iteration nothing awaits: a feed added now either gets
            # this value or, once the reader has left, starts the next reader. A feed that joined
            # since the last read gets this one even if unchanged: its `first` may be older.
            changed = value != reader.latest
            reader.latest = value
            for feed in reader.feeds if changed else reader.joined:
                feed.offer(value)
            reader.joined.clear()
            if value["state"] == "completed":
                if self._readers.get(reader.broadcast_id) is reader:
                    del self._readers[reader.broadcast_id]
                return

    async def close(self) -> None:
        """Stops every reader (the app is shutting down); streams still open get no more values."""
        readers, self._readers = list(self._readers.values()), {}
        tasks = [r.task for r in readers if r.task is not None and r.loop is asyncio.get_running_loop()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
