"""Templates and the pure helpers every condenser shares.

The wording lives in `templates/` (Jinja2); the rules that must hold whatever the wording says live
here: every time carries its zone, an unconfirmed ETA is never worded as a promise, and templates get
the message as pre-escaped *facts* so an operator's override template cannot forget to escape.

Template lookup for one channel, notice and part (e.g. email, incident_resolved, html):
`<channel>/<event>.<part>.j2` first, then `<channel>/default.<part>.j2`; the override directory is
searched before the packaged templates for each name. So an operator replaces one kind's wording by
dropping `sms/incident_resolved.txt.j2` into the override directory, or a whole channel's wording
with `sms/default.txt.j2`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale
from babel.dates import format_skeleton, get_datetime_format
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

import templates as _templates_package
from channels.base import ChannelName, RenderContext
from channels.catalogs import N_, babel_locale, shipped_locale, translations
from channels.locales import SHIPPED_LOCALES
from channels.notice import Notice
from config.settings import Settings

PACKAGED_DIR = Path(_templates_package.__file__).parent

# The parts each channel renders; a part is the middle of the file name: `<event>.<part>.j2`.
PARTS: dict[ChannelName, tuple[str, ...]] = {
    ChannelName.EMAIL: ("subject.txt", "html", "txt"),
    ChannelName.CHAT: ("mrkdwn",),
    ChannelName.SMS: ("txt",),
    ChannelName.SOCIAL: ("txt",),
    ChannelName.WEBHOOK: ("txt",),
}

Escape = Callable[[str], str]
Facts = dict[str, Any]


def _identity(value: str) -> str:
    return value


class TemplateError(Exception):
    """A template that does not render; reported at start or preview, never first at send time.

    The channel's own error, not the service's: templates are the channels' wording, and the
    service decides how a broken one is reported (its API answers it like any of its errors)."""

    code = "template_error"

    def __init__(self, message: str, *, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


# --------------------------------------------------------------------------------------------------
# labels and times


# Keyed by the vocabulary's string values (see channels/notice.py); a str enum member looks up the same.
# The values are English msgids: `status_label` and `impact_label` translate them for the reader.
STATUS_LABELS: dict[str, str] = {
    "investigating": N_("Investigating"),
    "identified": N_("Identified"),
    "monitoring": N_("Monitoring"),
    "resolved": N_("Resolved"),
    "scheduled": N_("Scheduled"),
    "in_progress": N_("In progress"),
    "completed": N_("Completed"),
    "cancelled": N_("Cancelled"),
}

IMPACT_LABELS: dict[str, str] = {
    "none": N_("None"),
    "minor": N_("Minor"),
    "major": N_("Major"),
    "critical": N_("Critical"),
}

RESOLVED = "resolved"  # the incident status whose notice carries `prevention` on the short channels
FINAL_STATUSES = frozenset({RESOLVED, "completed", "cancelled"})  # nothing more happens after these

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def status_label(status: str, locale: str = "en") -> str:
    return translations(locale).gettext(STATUS_LABELS[status])


def impact_label(impact: str, locale: str = "en") -> str:
    return translations(locale).gettext(IMPACT_LABELS[impact])


def reader_zone(name: str) -> ZoneInfo:
    """The reader's zone; an unknown name falls back to UTC, which stays truthful because the zone
    is always printed next to the time."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def zone_label(local: datetime) -> str:
    """'UTC', 'CET', or 'UTC+05:30' when the zone has no letter abbreviation (tzdata's '+04')."""
    name = local.tzname() or ""
    if name[:1].isalpha():
        return name
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}" + (f":{mins:02d}" if mins else "")


def _clock(local: datetime) -> str:
    """24-hour clock in every language: the one form every reader of a status notice parses."""
    return f"{local.hour:02d}:{local.minute:02d}"


@lru_cache(maxsize=32)
def _babel(loc: str) -> Locale:
    """Babel's data for one shipped locale, parsed once (every formatted time needs it)."""
    return Locale.parse(loc)


@lru_cache(maxsize=32)
def _date_clock_pattern(loc: str) -> str:
    """CLDR's '{1}, {0}' (date, time) for the locale, its quoted literals unquoted ('{1} 'à' {0}')."""
    pattern = str(get_datetime_format("medium", locale=_babel(loc)))
    return pattern.replace("''", "\0").replace("'", "").replace("\0", "'")


