"""The public status page for people: `/status` (the overall status, every component, open incidents
with their whole public timeline, maintenance), `/status/incidents/{id}` and `/status/history/{YYYY-MM}`.

Everything is rendered from the status snapshot (dispatcher/reads/status.py), never from a live
query, so the pages answer while the database or the broker is down (the snapshot's age is then
shown). Server-rendered and autoescaped; readable without JavaScript, where every time is in UTC.
One small script of ours (templates/status/local-time.js, the CSP allows no other) rewrites the
`<time datetime>` elements into the reader's zone. Public: no key, limited per client address,
cacheable (ETag, Last-Modified, `Cache-Control: public`, 304).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment

from config import Settings
from dispatcher.domain.status import page_name
from dispatcher.public.caching import cached_response, read_route, snapshot_to_serve
from dispatcher.public.pages import (
    TEMPLATES_DIR,
    environment,
    site_context,
    static_file,
    strict_headers,
    too_many,
)
from dispatcher.public.status_limit import over_status_limit
from dispatcher.reads.status import Snapshot, SnapshotUnavailable

router = APIRouter(tags=["status page (public)"])
STATUS_DIR = TEMPLATES_DIR / "status"
# The public pages' policy, plus our one script (a file: no inline script or style anywhere)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {k: v for k, v in strict_headers(CSP).items() if k != "Cache-Control"}  # cached_response's
HISTORY_DAYS = 90
RECENT = 10  # past incidents listed on /status (the month pages have the rest)
OPEN = ("investigating", "identified", "monitoring")
ACTIVE_MAINTENANCE = ("in_progress", "verifying")
MONTH_NAMES = tuple(datetime(2000, m, 1).strftime("%B") for m in range(1, 13))  # C locale


# ---- rendering ---------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def iso_utc(value: str | None) -> str:
    """A snapshot time as `<time datetime>` wants it: UTC, to the second, with a Z."""
    when = parse_time(value)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""


def human_utc(value: str | None) -> str:
    """What a reader without JavaScript sees: `2 Dec 2026, 15:39 UTC`."""
    when = parse_time(value)
    return f"{when.day} {when:%b %Y, %H:%M} UTC" if when else ""


def label(value: str | None) -> str:
    """`degraded_performance` -> `Degraded performance` (Statuspage's words, as people read them)."""
    return (value or "").replace("_", " ").capitalize()


@lru_cache(maxsize=1)
def status_environment() -> Environment:
    """The autoescaping environment of templates/status/ (the public pages' one), with our filters."""
    env = environment("status")
    env.filters.update(iso_utc=iso_utc, human_utc=human_utc, label=label)
    return env


def month_slug(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}"


def _month_link(year: int, month: int) -> dict[str, str]:
    return {"slug": f"{year:04d}-{month:02d}", "name": f"{MONTH_NAMES[month - 1]} {year}"}


def _shift(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + by
    return index // 12, index % 12 + 1


def render(settings: Settings, snapshot: Snapshot, name: str, title: str, **context: Any) -> bytes:
    now = datetime.now(UTC)
    html = (
        status_environment()
        .get_template(name)
        .render(
            title=title,
            **site_context(settings),
            page_name=page_name(settings.service_name),
            stale=snapshot.stale,
            stale_age=_age(snapshot.age_s()),
            generated_at=snapshot.body.get("generated_at"),
            this_month=month_slug(now),
            history_days=HISTORY_DAYS,
            **context,
        )
    )
    return html.encode()


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 7200:
        return f"{seconds // 60} minutes"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} hours"
    return f"{seconds // 86400} days"


class _Rendered:
    """Pages already rendered for a snapshot version (its ETag): the page under load renders once
    per change, not once per request. A stale snapshot's page shows its age, so it is never kept."""

    def __init__(self, size: int = 256) -> None:
        self.lock = threading.Lock()
        self.size = size
        self.items: dict[tuple[str, ...], bytes] = {}

    def get(self, key: tuple[str, ...]) -> bytes | None:
        with self.lock:
            return self.items.get(key)

    def put(self, key: tuple[str, ...], body: bytes) -> None:
        with self.lock:
            if len(self.items) >= self.size:
                self.items.clear()
            self.items[key] = body


RENDERED = _Rendered()


def _cached_render(settings: Settings, snapshot: Snapshot, key: tuple[str, ...], build: Any) -> bytes:
    if snapshot.stale:
        return build()
    full = (settings.effective_database_url, snapshot.etag, month_slug(datetime.now(UTC)), *key)
    body = RENDERED.get(full)
    if body is None:
        body = build()
        RENDERED.put(full, body)
    return body


# ---- what the pages show -----------------------------------------------------------------------


def component_sections(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statuspage's flat list (groups are components with `group: true` and their children's ids)
    as sections in position order: a group's name and its components, or a run of ungrouped ones."""
    ordered = sorted(components, key=lambda c: c.get("position") or 0)
    by_id = {c["id"]: c for c in ordered}
    sections: list[dict[str, Any]] = []
    for c in ordered:
        if c.get("group"):
            children = [by_id[i] for i in c.get("components") or [] if i in by_id]
            sections.append({"name": c["name"], "components": children})
        elif not c.get("group_id") or c["group_id"] not in by_id:
            if not sections or sections[-1]["name"] is not None:
                sections.append({"name": None, "components": []})
            sections[-1]["components"].append(c)
    return sections


def _everything(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [*body.get("incidents", []), *body.get("scheduled_maintenances", [])]


def started_at(item: dict[str, Any]) -> datetime:
    return parse_time(item.get("scheduled_for") or item.get("created_at")) or datetime.min.replace(tzinfo=UTC)


def finished_at(item: dict[str, Any]) -> datetime:
    return parse_time(item.get("resolved_at") or item.get("updated_at")) or datetime.min.replace(tzinfo=UTC)


def status_context(body: dict[str, Any]) -> dict[str, Any]:
    incidents = body.get("incidents", [])
    maintenances = body.get("scheduled_maintenances", [])
    past = [i for i in incidents if i.get("status") not in OPEN]
    past += [m for m in maintenances if m.get("status") == "completed"]
    return {
        "status": body.get("status", {}),
        "sections": component_sections(body.get("components", [])),
        "open_incidents": [i for i in incidents if i.get("status") in OPEN],
        "active_maintenances": [m for m in maintenances if m.get("status") in ACTIVE_MAINTENANCE],
        "upcoming_maintenances": sorted(
            (m for m in maintenances if m.get("status") == "scheduled"), key=started_at
        ),
        "recent": sorted(past, key=finished_at, reverse=True)[:RECENT],
        "updated_at": body.get("page", {}).get("updated_at"),
    }


def find_item(body: dict[str, Any], item_id: str) -> dict[str, Any] | None:
    return next((i for i in _everything(body) if str(i.get("id")) == item_id), None)


def month_items(body: dict[str, Any], year: int, month: int) -> list[dict[str, Any]]:
    """The incidents and maintenance that started in that month (UTC), newest first."""
    items = [i for i in _everything(body) if (started_at(i).year, started_at(i).month) == (year, month)]
    return sorted(items, key=started_at, reverse=True)


def parse_month(value: str) -> tuple[int, int] | None:
    """`2026-12` -> (2026, 12); anything else (`2026-13`, `26-1`) -> None."""
    year, dash, month = value.partition("-")
    if not (dash and len(year) == 4 and len(month) == 2 and year.isdigit() and month.isdigit()):
        return None
    if not 1 <= int(month) <= 12 or int(year) < 1970:
        return None
    return int(year), int(month)


# ---- routes ------------------------------------------------------------------------------------


def limited_response(request: Request) -> Response | None:
    """Generous, per client address, shared by every process, counted in memory and never waiting
    on Redis (dispatcher/public/status_limit.py): the page, the feeds and the JSON share it."""
    wait = over_status_limit(request)
    return too_many(request.app.state.settings, wait, wants_json=False) if wait is not None else None


async def snapshot_or_unavailable(settings: Settings) -> Snapshot | Response:
    try:
        return await snapshot_to_serve(settings)
    except SnapshotUnavailable:
        return _plain(
            settings, 503, "Status unavailable", "We cannot show the status right now. Try again soon."
        )


def _plain(settings: Settings, status: int, title: str, line: str) -> Response:
    """A page with no snapshot behind it (nothing to cache): an error, in the same layout."""
    now = datetime.now(UTC)
    html = (
        status_environment()
        .get_template("message.html.j2")
        .render(
            title=title,
            line=line,
            **site_context(settings),
            page_name=page_name(settings.service_name),
            stale=False,
            this_month=month_slug(now),
        )
    )
    return HTMLResponse(html, status_code=status, headers={**HEADERS, "Cache-Control": "no-store"})


def _html(request: Request, body: bytes, snapshot: Snapshot) -> Response:
    return cached_response(request, body, "text/html; charset=utf-8", snapshot, headers=HEADERS)


@read_route(router, "/status", summary="The status page: overall status, components, incidents, maintenance")
async def status_page(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if limited := limited_response(request):
        return limited
    snapshot = await snapshot_or_unavailable(settings)
    if isinstance(snapshot, Response):
        return snapshot
    body = _cached_render(
        settings,
        snapshot,
        ("status",),
        lambda: render(settings, snapshot, "status.html.j2", "Status", **status_context(snapshot.body)),
    )
    return _html(request, body, snapshot)


@read_route(
    router, "/status/incidents/{incident_id}", summary="One incident or maintenance, its whole timeline"
)
async def incident_page(incident_id: str, request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if limited := limited_response(request):
        return limited
    snapshot = await snapshot_or_unavailable(settings)
    if isinstance(snapshot, Response):
        return snapshot
    item = find_item(snapshot.body, incident_id)
    if item is None:
        return _plain(
            settings,
            404,
            "Incident not found",
            f"We show the last {HISTORY_DAYS} days of incidents; this one is older, or does not exist.",
        )
    started = started_at(item)

    def build() -> bytes:
        return render(
            settings,
            snapshot,
            "incident.html.j2",
            item["name"],
            item=item,
            month=month_slug(started),
            month_name=f"{MONTH_NAMES[started.month - 1]} {started.year}",
        )

    return _html(request, _cached_render(settings, snapshot, ("incident", incident_id), build), snapshot)


@read_route(
    router, "/status/history/{month}", summary="Incidents and maintenance of one month (YYYY-MM, UTC)"
)
async def month_page(month: str, request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if limited := limited_response(request):
        return limited
    parsed = parse_month(month)
    now = datetime.now(UTC)
    if parsed is None or parsed > (now.year, now.month):
        return _plain(settings, 404, "No such month", "month: give a past or the current month as YYYY-MM.")
    snapshot = await snapshot_or_unavailable(settings)
    if isinstance(snapshot, Response):
        return snapshot
    year, number = parsed
    first = now - timedelta(days=HISTORY_DAYS)
    earliest = (first.year, first.month)
    before = _shift(year, number, -1)
    after = _shift(year, number, 1)

    def build() -> bytes:
        return render(
            settings,
            snapshot,
            "month.html.j2",
            f"History: {MONTH_NAMES[number - 1]} {year}",
            items=month_items(snapshot.body, year, number),
            before_history=parsed < earliest,
            previous=_month_link(*before) if before >= earliest else None,
            next=_month_link(*after) if after <= (now.year, now.month) else None,
        )

    key = ("month", month, month_slug(first))
    return _html(request, _cached_render(settings, snapshot, key, build), snapshot)


@read_route(router, "/status/history", include_in_schema=False)
async def this_month(request: Request) -> Response:
    return await month_page(month_slug(datetime.now(UTC)), request)


@router.get("/status/status.css", include_in_schema=False)
def status_css() -> Response:
    return static_file(STATUS_DIR / "status.css", "text/css")


@router.get("/status/local-time.js", include_in_schema=False)
def local_time_js() -> Response:
    return static_file(STATUS_DIR / "local-time.js", "text/javascript")
