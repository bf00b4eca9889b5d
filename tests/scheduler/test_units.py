"""The pure parts: the notice plan, quiet hours, the cadence rule, the channel policy."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from channels.base import ChannelName
from dispatcher.domain.message import EventKind
from dispatcher.domain.policy import channels_for
from dispatcher.domain.quiet_hours import quiet_until
from dispatcher.incidents.cadence import reminder_due
from dispatcher.incidents.maintenance import notice_plan

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
H = 3600.0
OFFSETS = [72 * H, 24 * H, 1 * H]
ALL = list(ChannelName)


def test_the_plan_has_every_reminder_then_start_and_end() -> None:
    start, end = NOW + timedelta(days=5), NOW + timedelta(days=5, hours=2)
    plan = notice_plan(NOW, start, end, OFFSETS)
    assert [(n.event, n.due_at, n.state) for n in plan] == [
        (EventKind.MAINTENANCE_REMINDER, start - timedelta(hours=72), "pending"),
        (EventKind.MAINTENANCE_REMINDER, start - timedelta(hours=24), "pending"),
        (EventKind.MAINTENANCE_REMINDER, start - timedelta(hours=1), "pending"),
        (EventKind.MAINTENANCE_STARTED, start, "pending"),
        (EventKind.MAINTENANCE_COMPLETED, end, "pending"),
    ]


def test_reminders_already_past_are_skipped_but_start_and_end_are_not() -> None:
    start = NOW + timedelta(hours=10)
    plan = notice_plan(NOW, start, start + timedelta(hours=1), OFFSETS)
    states = {(n.event, n.due_at - start): n.state for n in plan}
    assert states[(EventKind.MAINTENANCE_REMINDER, timedelta(hours=-72))] == "skipped"
    assert states[(EventKind.MAINTENANCE_REMINDER, timedelta(hours=-24))] == "skipped"
    assert states[(EventKind.MAINTENANCE_REMINDER, timedelta(hours=-1))] == "pending"
    late_start = notice_plan(NOW, NOW - timedelta(minutes=5), NOW + timedelta(hours=1), OFFSETS)
    assert [n.state for n in late_start if n.event is not EventKind.MAINTENANCE_REMINDER] == ["pending"] * 2


def test_the_plan_is_configurable_and_a_started_window_only_gets_its_end() -> None:
    start, end = NOW + timedelta(hours=3), NOW + timedelta(hours=4)
    plan = notice_plan(NOW, start, end, [2 * H, 2 * H, 0])
    assert [n.event for n in plan].count(EventKind.MAINTENANCE_REMINDER) == 1  # duplicates and 0 dropped
    started = notice_plan(NOW, NOW - timedelta(hours=1), end, OFFSETS, started=True)
    assert [n.event for n in started] == [EventKind.MAINTENANCE_COMPLETED]
    manual = notice_plan(NOW, start, end, OFFSETS, edges=False)
    assert {n.event for n in manual} == {EventKind.MAINTENANCE_REMINDER}


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


NIGHT = {"start": "22:00:00", "end": "07:00:00"}


def test_quiet_hours_crossing_midnight_end_next_morning_local_time() -> None:
    # Tokyo is UTC+9 all year: 23:30 local on 2 March is 14:30 UTC.
    assert quiet_until(_utc(2026, 3, 2, 14, 30), "Asia/Tokyo", NIGHT) == _utc(2026, 3, 2, 22, 0)
    # 06:00 local on 3 March, still quiet, same end.
    assert quiet_until(_utc(2026, 3, 2, 21, 0), "Asia/Tokyo", NIGHT) == _utc(2026, 3, 2, 22, 0)
    assert quiet_until(_utc(2026, 3, 2, 22, 0), "Asia/Tokyo", NIGHT) is None  # 07:00: the end is open
    assert quiet_until(_utc(2026, 3, 2, 3, 0), "Asia/Tokyo", NIGHT) is None  # noon


def test_quiet_hours_inside_one_day_and_empty_or_missing_windows() -> None:
    lunch = {"start": time(12, 0), "end": time(13, 0)}
    assert quiet_until(_utc(2026, 3, 2, 12, 30), "UTC", lunch) == _utc(2026, 3, 2, 13, 0)
    assert quiet_until(_utc(2026, 3, 2, 13, 30), "UTC", lunch) is None
    assert quiet_until(_utc(2026, 3, 2, 12, 30), "UTC", {"start": "12:00", "end": "12:00"}) is None
    assert quiet_until(_utc(2026, 3, 2, 12, 30), "UTC", None) is None


def test_quiet_hours_across_dst_changes() -> None:
    # New York springs forward on 8 March 2026 (02:00 EST -> 03:00 EDT). 23:00 EST on the 7th is
    # 04:00 UTC on the 8th; 07:00 EDT on the 8th is 11:00 UTC (not 12:00, as EST would give).
    assert quiet_until(_utc(2026, 3, 8, 4, 0), "America/New_York", NIGHT) == _utc(2026, 3, 8, 11, 0)
    # An end inside the gap (02:30 does not exist that night) ends at the first moment after it.
    gap = {"start": "23:00", "end": "02:30"}
    ends = quiet_until(_utc(2026, 3, 8, 5, 0), "America/New_York", gap)
    assert ends == _utc(2026, 3, 8, 7, 30)  # 03:30 EDT
    # Falls back on 1 November 2026: 23:00 EDT on the 31st is 03:00 UTC; 07:00 EST is 12:00 UTC.
    assert quiet_until(_utc(2026, 11, 1, 3, 0), "America/New_York", NIGHT) == _utc(2026, 11, 1, 12, 0)
    # An end that happens twice (01:30) is its first occurrence, 01:30 EDT = 05:30 UTC.
    twice = {"start": "23:00", "end": "01:30"}
    assert quiet_until(_utc(2026, 11, 1, 4, 0), "America/New_York", twice) == _utc(2026, 11, 1, 5, 30)


def test_cadence_is_due_after_the_cadence_and_repeats_every_cadence() -> None:
    cadence = timedelta(minutes=30)
    posted = NOW
    assert not reminder_due(NOW + timedelta(minutes=29), posted, None, cadence)
    assert reminder_due(NOW + timedelta(minutes=30), posted, None, cadence)
    reminded = NOW + timedelta(minutes=30)
    assert not reminder_due(NOW + timedelta(minutes=59), posted, reminded, cadence)
    assert reminder_due(NOW + timedelta(minutes=60), posted, reminded, cadence)
    # an update after the reminder restarts the clock
    assert not reminder_due(NOW + timedelta(minutes=61), NOW + timedelta(minutes=45), reminded, cadence)


def test_a_passed_next_update_at_is_due_once_before_the_cadence() -> None:
    cadence = timedelta(minutes=30)
    promised = NOW + timedelta(minutes=10)
    assert not reminder_due(NOW + timedelta(minutes=9), NOW, None, cadence, promised)
    assert reminder_due(NOW + timedelta(minutes=10), NOW, None, cadence, promised)
    reminded = NOW + timedelta(minutes=11)
    assert not reminder_due(NOW + timedelta(minutes=20), NOW, reminded, cadence, promised)


def test_default_policy_texts_only_on_the_edges_and_the_maintenance_start() -> None:
    def sms(event: EventKind, **kw: object) -> bool:
        return ChannelName.SMS in channels_for(event, enabled=ALL, **kw)  # type: ignore[arg-type]

    assert sms(EventKind.INCIDENT_OPENED) and sms(EventKind.INCIDENT_RESOLVED)
    assert not sms(EventKind.INCIDENT_UPDATED)
    assert sms(EventKind.INCIDENT_UPDATED, impact_rose=True)
    assert sms(EventKind.MAINTENANCE_STARTED)
    assert not any(
        sms(e)
        for e in (
            EventKind.MAINTENANCE_SCHEDULED,
            EventKind.MAINTENANCE_REMINDER,
            EventKind.MAINTENANCE_COMPLETED,
        )
    )


def test_the_policy_setting_and_a_commander_override() -> None:
    policy = {ChannelName.SMS: [EventKind.INCIDENT_UPDATED]}
    picked = channels_for(EventKind.INCIDENT_UPDATED, enabled=ALL, policy=policy)
    assert ChannelName.SMS in picked and ChannelName.EMAIL in picked  # email keeps its default
    assert ChannelName.SMS not in channels_for(EventKind.INCIDENT_OPENED, enabled=ALL, policy=policy)
    override = channels_for(EventKind.INCIDENT_UPDATED, enabled=ALL, override=[ChannelName.SMS])
    assert override == [ChannelName.SMS]
