"""The status history feeds, read back by feedparser as a feed reader would: valid Atom 1.0 and
RSS 2.0 (no `bozo`), one entry per incident or maintenance with a stable id, and an `updated` that
moves when that incident is updated and not otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import feedparser
import pytest
from fastapi.testclient import TestClient

from config import Settings
from dispatcher.app import create_app
from dispatcher.domain.message import OutageMessage
from dispatcher.engine import snapshot as snapshots
from dispatcher.incidents.broadcasts import open_incident, post_update
from dispatcher.incidents.maintenance import schedule
from dispatcher.statuspage.feeds import WRITTEN
from dispatcher.store.db import Database
from dispatcher.store.models import SubscriberList

PUBLIC_URL = "https://status.example.test"
FEEDS = {"/history.atom": "atom10", "/history.rss": "rss20"}


@pytest.fixture
def settings(db: Database) -> Iterator[Settings]:
    snapshots.COPIES.items.clear()
    WRITTEN.items.clear()
    with db.session() as session:
        session.add(SubscriberList(name="customers", tier=1))
    yield Settings(
        database_url=db.url, service_name="Acme", public_url=PUBLIC_URL, status_requests_per_hour=10_000
    )
    snapshots.COPIES.items.clear()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _open(db: Database, settings: Settings, title: str, **fields: object) -> int:
    with db.session() as session:
        incident, _ = open_incident(
            session,
            settings,
            OutageMessage(title=title, summary=f"{title}: looking", **fields),  # type: ignore[arg-type]
        )
        return incident.id


def _update(db: Database, settings: Settings, incident_id: int, **fields: object) -> None:
    with db.session() as session:
        post_update(session, settings, incident_id, fields)


def _read(client: TestClient, path: str) -> feedparser.FeedParserDict:
    response = client.get(path)
    assert response.status_code == 200
    parsed = feedparser.parse(response.content, response_headers=dict(response.headers))
    assert not parsed.bozo, f"{path}: {parsed.get('bozo_exception')}"
    assert parsed.version == FEEDS[path]
    return parsed


def _updated(feed: feedparser.FeedParserDict) -> dict[str, str]:
    return {e.id: e.updated for e in feed.entries}


@pytest.mark.parametrize("path", sorted(FEEDS))
def test_feeds_are_valid_and_hold_one_entry_per_incident_or_maintenance(
    path: str, db: Database, settings: Settings, client: TestClient
) -> None:
    first = _open(db, settings, "Checkout <b>failing</b>", impact="major")
    _update(db, settings, first, status="resolved", summary="Fixed & verified")
    second = _open(db, settings, "Slow search", impact="minor")
    start = datetime.now(UTC) + timedelta(days=1)
    with db.session() as session:
        maintenance, _, _ = schedule(
            session,
            settings,
            OutageMessage(
                title="Upgrade", kind="maintenance", starts_at=start, ends_at=start + timedelta(hours=1)
            ),
        )
    feed = _read(client, path)
    ids = [e.id for e in feed.entries]
    assert sorted(ids) == sorted(
        f"{PUBLIC_URL}/status/incidents/{i}" for i in (first, second, maintenance.id)
    )
    assert ids[0] == f"{PUBLIC_URL}/status/incidents/{maintenance.id}"  # newest (by start) first
    titles = {e.id: e.title for e in feed.entries}
    assert titles[f"{PUBLIC_URL}/status/incidents/{first}"] == "Checkout <b>failing</b>"  # text, not markup
    resolved = next(e for e in feed.entries if e.id.endswith(f"/{first}"))
    body = resolved.get("content", [{}])[0].get("value") or resolved.summary
    assert "Fixed &amp; verified" in body and "Resolved" in body  # every update, escaped in the HTML
    assert resolved.link == f"{PUBLIC_URL}/status/incidents/{first}"
    assert feed.feed.link == f"{PUBLIC_URL}/status"


@pytest.mark.parametrize("path", sorted(FEEDS))
def test_an_entry_is_updated_by_its_own_incident_only(
    path: str, db: Database, settings: Settings, client: TestClient
) -> None:
    first = _open(db, settings, "Login errors", impact="major")
    second = _open(db, settings, "Email delays", impact="minor")
    before = _read(client, path)
    again = client.get(path, headers={"If-None-Match": client.get(path).headers["etag"]})
    assert again.status_code == 304  # nothing changed: same bytes, same ETag
    assert _updated(_read(client, path)) == _updated(before)

    _update(db, settings, first, status="identified", summary="A bad deploy")
    after = _read(client, path)
    one, two = (f"{PUBLIC_URL}/status/incidents/{i}" for i in (first, second))
    assert _updated(after)[one] != _updated(before)[one]
    assert _updated(after)[two] == _updated(before)[two]  # the other incident did not change
    if path.endswith(".atom"):  # (RSS's lastBuildDate counts whole seconds)
        assert after.feed.updated == _updated(after)[one]  # the feed's time is its newest entry's
    entry = next(e for e in after.entries if e.id == one)
    body = entry.get("content", [{}])[0].get("value") or entry.summary
    assert body.index("A bad deploy") < body.index("Login errors: looking")  # newest update first

    _update(db, settings, second, status="resolved")
    last = _read(client, path)
    assert _updated(last)[one] == _updated(after)[one]
    assert _updated(last)[two] != _updated(after)[two]


def test_the_feeds_are_cacheable(db: Database, settings: Settings, client: TestClient) -> None:
    _open(db, settings, "Outage", impact="critical")
    for path, media in (("/history.atom", "application/atom+xml"), ("/history.rss", "application/rss+xml")):
        response = client.get(path)
        assert response.headers["content-type"].startswith(media)
        assert response.headers["cache-control"].startswith("public, max-age=")
        assert "etag" in response.headers and "last-modified" in response.headers