def _day(local: datetime, *, long: bool, locale: str) -> str:
    """The date without the clock: '22 Nov' / 'Sat 22 Nov 2025' in English (fixed, as it always
    was), otherwise Babel's pattern for the locale ('22. Nov.', '11月22日', 'sam. 22 nov. 2025')."""
    return _day_text(local.date(), long, babel_locale(locale))


@lru_cache(maxsize=4096)
def _day_text(day: date, long: bool, loc: str) -> str:
    """Cached: a broadcast's variants and `check()` format the same few days again and again."""
    if loc == "en":
        if long:
            return f"{_WEEKDAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"
        return f"{day.day} {_MONTHS[day.month - 1]}"
    return format_skeleton("yMMMEd" if long else "MMMd", day, locale=_babel(loc))


def _date_and_clock(day: str, clock: str, locale: str) -> str:
    """The locale's own way of putting a date beside a time ('22. Nov., 15:05' in German)."""
    loc = babel_locale(locale)
    if loc == "en":
        return f"{day} {clock}"
    return _date_clock_pattern(loc).replace("{1}", day).replace("{0}", clock)


def format_time(when: datetime, timezone: str = "UTC", *, long: bool = False, locale: str = "en") -> str:
    """'22 Nov 14:05 UTC', or with `long` 'Sat 22 Nov 2025 14:05 UTC'; in German '22. Nov., 15:05 CET'.
    The zone is always shown, and is the same tzdata abbreviation in every language.

    Dates come from Babel's locale data, never the process locale, so rendering stays pure."""
    local = when.astimezone(reader_zone(timezone))
    clock = f"{_clock(local)} {zone_label(local)}"
    return _date_and_clock(_day(local, long=long, locale=locale), clock, locale)


def format_window(
    starts: datetime | None,
    ends: datetime | None,
    timezone: str = "UTC",
    *,
    long: bool = False,
    locale: str = "en",
) -> str | None:
    """A maintenance window; the same local day and zone is written once ('23 Nov 02:00–04:00 UTC')."""
    if starts is None:
        return None
    _ = translations(locale).gettext
    if ends is None:
        return _("from %(start)s") % {"start": format_time(starts, timezone, long=long, locale=locale)}
    zone = reader_zone(timezone)
    a, b = starts.astimezone(zone), ends.astimezone(zone)
    if a.date() == b.date() and zone_label(a) == zone_label(b):
        clocks = f"{_clock(a)}–{_clock(b)} {zone_label(b)}"
        return _date_and_clock(_day(a, long=long, locale=locale), clocks, locale)
    start_text = format_time(starts, timezone, long=long, locale=locale)
    return f"{start_text} – {format_time(ends, timezone, long=long, locale=locale)}"


def eta_text(
    message: Notice,
    timezone: str = "UTC",
    *,
    short: bool = False,
    long: bool = False,
    locale: str = "en",
) -> str | None:
    """The ETA as customers should read it. Only a confirmed ETA is worded as a promise; an
    unconfirmed one always says 'estimate, not confirmed', in every language. None once final."""
    if message.eta is None or message.is_final:
        return None
    _ = translations(locale).gettext
    when = {"when": format_time(message.eta, timezone, long=long, locale=locale)}
    if message.eta_confirmed:
        if short:
            return _("Back by %(when)s (confirmed)") % when
        return _("Service will be restored by %(when)s.") % when
    if short:
        return _("Est. back %(when)s (estimate, not confirmed)") % when
    return _("We expect service to be restored by %(when)s (estimate, not confirmed).") % when


def shows_prevention(message: Notice) -> bool:
    """The short channels carry `prevention` on a resolved incident only: that is the notice where
    customers ask "will it happen again?"; the email always carries every field."""
    return message.lifecycle_status == RESOLVED and message.prevention is not None


def scope_text(components: Sequence[str], regions: Sequence[str], locale: str = "en") -> str | None:
    """Who is affected, in one phrase: 'API, Dashboard in eu-west'."""
    _ = translations(locale).gettext
    if components and regions:
        return _("%(components)s in %(regions)s") % {
            "components": ", ".join(components),
            "regions": ", ".join(regions),
        }
    if components:
        return ", ".join(components)
    if regions:
        return _("services in %(regions)s") % {"regions": ", ".join(regions)}
    return None


