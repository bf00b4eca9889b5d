"""The status history as feeds: `GET /history.atom` (Atom 1.0) and `GET /history.rss` (RSS 2.0),
written by feedgen from the status snapshot, so they answer whenever the page does.

One entry per incident or maintenance of the last 90 days, newest first. Its id is the incident's
own URL on the page (`<public url>/status/incidents/{id}`, Statuspage's `shortlink`): stable for
as long as the page's address is. Its `updated` is the incident's `updated_at`, which moves on each
of its updates and on nothing else; the feed's own `updated` is the latest of those, never the
time of the request, so the same snapshot always gives the same bytes (and the same ETag). RSS has
no per-item updated time: each item carries `dc:date` for it, `pubDate` being when it began.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from feedgen.feed import FeedGenerator

from config import Settings
from dispatcher.domain.status import page_name
from dispatcher.public.caching import cached_response, read_route
from dispatcher.reads.status import Snapshot
from dispatcher.statuspage.pages import (
    finished_at,
    iso_utc,
    limited_response,
    parse_time,
    snapshot_or_unavailable,
    started_at,
    status_environment,
)

router = APIRouter(tags=["status page (public)"])
ATOM = "application/atom+xml; charset=utf-8"
RSS = "application/rss+xml; charset=utf-8"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _updated(item: dict[str, Any]) -> datetime:
    return parse_time(item.get("updated_at")) or finished_at(item)


def entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every incident and maintenance in the snapshot, newest (by start) first."""
    items = [*body.get("incidents", []), *body.get("scheduled_maintenances", [])]
    return sorted(items, key=lambda i: (started_at(i), str(i.get("id"))), reverse=True)


def generator(body: dict[str, Any], public_url: str, self_path: str) -> FeedGenerator:
    """The feed, the same for Atom and RSS (feedgen writes either); `self_path` its own address."""
    page = body.get("page", {})
    name = page_name(page.get("name") or "")
    page_url = page.get("url") or public_url.rstrip("/") + "/status"
    items = entries(body)
    feed = FeedGenerator()
    feed.load_extension("dc", atom=False, rss=True)
    feed.id(page_url)
    feed.title(f"{name}: history")
    feed.subtitle(f"Incidents and maintenance on the {name} page")
    feed.description(f"Incidents and maintenance on the {name} page")
    feed.author({"name": name})
    feed.link(href=public_url.rstrip("/") + self_path, rel="self")
    feed.link(href=page_url, rel="alternate")  # the last link is RSS's <link>
    feed.language("en")
    latest = max((_updated(i) for i in items), default=None)
    feed.updated(latest or parse_time(page.get("updated_at")) or EPOCH)
    template = status_environment().get_template("feed_entry.html.j2")
    for item in reversed(items):  # feedgen prepends: the newest ends up first
        url = item.get("shortlink") or f"{page_url}/incidents/{item.get('id')}"
        entry = feed.add_entry()
        entry.guid(url, permalink=True)  # the Atom id too
        entry.title(str(item.get("name") or ""))
        entry.link(href=url, rel="alternate")
        entry.published(started_at(item) if item.get("scheduled_for") else parse_time(item.get("created_at")))
        entry.updated(_updated(item))
        entry.dc.dc_date(item.get("updated_at") or iso_utc(item.get("created_at")))
        html = template.render(item=item)
        entry.description(html)  # RSS's description (feedgen: and Atom's content, untyped) ...
        entry.content(html, type="html")  # ... so Atom's content, typed, comes after
    return feed


def atom(body: dict[str, Any], public_url: str) -> bytes:
    return generator(body, public_url, "/history.atom").atom_str(pretty=True)


def rss(body: dict[str, Any], public_url: str) -> bytes:
    return generator(body, public_url, "/history.rss").rss_str(pretty=True)


class _Written:
    """The last feed written per (format, database, snapshot version): pollers cost one lookup."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], bytes] = {}

    def get(self, kind: str, settings: Settings, snapshot: Snapshot) -> bytes:
        key = (kind, settings.effective_database_url, snapshot.etag)
        body = self.items.get(key)
        if body is None:
            write = atom if kind == "atom" else rss
            body = write(snapshot.body, settings.public_url)
            if len(self.items) >= 64:
                self.items.clear()
            self.items[key] = body
        return body


WRITTEN = _Written()


async def _feed(kind: str, media_type: str, request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if limited := limited_response(request):
        return limited
    snapshot = await snapshot_or_unavailable(settings)
    if isinstance(snapshot, Response):
        return snapshot
    return cached_response(request, WRITTEN.get(kind, settings, snapshot), media_type, snapshot)


@read_route(router, "/history.atom", summary="Incidents and maintenance of the last 90 days (Atom 1.0)")
async def history_atom(request: Request) -> Response:
    return await _feed("atom", ATOM, request)


@read_route(router, "/history.rss", summary="Incidents and maintenance of the last 90 days (RSS 2.0)")
async def history_rss(request: Request) -> Response:
    return await _feed("rss", RSS, request)
