"""What a reader of each locale should see, for the property tests: the headline, the posted stamp
with its zone, and the words that would make an estimate read as a promise.

Zones and clocks are computed here, independently of channels/rendering.py; the wording itself comes
from the catalogs, whose completeness is tests/channels/test_catalogs.py's job."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from channels.catalogs import translations
from channels.locales import SHIPPED_LOCALES, resolve
from channels.sms.segments import transliterate
from dispatcher.domain.message import EventKind, OutageMessage, Status

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
ZONE = r"(?:UTC(?:[+-]\d{2}(?::\d{2})?)?|[A-Z][A-Za-z]{1,5})"

# The headlines' English msgids (templates/_wording.j2); incidents show their status instead.
HEADLINES = {
    EventKind.MAINTENANCE_SCHEDULED: "Scheduled maintenance",
    EventKind.MAINTENANCE_REMINDER: "Maintenance reminder",
    EventKind.MAINTENANCE_STARTED: "Maintenance started",
    EventKind.MAINTENANCE_COMPLETED: "Maintenance completed",
    EventKind.MAINTENANCE_CANCELLED: "Maintenance cancelled",
    EventKind.MAINTENANCE_RESCHEDULED: "Maintenance rescheduled",
}
INCIDENT_LABELS = {
    Status.INVESTIGATING: "Investigating",
    Status.IDENTIFIED: "Identified",
    Status.MONITORING: "Monitoring",
    Status.RESOLVED: "Resolved",
}
# The msgids that word a confirmed ETA: none of their fixed words may appear for an unconfirmed one.
CONFIRMED = ("Back by %(when)s (confirmed)", "Service will be restored by %(when)s.")


def shipped(locale: str) -> str:
    return resolve(locale, SHIPPED_LOCALES)


def headline(message: OutageMessage, event: EventKind, locale: str = "en") -> str:
    msgid = HEADLINES.get(event) or INCIDENT_LABELS[message.lifecycle_status]
    return translations(shipped(locale)).gettext(msgid)


def zone_of(when: datetime, tz: str) -> str:
    """tzdata's abbreviation, or 'UTC+05:30' when it has only digits ('+04')."""
    local = when.astimezone(ZoneInfo(tz))
    name = local.tzname() or ""
    if name[:1].isalpha():
        return name
    minutes = int((local.utcoffset() or timedelta(0)).total_seconds()) // 60
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{'+' if minutes >= 0 else '-'}{hours:02d}" + (f":{mins:02d}" if mins else "")


def stamp_pattern(when: datetime, tz: str, locale: str = "en") -> str:
    """A regex for `when` as the reader sees it: English exactly ('22 Nov 14:05 CET', with the year
    and weekday of the long form allowed); any other language as its day of the month, then within a
    few characters (month name, year, weekday) the 24-hour clock and the zone."""
    local = when.astimezone(ZoneInfo(tz))
    clock_zone = re.escape(f"{local:%H:%M} {zone_of(when, tz)}") + r"(?![A-Za-z])"
    if shipped(locale) == "en":
        day = re.escape(f"{local.day} {MONTHS[local.month - 1]}")
        return rf"{day}(?: {local.year})? {clock_zone}"
    return rf"(?<!\d){local.day}(?!\d)[^\n\d]{{0,16}}(?:{local.year}[^\n\d]{{0,8}})?{clock_zone}"


def has_stamp(text: str, when: datetime, tz: str, locale: str = "en") -> bool:
    return bool(re.search(stamp_pattern(when, tz, locale), text))


def promise_words(locale: str) -> list[str]:
    """The fixed words of a confirmed ETA in `locale` (as written, and as an SMS transliterates them)."""
    gettext = translations(shipped(locale)).gettext
    words: set[str] = set()
    for msgid in CONFIRMED:
        for piece in gettext(msgid).split("%(when)s"):
            piece = piece.strip()
            if len(piece) >= 3:
                words.update({piece, transliterate(piece)})
    return sorted(words)


_CLOCK = re.compile(r"(?<![\d:])\d{2}:\d{2}(?![\d:])")
_TIME_WITH_ZONE = re.compile(rf"\d{{2}}:\d{{2}}(?:[–-]\d{{2}}:\d{{2}})? {ZONE}(?![A-Za-z])")


def clocks_without_zone(text: str) -> list[str]:
    """Every 'HH:MM' in `text` that is not part of 'HH:MM ZONE' or 'HH:MM–HH:MM ZONE'."""
    covered = [m.span() for m in _TIME_WITH_ZONE.finditer(text)]
    return [
        text[max(0, m.start() - 20) : m.end() + 10]
        for m in _CLOCK.finditer(text)
        if not any(a <= m.start() and m.end() <= b for a, b in covered)
    ]


def user_strings(message: OutageMessage) -> list[str]:
    """Every piece of text the sender typed (a time typed into a title is theirs, not ours)."""
    out = [message.title, *message.components, *message.regions, *message.workarounds]
    out += [
        v
        for v in (
            message.summary,
            message.details,
            message.cause,
            message.data_safety,
            message.compensation,
            message.prevention,
        )
        if v
    ]
    for contact in message.support_contacts:
        out += [v for v in (contact.label, contact.email, contact.phone) if v]
    return out