def collapse_whitespace(value: str) -> str:
    """One line: for subjects, SMS, posts and chat, where a stray newline would break the layout."""
    return " ".join(value.split())


# --------------------------------------------------------------------------------------------------
# details: a tiny, safe markdown subset for the email


_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def details_html(markdown: str) -> Markup:
    """Paragraphs, line breaks and bullet/numbered lists; everything is escaped first, so no markup
    the commander typed (or pasted) ever reaches the HTML as markup."""
    blocks = re.split(r"\n\s*\n", markdown.strip())
    out: list[str] = []
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(_LIST_ITEM.match(line) for line in lines):
            ordered = lines[0].lstrip()[:1].isdigit()
            tag = "ol" if ordered else "ul"
            items = "".join(f"<li>{escape(_LIST_ITEM.sub('', line, count=1).strip())}</li>" for line in lines)
            out.append(f"<{tag}>{items}</{tag}>")
        else:
            out.append("<p>" + "<br>\n".join(str(escape(line.strip())) for line in lines) + "</p>")
    return Markup("\n".join(out))


# --------------------------------------------------------------------------------------------------
# truncation


_TRAILING_PUNCT = " \t\n,;:-–—"


def truncate_to_fit(text: str, fits: Callable[[str], bool], ellipsis: str = "…") -> str | None:
    """The longest prefix of `text` for which `fits` holds, ending in `ellipsis` whenever anything was
    cut. Cuts at a word boundary; only a first word longer than the room is cut inside, and then
    with the ellipsis too. None when not even the ellipsis alone fits.

    `fits` is checked on every returned candidate, so the result always fits even if `fits` is not
    perfectly monotonic (a shortened URL can weigh less than the full one)."""
    if fits(text):
        return text
    if not fits(ellipsis):
        return None

    def candidate(end: int) -> str:
        return text[:end].rstrip(_TRAILING_PUNCT) + ellipsis

    word_ends = [m.start() for m in re.finditer(r"\s+", text) if text[: m.start()].strip()]
    best = _largest_fitting(word_ends, lambda end: fits(candidate(end)))
    if best is not None:
        return candidate(best)
    first_word_end = word_ends[0] if word_ends else len(text)
    best = _largest_fitting(list(range(1, first_word_end)), lambda end: fits(candidate(end)))
    return candidate(best) if best is not None else ellipsis


def _largest_fitting(ends: list[int], fits: Callable[[int], bool]) -> int | None:
    """Binary search over ascending cut points for the last one that fits."""
    lo, hi, found = 0, len(ends) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(ends[mid]):
            found, lo = ends[mid], mid + 1
        else:
            hi = mid - 1
    return found


# --------------------------------------------------------------------------------------------------
# facts: what templates see


def build_facts(
    message: Notice,
    ctx: RenderContext,
    *,
    escape_text: Escape = _identity,
    escape_url: Escape = _identity,
    long_times: bool = False,
) -> Facts:
    """Everything a template may print, with every piece of user text already passed through the
    channel's escaper and every time already formatted in the reader's zone. Every key is always
    present (None or [] when absent) so StrictUndefined catches typos, not missing fields."""
    tz = ctx.timezone
    locale = shipped_locale(ctx.locale)
    status = message.lifecycle_status

    def text(value: str | None) -> str | None:
        return escape_text(value) if value is not None else None

    def time(value: datetime | None) -> str | None:
        return text(format_time(value, tz, long=long_times, locale=locale)) if value is not None else None

    # Every string goes through `escape_text`, our own wording included: a macro defined in a
    # non-HTML template prints its arguments unescaped even when an HTML template calls it, so the
    # facts themselves must already be safe for the channel.
    return {
        "event": str(ctx.event),
        "kind": str(message.kind),
        "status": str(status),
        "status_label": text(status_label(status, locale)),
        "is_final": message.is_final,
        "impact": str(message.impact),
        "impact_label": text(impact_label(message.impact, locale)),
        "title": escape_text(message.title),
        "summary": text(message.summary),
        "details": text(message.details),
        "details_html": details_html(message.details) if message.details else None,
        "cause": text(message.cause),
        "workarounds": [escape_text(w) for w in message.workarounds],
        "components": [escape_text(c) for c in message.components],
        "regions": [escape_text(r) for r in message.regions],
        "scope": text(scope_text(message.components, message.regions, locale)),
        "eta": text(eta_text(message, tz, long=long_times, locale=locale)),
        "eta_short": text(eta_text(message, tz, short=True, long=long_times, locale=locale)),
        "eta_confirmed": message.eta_confirmed,
        "next_update": time(message.next_update_at),
        "posted": time(message.posted_at),
        "starts": time(message.starts_at),
        "ends": time(message.ends_at),
        "window": text(format_window(message.starts_at, message.ends_at, tz, long=long_times, locale=locale)),
        "data_safety": text(message.data_safety),
        "compensation": text(message.compensation),
        "prevention": text(message.prevention),
        "link": escape_url(str(message.status_page_url)) if message.status_page_url else None,
        "contacts": [
            {
                "label": escape_text(c.label),
                "email": text(c.email),
                "phone": text(c.phone),
                "url": escape_url(str(c.url)) if c.url else None,
            }
            for c in message.support_contacts
        ],
        "timezone": tz,
        "locale": locale,  # the shipped locale the wording is in (`<html lang>`)
    }


