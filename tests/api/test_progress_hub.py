"""The progress hub on its own, against the real database: one reader per broadcast however many
subscribe, gone with the last subscriber or the completed value; a subscriber that never reads
holds only the latest value and holds up nobody; a failed read ends no stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from sqlalchemy import text, update

from config import Settings
from dispatcher.api.progress_hub import Feed, ProgressHub, read_progress
from dispatcher.domain.message import OutageMessage
from dispatcher.incidents.broadcasts import open_incident
from dispatcher.store.db import Database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import Broadcast
from tests.conftest import fresh_database_url

POLL_S = 0.02
WAIT_S = 30  # a guard against a hang, never a measure of speed


def open_broadcast(db: Database) -> int:
    """A recorded broadcast (no worker runs: it stays queued until the test moves it)."""
    settings = Settings(database_url=db.url)
    message = OutageMessage(title="Checkout is failing", impact="major", status_page_url="https://s.example")
    with db.session() as session:
        _, broadcast = open_incident(session, settings, message)
        return broadcast.id


def set_state(db: Database, broadcast_id: int, state: str) -> None:
    with db.session() as session:
        session.execute(update(Broadcast).where(Broadcast.id == broadcast_id).values(state=state))


async def until(feed: Feed, state: str) -> dict[str, Any]:
    """The feed's value once it reads `state`, waiting for the reader's offers."""
    async with asyncio.timeout(WAIT_S):
        while feed.latest["state"] != state:
            await feed.wait(1.0)
    return feed.latest


def reader_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("progress-reader-") and not t.done()]


async def settle(running: int) -> None:
    """Until exactly `running` reader tasks are left (a cancelled one ends at its next step)."""
    async with asyncio.timeout(WAIT_S):
        while len(reader_tasks()) != running:
            await asyncio.sleep(0)


def test_subscribers_of_a_broadcast_share_one_reader_which_stops_with_the_last(db: Database) -> None:
    first_id, second_id = open_broadcast(db), open_broadcast(db)
    hub = ProgressHub(Settings(database_url=db.url), poll_s=POLL_S)

    async def scenario() -> None:
        first = read_progress(db, first_id)
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(hub.subscribe(first_id, first))
            b = await stack.enter_async_context(hub.subscribe(first_id, first))
            assert (hub.readers, hub.subscribers, hub.subscribers_of(first_id)) == (1, 2, 2)
            async with hub.subscribe(second_id, read_progress(db, second_id)):
                assert (hub.readers, hub.subscribers, hub.subscribers_of(second_id)) == (2, 3, 1)
                assert len(reader_tasks()) == 2
            assert (hub.readers, hub.subscribers, hub.subscribers_of(second_id)) == (1, 2, 0)
            await settle(1)

            await asyncio.to_thread(set_state, db, first_id, "sending")
            assert (await until(a, "sending")) == (await until(b, "sending"))
        assert (hub.readers, hub.subscribers) == (0, 0)
        await settle(0)

    asyncio.run(scenario())


def test_a_subscriber_that_never_reads_gets_the_latest_value_and_holds_up_nobody(db: Database) -> None:
    broadcast_id = open_broadcast(db)
    hub = ProgressHub(Settings(database_url=db.url), poll_s=POLL_S)

    async def scenario() -> None:
        first = read_progress(db, broadcast_id)
        async with hub.subscribe(broadcast_id, first) as stuck, hub.subscribe(broadcast_id, first) as live:
            # `live` follows every move while `stuck` (a client that reads nothing) never waits
            for state in ("planning", "sending", "planning", "sending"):
                await asyncio.to_thread(set_state, db, broadcast_id, state)
                await until(live, state)
            assert stuck.latest == live.latest and stuck.latest["state"] == "sending"
            # what it missed is not kept for it: one fresh value to take, then nothing more
            assert await stuck.wait(WAIT_S) is True
            assert await stuck.wait(POLL_S * 5) is False
            assert stuck.latest["state"] == "sending"
            assert hub.readers == 1

    asyncio.run(scenario())


def test_the_completed_value_reaches_every_subscriber_and_the_reader_stops(db: Database) -> None:
    broadcast_id = open_broadcast(db)
    hub = ProgressHub(Settings(database_url=db.url), poll_s=POLL_S)

    async def scenario() -> None:
        first = read_progress(db, broadcast_id)
        async with contextlib.AsyncExitStack() as stack:
            feeds = [await stack.enter_async_context(hub.subscribe(broadcast_id, first)) for _ in range(5)]
            await asyncio.to_thread(set_state, db, broadcast_id, "completed")
            finals = [await until(feed, "completed") for feed in feeds]
            assert all(final == finals[0] for final in finals)
            # the reader left the hub with the last value, the subscribers still in their blocks
            await settle(0)
            assert hub.readers == 0 and hub.subscribers == 5
            # a stream that comes now starts a reader of its own
            async with hub.subscribe(broadcast_id, first) as late:
                assert hub.readers == 1 and hub.subscribers_of(broadcast_id) == 1
                assert (await until(late, "completed")) == finals[0]
        assert hub.subscribers == 0
        await hub.close()

    asyncio.run(scenario())


def test_a_failed_read_is_logged_without_its_text_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = Database(fresh_database_url("sqlite", "progress_hub_errors"))
    upgrade(db)
    broadcast_id = open_broadcast(db)
    hub = ProgressHub(Settings(database_url=db.url), poll_s=POLL_S)

    def tables(rename: str) -> None:
        with db.engine.begin() as conn:
            conn.execute(text(rename))

    async def scenario() -> None:
        async with hub.subscribe(broadcast_id, read_progress(db, broadcast_id)) as feed:
            await asyncio.to_thread(tables, "ALTER TABLE broadcasts RENAME TO broadcasts_away")
            try:
                async with asyncio.timeout(WAIT_S):
                    while "not read" not in caplog.text:
                        await asyncio.sleep(POLL_S)
                assert hub.readers == 1 and len(reader_tasks()) == 1  # the reader lives on
            finally:
                await asyncio.to_thread(tables, "ALTER TABLE broadcasts_away RENAME TO broadcasts")
            await asyncio.to_thread(set_state, db, broadcast_id, "completed")
            await until(feed, "completed")

    try:
        with caplog.at_level(logging.DEBUG, logger="dispatcher.api.progress_hub"):
            asyncio.run(scenario())
    finally:
        db.dispose()
    failures = [r for r in caplog.records if "not read" in r.getMessage()]
    assert failures[0].levelno == logging.WARNING and "OperationalError" in failures[0].getMessage()
    assert all(r.levelno == logging.DEBUG for r in failures[1:])  # one warning per run of failures
    assert not any("broadcasts" in r.getMessage() or "SELECT" in r.getMessage() for r in failures)
    assert any("read again" in r.getMessage() for r in caplog.records)


def test_closing_the_hub_stops_its_readers(db: Database) -> None:
    broadcast_id = open_broadcast(db)
    hub = ProgressHub(Settings(database_url=db.url), poll_s=POLL_S)

    async def scenario() -> None:
        async with hub.subscribe(broadcast_id, read_progress(db, broadcast_id)):
            assert len(reader_tasks()) == 1
            await hub.close()  # as the app's lifespan ends
            assert reader_tasks() == [] and hub.readers == 0
        assert hub.subscribers == 0

    asyncio.run(scenario())
