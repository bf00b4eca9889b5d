"""Hypothesis strategies: arbitrary canonical messages, hostile text included, for the condenser tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from channels.base import RenderContext
from channels.locales import SHIPPED_LOCALES
from dispatcher.domain.message import (
    INCIDENT_STATUSES,
    MAINTENANCE_STATUSES,
    EventKind,
    Impact,
    Kind,
    OutageMessage,
)

HOSTILE = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "@channel",
    "@here",
    "@everyone",
    "@Channel",
    "＠here",
    "<@U123>",
    "<#C1>",
    "<https://evil.example|click>",
    "<script>alert(1)</script>",
    '<b onclick="steal()">bold</b>',
    "<img src=x onerror=alert(1)>",
    "&amp; &lt; &",
    "**bold** _it_ `code`",
    "🔥",
    "👨‍👩‍👧",
    "日本語のサービス障害",
    "데이터베이스",
    "“curly” ‘quotes’ – — … • ·",
    "€[]{}|^~\\",
    "\u00a0nbsp\u00a0",
    "café naïve façade",
    "@acme_support",
    "\n\n- item\n- item\n\n",
    "\t",
]

WORDS = ["API", "outage", "database", "latency", "errors", "checkout", "login", "eu-west", "a", "x" * 40]

_plain = st.text(
    # any printable character, plus the line breaks and tabs people paste; other control
    # characters are refused by the message model (dispatcher.domain.message.printable)
    alphabet=st.one_of(st.characters(exclude_categories=("Cs", "Cc")), st.sampled_from("\n\t\r")),
    min_size=1,
    max_size=60,
)
_fragment = st.one_of(st.sampled_from(HOSTILE), st.sampled_from(WORDS), _plain)


def text(max_size: int) -> st.SearchStrategy[str]:
    """Non-blank text up to `max_size` (after the model strips it), mixing hostile fragments,
    ordinary words, arbitrary unicode and, now and then, text right at the maximum length."""
    joined = st.lists(_fragment, min_size=1, max_size=12).map(" ".join)
    at_limit = st.tuples(st.sampled_from(WORDS + HOSTILE), _fragment).map(
        lambda p: (p[0] + " " + p[1]) * (max_size // 2 + 1)
    )
    raw = st.one_of(joined, joined, at_limit)
    return raw.map(lambda s: s.strip()[:max_size].strip()).filter(bool)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "America/St_Johns",
    "Asia/Dubai",
    "America/Sao_Paulo",
]

# Every shipped locale, plus tags the channels do not ship: a region of a shipped language (de-AT
# reads German, pt-PT Brazilian Portuguese) and an unknown language (xx reads English).
LOCALES: tuple[str, ...] = (*SHIPPED_LOCALES, "de-AT", "pt-PT", "xx")

aware_datetimes = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2035, 12, 31),
    timezones=st.sampled_from([UTC, *(ZoneInfo(z) for z in ZONES[1:])]),
)

urls = st.one_of(
    st.sampled_from(
        ["https://status.example.com", "https://status.example.com/incidents/42", "http://localhost:8000/s"]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/", min_size=1, max_size=300).map(
        lambda p: f"https://status.example.com/{p}"
    ),
)

contacts = st.builds(
    lambda label, n, with_email, with_phone, with_url: {
        "label": label,
        "email": f"support-{n}@help.example.org" if with_email or not (with_phone or with_url) else None,
        "phone": f"+1 555 0199 {n:04d}" if with_phone else None,
        "url": f"https://help.example.org/{n}" if with_url else None,
    },
    text(100),
    st.integers(0, 9999),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)


@st.composite
def messages(draw: st.DrawFn, kind: Kind | None = None) -> OutageMessage:
    """A valid canonical message, stamped; its fields as long and as strange as the model allows."""
    kind = kind or draw(st.sampled_from(list(Kind)))
    lifecycle = INCIDENT_STATUSES if kind is Kind.INCIDENT else MAINTENANCE_STATUSES
    data: dict[str, Any] = {
        "title": draw(text(200)),
        "kind": kind,
        "status": draw(st.sampled_from(lifecycle)),
        "impact": draw(st.sampled_from(list(Impact))),
        "components": draw(st.lists(text(100), max_size=50)),
        "regions": draw(st.lists(text(100), max_size=50)),
        "summary": draw(_optional(text(500))),
        "details": draw(_optional(text(20_000))),
        "cause": draw(_optional(text(500))),
        "workarounds": draw(st.lists(text(500), max_size=10)),
        "next_update_at": draw(_optional(aware_datetimes)),
        "data_safety": draw(_optional(text(500))),
        "compensation": draw(_optional(text(500))),
        "prevention": draw(_optional(text(500))),
        "status_page_url": draw(_optional(urls)),
        "support_contacts": draw(st.lists(contacts, max_size=10)),
        "posted_at": draw(aware_datetimes),
    }
    eta = draw(_optional(aware_datetimes))
    if eta is not None:
        data["eta"] = eta
        data["eta_confirmed"] = draw(st.booleans())
    if kind is Kind.MAINTENANCE or draw(st.booleans()):
        starts = draw(aware_datetimes)
        data["starts_at"] = starts
        if draw(st.booleans()):
            # add in UTC: wall-clock arithmetic in a zone can land before the start across a DST gap
            length = draw(st.timedeltas(timedelta(minutes=1), timedelta(days=3)))
            data["ends_at"] = (starts.astimezone(UTC) + length).astimezone(starts.tzinfo)
    return OutageMessage.model_validate(data)


@st.composite
def message_and_context(
    draw: st.DrawFn, budgets: tuple[int, ...] = (1, 2, 3), locales: tuple[str, ...] = LOCALES
) -> tuple[OutageMessage, RenderContext]:
    """A message with a notice that fits its kind, read in some language and zone, with some SMS
    budget."""
    message = draw(messages())
    events = [e for e in EventKind if e.value.startswith(message.kind.value)]
    ctx = RenderContext(
        event=draw(st.sampled_from(events)),
        locale=draw(st.sampled_from(locales)),
        timezone=draw(st.sampled_from(ZONES)),
        sms_segment_budget=draw(st.sampled_from(budgets)),
    )
    return message, ctx