def html_facts(message: Notice, ctx: RenderContext, *, long_times: bool = True) -> Facts:
    """Facts for `.html.j2` templates: every string is already escaped `Markup`, so autoescape
    leaves it alone and a macro from a plain-text template cannot print it raw."""
    return build_facts(message, ctx, escape_text=escape, escape_url=escape, long_times=long_times)


# Keys a channel may blank out (to fit, or to stay public); `check()` renders with all of them empty.
OPTIONAL_FACTS = (
    "summary",
    "details",
    "details_html",
    "cause",
    "scope",
    "eta",
    "eta_short",
    "next_update",
    "posted",
    "starts",
    "ends",
    "window",
    "data_safety",
    "compensation",
    "prevention",
    "link",
    "impact_label",
)


def stripped_facts(facts: Mapping[str, Any]) -> Facts:
    out = dict(facts)
    for key in OPTIONAL_FACTS:
        out[key] = None
    for key in ("workarounds", "components", "regions", "contacts"):
        out[key] = []
    return out


# --------------------------------------------------------------------------------------------------
# sample notices: for `check()`, previews and golden tests


SAMPLE_POSTED = datetime(2025, 11, 22, 14, 5, tzinfo=UTC)

# Each notice (event kind) the templates are written for, with the status its sample has.
_SAMPLE_STATUS: dict[str, str] = {
    "incident_opened": "investigating",
    "incident_updated": "identified",
    "incident_resolved": "resolved",
    "maintenance_scheduled": "scheduled",
    "maintenance_reminder": "scheduled",
    "maintenance_started": "in_progress",
    "maintenance_completed": "completed",
    "maintenance_cancelled": "cancelled",
    "maintenance_rescheduled": "scheduled",
}
SAMPLE_EVENTS: tuple[str, ...] = tuple(_SAMPLE_STATUS)


