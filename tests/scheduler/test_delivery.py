"""End to end with a real worker and the sandbox: the default channel policy, quiet hours and
compensation, as recipients actually receive them."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import QuietHours, SubscriberIn
from dispatcher.incidents import maintenance as mnt
from dispatcher.incidents.broadcasts import enqueue, post_update
from dispatcher.incidents.scheduler import poll_schedule
from dispatcher.store.models import Delivery, Incident, ScheduledNotice
from tests.harness import Harness

pytestmark = pytest.mark.slow


def _update(harness: Harness, incident_id: int, changes: dict[str, object]) -> int:
    with harness.database.session() as session:
        _, broadcast = post_update(session, harness.settings, incident_id, changes)
        broadcast_id = broadcast.id
    enqueue(broadcast_id)
    return broadcast_id


def _incident_of(harness: Harness, broadcast_id: int) -> int:
    with harness.database.session() as session:
        return session.scalar(select(Incident.id).order_by(Incident.id.desc()).limit(1))


def test_default_policy_texts_on_open_and_resolve_only(harness: Harness) -> None:
    harness.subscribers(
        [SubscriberIn(external_id="a", lists=["customers"], email="a@example.com", phone="+14155550101")]
    )
    harness.worker()
    opened = harness.open()
    harness.wait(opened)
    incident_id = _incident_of(harness, opened)
    harness.wait(_update(harness, incident_id, {"status": "identified", "cause": "a bad deploy"}))
    assert len(harness.sandbox.messages("sms")) == 1  # a plain update: email only
    harness.wait(_update(harness, incident_id, {"status": "resolved"}))
    assert len(harness.sandbox.messages("sms")) == 2
    assert len(harness.sandbox.messages("email")) == 3
    # the commander can still text a plain update
    with harness.database.session() as session:
        _, broadcast = post_update(session, harness.settings, incident_id, {}, channels=["sms"])
        override = broadcast.id
    enqueue(override)
    harness.wait(override)
    assert len(harness.sandbox.messages("sms")) == 3


def _local_window(zone: str, ends_in_s: float) -> tuple[QuietHours, datetime]:
    """Quiet hours in `zone` that began an hour ago and end `ends_in_s` from now (to the second)."""
    now = datetime.now(ZoneInfo(zone)).replace(microsecond=0)
    end = now + timedelta(seconds=ends_in_s)
    return QuietHours(start=(now - timedelta(hours=1)).time(), end=end.time()), end.astimezone(UTC)


def test_quiet_hours_hold_a_low_impact_reminder_but_never_an_incident(harness: Harness) -> None:
    harness.configure(DISPATCHER_MAINTENANCE_REMINDER_OFFSETS_S="[3600]", DISPATCHER_SWEEP_INTERVAL_S="1")
    harness.worker()
    harness.beat()  # the sweeper releases the held rows when the quiet hours end
    # Started first, so their start-up does not eat into the window; long enough for a loaded machine
    # to reach the "still held" check before Tokyo's quiet hours end.
    quiet, quiet_end = _local_window("Asia/Tokyo", ends_in_s=30)
    harness.subscribers(
        [
            SubscriberIn(
                external_id="tokyo",
                lists=["customers"],
                email="tokyo@example.com",
                timezone="Asia/Tokyo",
                quiet_hours=quiet,
            ),
            SubscriberIn(external_id="utc", lists=["customers"], email="utc@example.com"),
        ]
    )
    starts = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    with harness.database.session() as session:
        maintenance, scheduled, _ = mnt.schedule(
            session,
            harness.settings,
            OutageMessage(
                title="Disk swap",
                kind="maintenance",
                impact="minor",
                starts_at=starts,
                ends_at=starts + timedelta(hours=1),
            ),
        )
        scheduled_id, maintenance_id = scheduled.id, maintenance.id
    enqueue(scheduled_id)
    harness.wait(scheduled_id)  # the announcement is not a reminder: it reaches Tokyo now
    poll_schedule(harness.database, harness.settings, now=starts - timedelta(hours=1), enqueue=enqueue)
    # The reminder is due a second after scheduling, so on a slow machine beat's own poll may have
    # claimed it first: either way there is exactly one reminder broadcast.
    with harness.database.session() as session:
        [reminder] = session.scalars(
            select(ScheduledNotice.broadcast_id).where(
                ScheduledNotice.incident_id == maintenance_id,
                ScheduledNotice.event == "maintenance_reminder",
                ScheduledNotice.broadcast_id.is_not(None),
            )
        ).all()
    incident = harness.open(OutageMessage(title="Login failing", impact="minor"))
    harness.wait(incident)  # an incident never waits, whatever the hour

    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:  # the reminder reaches UTC, and its tier gate opens
        if any(m["recipient"] == "utc@example.com" for m in _emails_of(harness, reminder)):
            break
        time.sleep(0.2)
    with harness.database.session() as session:
        held = session.scalars(
            select(Delivery).where(Delivery.broadcast_id == reminder, Delivery.address == "tokyo@example.com")
        ).one()
        assert held.state == "pending" and held.next_attempt_at == quiet_end
    progress = harness.progress(reminder)
    assert [t["gate"] for t in progress["tiers"][:2]] == ["accepted", "accepted"]  # not held for Tokyo

    harness.wait(reminder, timeout_s=90)  # then completes once Tokyo's morning comes
    to_tokyo = [m for m in _emails_of(harness, reminder) if m["recipient"] == "tokyo@example.com"]
    assert len(to_tokyo) == 1 and to_tokyo[0]["received_at"] >= quiet_end.timestamp()
    early = [
        m
        for m in harness.sandbox.messages("email")
        if m["recipient"] == "tokyo@example.com" and m["received_at"] < quiet_end.timestamp()
    ]
    assert len(early) == 2  # the announcement and the incident went at once


def _emails_of(harness: Harness, broadcast_id: int) -> list[dict[str, object]]:
    with harness.database.session() as session:
        ids = {
            str(i)
            for i in session.scalars(
                select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.channel == "email")
            )
        }
    return [m for m in harness.sandbox.messages("email") if m["delivery_id"] in ids]


def test_a_long_outage_resolves_with_compensation_for_the_configured_tiers(harness: Harness) -> None:
    harness.configure(DISPATCHER_COMPENSATION_AFTER_S="3600", DISPATCHER_COMPENSATION_TIERS="[2]")
    harness.subscribers(
        [
            SubscriberIn(external_id="adm", lists=["admins"], email="adm@example.com"),
            SubscriberIn(external_id="cus", lists=["customers"], email="cus@example.com"),
        ]
    )
    harness.worker()
    opened = harness.open(send=False)
    incident_id = _incident_of(harness, opened)
    with harness.database.session() as session:  # it opened two hours ago
        session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(created_at=datetime.now(UTC) - timedelta(hours=2))
        )
    harness.wait(_update(harness, incident_id, {"status": "resolved"}))
    text = {m["recipient"]: m["text"] for m in harness.sandbox.messages("email")}
    default = harness.settings.compensation_text
    assert default in text["cus@example.com"]
    assert default not in text["adm@example.com"]
    assert Counter(m["recipient"] for m in harness.sandbox.messages("email")) == {
        "adm@example.com": 1,
        "cus@example.com": 1,
    }
