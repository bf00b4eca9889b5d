"""Update cadence with time passed in explicitly: commanders are reminded at 30 minutes without an
update, every 30 minutes after, not after an update, never after resolving; once across pollers.
Each reminder is recorded as a broadcast of its own (sent by the engine: tests/scheduler/test_reminders)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from dispatcher.domain.message import OutageMessage
from dispatcher.incidents.broadcasts import open_incident, post_update
from dispatcher.incidents.cadence import REMINDER_EVENT, remind_due
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, BroadcastVariant, Incident
from tests.scheduler.conftest import settings_for

MIN = timedelta(minutes=1)


def reminders(db: Database) -> list[list[list[str]]]:
    """The contacts of every reminder broadcast recorded, oldest first."""
    with db.session() as session:
        found = session.scalars(
            select(Broadcast).where(Broadcast.event == REMINDER_EVENT).order_by(Broadcast.id)
        )
        return [list(b.policy["contacts"]) for b in found]


def _open(db: Database, settings, **fields: object) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    with db.session() as session:
        incident, _ = open_incident(session, settings, OutageMessage(title="Checkout failing", **fields))
        return incident.id, incident.last_update_at


def test_commanders_are_reminded_every_cadence_until_an_update(db: Database, sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(
        db, sandbox_url=sandbox.url, commander_contacts=["oncall@example.com", "#incident-room"]
    )
    incident_id, posted = _open(db, settings, impact="major")
    assert remind_due(db, settings, now=posted + 29 * MIN) == []
    assert remind_due(db, settings, now=posted + 30 * MIN) == [incident_id]
    assert remind_due(db, settings, now=posted + 31 * MIN) == []  # once per cadence
    assert remind_due(db, settings, now=posted + 60 * MIN) == [incident_id]  # and again
    assert reminders(db) == [[["email", "oncall@example.com"], ["chat", "#incident-room"]]] * 2
    with db.session() as session:
        first = session.scalar(select(Broadcast.id).where(Broadcast.event == REMINDER_EVENT))
        chat = session.get(BroadcastVariant, (first, "chat", "en"))
        assert chat is not None and "no update for 30 minutes" in chat.variant["text"]

    # an update 70 minutes in restarts the clock: nothing at 99 minutes, a reminder at 100
    updated = posted + 70 * MIN
    with db.session() as session:
        post_update(session, settings, incident_id, {"status": "identified"}, now=updated)
    assert remind_due(db, settings, now=updated + 29 * MIN) == []
    assert remind_due(db, settings, now=updated + 30 * MIN) == [incident_id]

    with db.session() as session:
        post_update(session, settings, incident_id, {"status": "resolved"}, now=updated + 40 * MIN)
    assert remind_due(db, settings, now=updated + 10 * 60 * MIN) == []


def test_a_passed_next_update_at_reminds_and_the_cadence_is_per_impact(db: Database, sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(
        db,
        sandbox_url=sandbox.url,
        commander_contacts=["oncall@example.com"],
        update_cadence_s={"critical": 600, "minor": 3600},
    )
    critical, critical_posted = _open(db, settings, impact="critical")
    promise = datetime.now(UTC) + 15 * MIN
    promised, _ = _open(db, settings, impact="minor", next_update_at=promise)
    assert remind_due(db, settings, now=critical_posted + 9 * MIN) == []
    assert remind_due(db, settings, now=critical_posted + 10 * MIN) == [critical]  # critical: 10 minutes
    assert promised not in remind_due(db, settings, now=promise - MIN)
    assert promised in remind_due(db, settings, now=promise)  # "next update by 12:15" passed
    assert promised not in remind_due(db, settings, now=promise + 20 * MIN)  # reminded once for it
    assert promised in remind_due(db, settings, now=promise + 60 * MIN)  # then every cadence (1 h)


def test_two_pollers_remind_once(db: Database, sandbox) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(db, sandbox_url=sandbox.url, commander_contacts=["oncall@example.com"])
    incident_ids = [_open(db, settings)[0] for _ in range(5)]
    with db.session() as session:
        latest = max(session.get(Incident, i).last_update_at for i in incident_ids)
    reminded: list[int] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        reminded.extend(remind_due(db, settings, now=latest + 30 * MIN))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(reminded) == sorted(incident_ids)
    assert len(reminders(db)) == 5