def sample_fields(event: str, *, full: bool = True) -> dict[str, Any]:
    """A realistic notice for `event` as plain data (a message's field names, string values);
    `full` fills every optional field. The service validates it into its own message for its tests."""
    status = _SAMPLE_STATUS[event]
    maintenance = event.startswith("maintenance")
    base: dict[str, Any] = {
        "title": "Database upgrade" if maintenance else "Elevated API error rates",
        "kind": "maintenance" if maintenance else "incident",
        "status": status,
        "posted_at": SAMPLE_POSTED,
    }
    if maintenance:
        base["starts_at"] = datetime(2025, 11, 23, 2, 0, tzinfo=UTC)
    if not full:
        return base
    base.update(
        impact="major",
        components=["API", "Dashboard"],
        regions=["eu-west"],
        summary="Some API requests fail with 503 errors.",
        details="We are seeing failures on the write path.\n\n- retries mostly succeed\n- reads are fine",
        cause="A faulty configuration change to the load balancers.",
        workarounds=["Retry failed requests after a few seconds."],
        eta=datetime(2025, 11, 22, 16, 0, tzinfo=UTC),
        eta_confirmed=False,
        next_update_at=datetime(2025, 11, 22, 15, 0, tzinfo=UTC),
        data_safety="No data was lost; writes that failed were not applied.",
        compensation="Affected enterprise customers will be credited per the SLA.",
        prevention="We are adding a canary stage to configuration rollouts.",
        status_page_url="https://status.example.com/incidents/42",
        support_contacts=[{"label": "Support", "email": "support@example.com", "phone": "+1 555 0100"}],
    )
    if maintenance:
        base.update(
            ends_at=datetime(2025, 11, 23, 4, 0, tzinfo=UTC),
            summary="The primary database moves to a new major version.",
            details="Writes pause for up to 10 minutes.\n\n- reads stay available\n- queued jobs resume",
            cause="Planned upgrade for security fixes.",
            workarounds=["Schedule bulk imports outside the window."],
            data_safety="Backups are taken before the upgrade starts.",
            compensation="Planned maintenance does not count against the SLA.",
            prevention="Future upgrades will use online schema migration.",
            status_page_url="https://status.example.com/maintenance/7",
        )
        del base["eta"], base["eta_confirmed"]
    if status in FINAL_STATUSES:
        base.pop("eta", None)
        base.pop("eta_confirmed", None)
        del base["next_update_at"]
    return base


@dataclass(frozen=True)
class SampleContact:
    """A `Contact` for the sample notices."""

    label: str
    email: str | None = None
    phone: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class SampleNotice:
    """A `Notice` built from `sample_fields`, so templates are checked without the service's model."""

    title: str
    kind: str
    status: str
    posted_at: datetime | None = None
    impact: str = "minor"
    components: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    summary: str | None = None
    details: str | None = None
    cause: str | None = None
    workarounds: tuple[str, ...] = ()
    eta: datetime | None = None
    eta_confirmed: bool = False
    next_update_at: datetime | None = None
    data_safety: str | None = None
    compensation: str | None = None
    prevention: str | None = None
    status_page_url: str | None = None
    support_contacts: tuple[SampleContact, ...] = ()
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    @property
    def lifecycle_status(self) -> str:
        return self.status

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def sample_notice(event: str, *, full: bool = True) -> SampleNotice:
    """`sample_fields(event)` as a `Notice`."""
    data = sample_fields(event, full=full)
    for key in ("components", "regions", "workarounds"):
        if key in data:
            data[key] = tuple(data[key])
    if "support_contacts" in data:
        data["support_contacts"] = tuple(SampleContact(**c) for c in data["support_contacts"])
    return SampleNotice(**data)


# --------------------------------------------------------------------------------------------------
# the template environment


