"""Writes that arrive together share one (dispatcher/api/group_commit.py): pure asyncio, no server."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.api.group_commit import GroupCommit


def test_what_arrives_during_a_write_shares_the_next_and_each_waits_for_its_own() -> None:
    written: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> None:
        if not written:
            await asyncio.wait_for(release.wait(), 5)  # the first write is slow: three more arrive
        written.append(items)

    door: GroupCommit[int] = GroupCommit(write)

    async def scenario() -> None:
        first = asyncio.ensure_future(door.put([1]))
        await asyncio.sleep(0.05)
        later = [asyncio.ensure_future(door.put(items)) for items in ([2], [3, 4], [5])]
        await asyncio.sleep(0.05)
        assert not first.done() and not any(p.done() for p in later)  # none answered before its write
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), timeout=5)

    asyncio.run(scenario())
    assert written == [[1], [2, 3, 4, 5]]
    assert door.writes == 2


def test_a_failed_write_fails_only_the_puts_it_carried() -> None:
    calls: list[list[str]] = []

    async def write(items: list[str]) -> None:
        calls.append(items)
        if "bad" in items:
            raise ConnectionError("the store is down")

    door: GroupCommit[str] = GroupCommit(write)

    async def scenario() -> None:
        with pytest.raises(ConnectionError):
            await door.put(["bad"])
        await door.put(["good"])  # the next write is a new one, and succeeds

    asyncio.run(scenario())
    assert calls == [["bad"], ["good"]]
