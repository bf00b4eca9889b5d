"""Commander reminders go through the engine: a broadcast of their own, delivery rows with
receipts, the urgent queue, retries. Real worker, Redis, the sandbox, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from dispatcher.domain.message import OutageMessage
from dispatcher.incidents.cadence import REMINDER_EVENT, remind_due
from dispatcher.store.models import Broadcast, Delivery, Incident
from tests.harness import Harness

pytestmark = pytest.mark.slow
CONTACTS = '["oncall@example.com", "#incident-room"]'


def _remind(harness: Harness) -> int:
    """Opens a quiet incident (sending nothing to subscribers) and reminds as if 31 minutes passed;
    returns the reminder broadcast's id."""
    broadcast_id = harness.open(OutageMessage(title="Checkout failing", impact="major"), send=False)
    with harness.database.session() as session:
        incident_id = session.scalar(select(Broadcast.incident_id).where(Broadcast.id == broadcast_id))
        posted = session.scalar(select(Incident.last_update_at).where(Incident.id == incident_id))
    assert remind_due(harness.database, harness.settings, now=posted + timedelta(minutes=31)) == [incident_id]
    with harness.database.session() as session:
        return int(session.scalar(select(Broadcast.id).where(Broadcast.event == REMINDER_EVENT)))


def _rows(harness: Harness, broadcast_id: int) -> dict[str, Delivery]:
    with harness.database.session() as session:
        rows = session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id))
        return {d.address: d for d in rows}


def test_a_commander_reminder_is_a_delivery_row_with_a_receipt(harness: Harness) -> None:
    harness.configure(DISPATCHER_COMMANDER_CONTACTS=CONTACTS)
    harness.worker()
    reminder = _remind(harness)
    done = harness.wait(reminder)

    rows = _rows(harness, reminder)
    assert set(rows) == {"oncall@example.com", "#incident-room"}
    assert {(d.channel, d.tier, d.state) for d in rows.values()} == {
        ("email", 0, "sent"),
        ("chat", 0, "sent"),
    }
    assert all(d.provider_message_id for d in rows.values())  # the provider's receipt, recorded
    assert done["totals"]["sent"] == 2
    assert [m["recipient"] for m in harness.sandbox.messages("email")] == ["oncall@example.com"]
    assert "no update for 31 minutes" in harness.sandbox.messages("chat")[0]["text"]


def test_a_reminder_that_fails_is_retried(harness: Harness) -> None:
    harness.configure(DISPATCHER_COMMANDER_CONTACTS='["oncall@example.com"]')
    harness.sandbox.set_faults("sendgrid", error_rate=1.0)  # every call a 503
    harness.worker()
    reminder = _remind(harness)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = _rows(harness, reminder).get("oncall@example.com")
        if row is not None and row.attempts >= 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the reminder was not retried: {_rows(harness, reminder)}")
    assert harness.sandbox.messages("email") == []
    harness.sandbox.clear_faults()
    harness.wait(reminder)
    row = _rows(harness, reminder)["oncall@example.com"]
    assert row.state == "sent" and row.attempts >= 2
    assert [m["recipient"] for m in harness.sandbox.messages("email")] == ["oncall@example.com"]