class _SharedBytecode(jinja2.BytecodeCache):
    """Compiled templates, shared by every environment built here: the per-locale environments
    differ only in the catalog installed (a global read at render time), not in how a template
    compiles, so each file is compiled once per process, not once per locale. Keyed by file name and
    checked against the source's checksum, so an edited override compiles again."""

    def __init__(self) -> None:
        self._store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._store.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._store[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _SharedBytecode()


class Templates:
    """The packaged templates, with an operator's override directory searched first; one sandboxed
    environment per shipped locale, each with that locale's catalog installed for `_()`."""

    def __init__(self, override_dir: Path | str | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        self.override_dir = Path(override_dir) if override_dir is not None else None
        if self.override_dir is not None:
            loaders.append(jinja2.FileSystemLoader(self.override_dir))
        loaders.append(jinja2.FileSystemLoader(PACKAGED_DIR))
        self._loader = jinja2.ChoiceLoader(loaders)
        self._envs: dict[str, SandboxedEnvironment] = {}
        self._checked = False  # packaged templates only: they and the catalogs are fixed per process
        self.env = self.environment("en")

    def environment(self, locale: str = "en") -> SandboxedEnvironment:
        """The environment for a reader's locale (resolved to a shipped one), built once: templates
        compile per environment, and the catalog is bound to it, so locales never share a cache."""
        shipped = shipped_locale(locale)
        env = self._envs.get(shipped)
        if env is None:
            # Sandboxed: override templates are configuration, and configuration should not run code.
            env = SandboxedEnvironment(
                loader=self._loader,
                autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
                undefined=jinja2.StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=False,
                extensions=["jinja2.ext.i18n"],
                bytecode_cache=_BYTECODE,
            )
            env.install_gettext_translations(translations(shipped), newstyle=True)  # type: ignore[attr-defined]
            self._envs[shipped] = env
        return env

    @staticmethod
    def names(channel: ChannelName, event: str, part: str) -> list[str]:
        """The names tried, in order, for one channel, notice and part."""
        return [f"{channel.value}/{event!s}.{part}.j2", f"{channel.value}/default.{part}.j2"]

    def template(self, channel: ChannelName, event: str, part: str, locale: str = "en") -> jinja2.Template:
        names = self.names(channel, event, part)
        try:
            return self.environment(locale).select_template(names)
        except jinja2.TemplateError as exc:
            raise _template_error(names[0], exc) from exc

    def render(
        self, channel: ChannelName, event: str, part: str, facts: Mapping[str, Any], locale: str = "en"
    ) -> str:
        """Render one part in the reader's locale; any failure is a TemplateError naming the file."""
        tmpl = self.template(channel, event, part, locale)
        try:
            return tmpl.render(f=facts)
        except Exception as exc:
            raise _template_error(f"{tmpl.name} ({tmpl.filename})", exc) from exc

    def check(self) -> None:
        """Render every template for every channel, notice and shipped locale, with a full and an
        empty message, so a broken template (or catalog) is found at start or preview, never first
        at send time. Without an override directory it runs once per object: nothing it reads can
        change while the process runs, and every preview asks."""
        if self._checked:
            return
        for locale in SHIPPED_LOCALES:
            for event in SAMPLE_EVENTS:
                full = sample_notice(event, full=True)
                ctx = RenderContext(event=event, locale=locale)
                minimal = sample_notice(event, full=False)
                for channel, parts in PARTS.items():
                    for part in parts:
                        make = html_facts if part == "html" else build_facts
                        for facts in (make(full, ctx), make(minimal, ctx), stripped_facts(make(full, ctx))):
                            self.render(channel, event, part, facts, locale)
        self._checked = self.override_dir is None


def _template_error(name: str, exc: Exception) -> TemplateError:
    """Name the template at fault; for a syntax error that is the file with the error, which may be
    an included or extended one rather than the template asked for."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        name = f"{exc.name} ({exc.filename}, line {exc.lineno})" if exc.name else name
    return TemplateError(f"template {name} failed: {type(exc).__name__}: {exc}", fields=[name])


@lru_cache(maxsize=1)
def default_templates() -> Templates:
    """The packaged templates only, built once per process."""
    return Templates()


def templates_for(settings: Settings) -> Templates:
    """The one place the service's templates are built: the packaged ones, with the override
    directory's (DISPATCHER_TEMPLATES_OVERRIDE_DIR) over them when one is set."""
    if settings.templates_override_dir is None:
        return default_templates()
    return Templates(settings.templates_override_dir)


# --------------------------------------------------------------------------------------------------
# fitting a short channel's text into its limit


def condense_to_fit(
    facts: Mapping[str, Any],
    render: Callable[[Facts], str],
    fits: Callable[[str], bool],
    drop_order: Sequence[str],
    ellipsis: str = "…",
) -> str:
    """Render, and while the text does not fit: drop facts in `drop_order`, then shorten the title
    (at a word, with an ellipsis), then drop the link. Status and link are the last to go.

    A template that cannot fit even then (an override with long fixed wording) is cut as a whole, so
    nothing is ever returned over the limit."""
    current: Facts = dict(facts)
    text = render(current)
    if fits(text):
        return text
    for key in drop_order:
        if current.get(key) is None:
            continue
        current[key] = None
        text = render(current)
        if fits(text):
            return text
    title = current["title"]
    for keep_link in (True, False):
        if not keep_link:
            if current.get("link") is None:
                break
            current["link"] = None
        cut = truncate_to_fit(title, lambda t: fits(render({**current, "title": t})), ellipsis)
        # A link next to a title shortened to nothing tells the reader less than the title does.
        if cut is not None and (cut != ellipsis or current.get("link") is None):
            return render({**current, "title": cut})
    text = render({**current, "title": ellipsis})
    return truncate_to_fit(text, fits, ellipsis) or ""
