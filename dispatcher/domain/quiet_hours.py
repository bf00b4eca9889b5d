"""Quiet hours: when a low-impact maintenance reminder waits for the recipient's morning. Pure.

Only reminders of low-impact maintenance wait (QUIET_IMPACTS); an incident, a start notice or a
cancellation never does, because the whole point of those is that they arrive now.

Windows are local wall-clock times in the subscriber's own zone, and may cross midnight
(22:00 -> 07:00). Across a DST change the end is the wall-clock time on the day it falls: an end
that does not exist that day (inside the spring-forward gap) means the first moment after the gap;
an end that occurs twice (fall back) means its first occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dispatcher.domain.message import Impact

QUIET_IMPACTS = frozenset({Impact.NONE, Impact.MINOR})


def _as_time(value: Any) -> time:
    return value if isinstance(value, time) else time.fromisoformat(str(value))


def quiet_until(now_utc: datetime, tz_name: str, quiet_hours: Mapping[str, Any] | None) -> datetime | None:
    """The UTC instant the recipient's quiet hours end, if `now_utc` falls inside them; else None."""
    if not quiet_hours:
        return None
    start, end = _as_time(quiet_hours["start"]), _as_time(quiet_hours["end"])
    if start == end:
        return None  # an empty window, not a whole day of silence
    zone = ZoneInfo(tz_name)
    local = now_utc.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    crosses_midnight = start > end
    inside = (clock >= start or clock < end) if crosses_midnight else (start <= clock < end)
    if not inside:
        return None
    end_day = local.date() + timedelta(days=1) if crosses_midnight and clock >= start else local.date()
    ends = datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)
    # Inside a spring-forward gap the round trip can land a moment early; never end before now.
    return max(ends, now_utc.astimezone(UTC))
