"""Commanders first (dispatcher/api/precedence.py): a provider callback that arrives while a
commander's request is in flight waits at the door, then is answered and applied like any other."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from channels.base import StatusReport
from dispatcher.api import precedence
from dispatcher.api.precedence import Precedence
from dispatcher.engine import inbox
from dispatcher.store.db import Database, get_database
from tests.api.conftest import MESSAGE, auth
from tests.api.test_webhooks import add_delivery, open_broadcast, row, twilio_params, twilio_post


def test_a_callback_waits_for_the_commander_then_is_applied(
    client: TestClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precedence, "HOLD_S", 60.0)  # long enough that only the release lets it in
    broadcast_id = open_broadcast(client, keys)
    delivery_id = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SMp1")
    answers: list[httpx.Response] = []

    def callback() -> None:
        answers.append(twilio_post(client, delivery_id, twilio_params("SMp1")))

    waiting = threading.Thread(target=callback)
    with client.app.state.precedence.first():  # type: ignore[attr-defined]  # a commander's request
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and not answers  # held at the door, not answered
        assert row(db, delivery_id) == ("sent", "SMp1")
    waiting.join(timeout=30)
    assert [a.status_code for a in answers] == [204]
    assert row(db, delivery_id) == ("delivered", "SMp1")


def test_a_commanders_request_counts_as_in_flight_from_its_first_statement_to_its_last(
    client: TestClient, keys: dict[str, str]
) -> None:
    """The key lookup included: the mark is a route dependency solved before the key's."""
    seen: list[bool] = []
    state = client.app.state  # type: ignore[attr-defined]

    def during(*_: Any) -> None:
        seen.append(state.precedence.busy)

    engine = get_database(state.settings).engine
    event.listen(engine, "before_cursor_execute", during)
    try:
        opened = client.post("/v1/incidents", json=MESSAGE, headers=auth(keys["commander"]))
        update = client.post(
            f"/v1/incidents/{opened.json()['incident']['id']}/updates",
            json={"status": "identified"},
            headers=auth(keys["commander"]),
        )
    finally:
        event.remove(engine, "before_cursor_execute", during)
    assert opened.status_code == 201 and update.status_code == 201
    assert seen and all(seen), seen
    assert not state.precedence.busy  # and released after the answer
    client.get("/v1/incidents", headers=auth(keys["viewer"]))  # a read is no commander's write
    assert not state.precedence.busy


def test_a_callback_waits_at_most_the_hold() -> None:
    """A steady stream of commanders still lets callbacks through."""
    marks = Precedence()
    with marks.first():
        asyncio.run(marks.wait_turn(hold_s=0.05))
        assert marks.busy  # it returned while a commander was still in flight
    assert not marks.busy


def test_callbacks_wake_when_the_last_commander_leaves_not_the_first() -> None:
    """Woken by the commanders' leaving (from their own threads), not by the hold running out."""
    marks = Precedence()

    async def scenario() -> None:
        first, second = marks.first(), marks.first()
        first.__enter__(), second.__enter__()
        waiting = [asyncio.ensure_future(marks.wait_turn(hold_s=60)) for _ in range(3)]
        await asyncio.to_thread(first.__exit__, None, None, None)
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)  # one commander is still in flight
        await asyncio.to_thread(second.__exit__, None, None, None)
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)

    asyncio.run(scenario())
    assert not marks.busy


def test_the_inbox_applies_no_batch_while_a_commander_is_in_flight(
    client: TestClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report already acknowledged (in the inbox before the commander came) waits in Redis while
    the commander's request runs, then is applied."""
    monkeypatch.setattr(precedence, "HOLD_S", 60.0)
    broadcast_id = open_broadcast(client, keys)
    delivery_id = add_delivery(db, broadcast_id, "sms", "+14155550101", provider_message_id="SMq1")
    state = client.app.state  # type: ignore[attr-defined]
    with state.precedence.first():
        inbox.accept(state.settings, [StatusReport("twilio", delivery_id, "SMq1", "delivered")])
        time.sleep(1.0)  # the applier reads the stream within its 0.1 s round, and holds the batch
        assert row(db, delivery_id) == ("sent", "SMq1")
    assert inbox.wait_applied(state.settings)
    assert row(db, delivery_id) == ("delivered", "SMq1")


def test_a_thread_waits_for_the_last_commander_or_the_hold() -> None:
    marks = Precedence()
    marks.wait_quiet(hold_s=60)  # none in flight: at once
    first, second = marks.first(), marks.first()
    first.__enter__(), second.__enter__()
    released: list[str] = []
    waiting = threading.Thread(target=lambda: (marks.wait_quiet(hold_s=60), released.append("out")))
    waiting.start()
    first.__exit__(None, None, None)
    waiting.join(timeout=0.2)
    assert waiting.is_alive() and not released  # one commander is still in flight
    second.__exit__(None, None, None)
    waiting.join(timeout=5)
    assert released == ["out"]
    with marks.first():
        marks.wait_quiet(hold_s=0.01)  # a steady stream of commanders still lets the applier on
        assert marks.busy


def test_following_a_broadcast_goes_before_callbacks_too(client: TestClient, keys: dict[str, str]) -> None:
    """`GET /v1/broadcasts/{id}` is what a commander polls during the flood the broadcast causes."""
    broadcast_id = open_broadcast(client, keys)
    seen: list[bool] = []
    state = client.app.state  # type: ignore[attr-defined]
    engine = get_database(state.settings).engine

    def during(*_: Any) -> None:
        seen.append(state.precedence.busy)

    event.listen(engine, "before_cursor_execute", during)
    try:
        read = client.get(f"/v1/broadcasts/{broadcast_id}", headers=auth(keys["viewer"]))
    finally:
        event.remove(engine, "before_cursor_execute", during)
    assert read.status_code == 200
    assert seen and all(seen), seen
