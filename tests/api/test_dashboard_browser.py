"""The ops dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
against a real API process, a real worker and the provider sandbox: a viewer signs in, watches a
paced broadcast's counts change without a reload until it says completed, and opens the failed
receipts from the URL; no console error, no failed request, the key in no URL and no storage."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher.auth import Role, create_key
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.db import Database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import Delivery
from tests.conftest import free_port, fresh_database_url
from tests.harness import Harness
from tests.processes import start_api

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists() and os.environ.get("REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install -y chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"
    ),
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
PACED = {"DISPATCHER_RATE_TWILIO_PER_S": "3"}  # slow enough to watch: ~20 SMS take several seconds
PEOPLE = 20
INVALID = (3, 11)  # Twilio answers 21211 for these numbers


def phone(i: int) -> str:
    return f"+1415557{i:04d}"


@pytest.fixture
def database() -> Iterator[Database]:
    """A database of the test's own: each test's subscribers and broadcasts are all there is."""
    db = Database(fresh_database_url("sqlite", f"dashboard-{uuid.uuid4().hex[:8]}"))
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def harness(database: Database, sandbox: Any, start_worker: Any, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(database, sandbox, start_worker, tmp_path)
    h.configure(**PACED)
    yield h
    h.stop()


@pytest.fixture
def site(harness: Harness, database: Database, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **harness.env, "DATABASE_URL": database.url, "DISPATCHER_PUBLIC_URL": url}
    proc = start_api(env, tmp_path / "dashboard-api.log", port)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Watched:
    """A browser tab whose console errors, failed requests and every requested URL are kept."""

    def __init__(self, browser: Any, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.left_streams: list[str] = []  # live streams cut by leaving their page (browser's abort)
        self.urls: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("request", lambda r: self.urls.append(r.url))

    def _failed(self, request: Any) -> None:
        left = request.failure == "net::ERR_ABORTED" and request.url.endswith("/events")
        (self.left_streams if left else self.problems).append(f"failed: {request.url} {request.failure}")

    def sign_in(self, url: str, key: str) -> None:
        self.page.goto(f"{url}/dashboard")
        self.page.get_by_label("API key").fill(key)
        with self.page.expect_navigation():
            self.page.keyboard.press("Enter")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(site: str, browser: Any) -> Iterator[Any]:
    """Opens tabs; closes them before the API stops (an open live stream would hold it up)."""
    opened: list[Watched] = []

    def _open(viewport: dict[str, int]) -> Watched:
        opened.append(Watched(browser, viewport))
        return opened[-1]

    yield _open
    for tab in opened:
        tab.close()


def _key(database: Database, role: Role) -> str:
    with database.session() as session:
        return create_key(session, role, label=f"browser {role.value}")


def test_a_viewer_watches_a_broadcast_live_and_opens_its_failed_receipts(
    site: str, harness: Harness, database: Database, tabs: Any, tmp_path: Path
) -> None:
    key = _key(database, Role.VIEWER)
    harness.subscribers(
        [SubscriberIn(external_id=f"adm{i}", lists=["admins"], phone=phone(i)) for i in range(PEOPLE)]
    )
    harness.sandbox.set_faults("twilio", invalid_numbers=[phone(i) for i in INVALID])
    harness.worker()
    tab = tabs(DESKTOP)
    tab.sign_in(site, key)
    assert tab.page.url == f"{site}/dashboard/incidents"

    broadcast_id = harness.open(channels=["sms"])
    tab.page.goto(f"{site}/dashboard/broadcasts/{broadcast_id}")
    tab.page.evaluate("window.__notReloaded = true")
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        totals = tab.page.locator("#totals tbody").inner_text()
        if not seen or seen[-1] != totals:
            seen.append(totals)
        if tab.page.locator("#state").inner_text() == "completed":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the page never said completed; it showed {seen}")
    assert tab.page.evaluate("window.__notReloaded") is True  # the same document all along
    assert len(seen) >= 3, seen  # the counts moved on the page while it was sending
    assert "This broadcast is completed." in tab.page.locator("#live-note").inner_text()
    done = harness.progress(broadcast_id)
    sent = tab.page.locator('#totals td[data-state="sent"]').inner_text()
    assert int(sent) == done["totals"]["sent"] and done["totals"]["failed"] == len(INVALID)
    assert tab.page.locator("svg.chart polyline").count() >= 1
    tab.page.screenshot(path=str(tmp_path / "dashboard-completed.png"), full_page=True)

    tab.page.goto(f"{site}/dashboard/broadcasts/{broadcast_id}?state=failed")
    with database.session() as session:
        failed = set(
            session.scalars(
                select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.state == "failed")
            )
        )
    rows = tab.page.locator("#receipts tbody tr")
    assert rows.count() == len(failed) == len(INVALID)
    shown = set()
    for i in range(rows.count()):
        row = rows.nth(i)
        shown.add(int(row.locator("td").first.inner_text().lstrip("#")))
        assert "21211" in row.locator("td.provider").inner_text()
    assert shown == failed
    assert not any(phone(i) in tab.page.content() for i in range(PEOPLE))  # a viewer sees them masked
    assert tab.page.get_by_label("State").input_value() == "failed"

    rows.first.locator("a").first.click()  # the delivery's story
    tab.page.wait_for_selector("text=Timeline")
    assert "21211" in tab.page.locator("#attempts").inner_text()
    assert not any(phone(i) in tab.page.content() for i in INVALID)  # not even in Twilio's message

    assert tab.page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    assert not any(key in u for u in tab.urls), "the key went into a URL"
    cookies = tab.context.cookies()
    assert all(key not in c["value"] for c in cookies)
    assert [c["httpOnly"] for c in cookies if c["name"] == "od_dash"] == [True]
    tab.page.screenshot(path=str(tmp_path / "dashboard-story.png"), full_page=True)
    assert tab.problems == [] and tab.left_streams == []  # the stream ended itself, at completion


def test_a_wrong_key_shows_no_data_and_a_post_without_csrf_is_refused(
    site: str, database: Database, tabs: Any
) -> None:
    tab = tabs(DESKTOP)
    tab.sign_in(site, "od_" + "x" * 40)
    assert tab.page.get_by_role("alert").inner_text().startswith("That key is not valid")
    assert tab.page.locator("table").count() == 0 and tab.page.get_by_text("Sign out").count() == 0
    tab.page.goto(f"{site}/dashboard/incidents")
    assert tab.page.url == f"{site}/dashboard"  # back to the sign-in form: no data

    tab.sign_in(site, _key(database, Role.VIEWER))
    assert tab.page.get_by_role("button", name="Sign out").is_visible()
    status = tab.page.evaluate(
        "fetch('/dashboard/sign-out', {method: 'POST', headers: {'Content-Type': "
        "'application/x-www-form-urlencoded'}, body: 'csrf_token=forged'})"
        ".then(r => r.text().then(() => r.status))"
    )
    assert status == 403
    tab.page.goto(f"{site}/dashboard/incidents")
    assert tab.page.url == f"{site}/dashboard/incidents"  # still signed in
    tab.page.get_by_role("button", name="Sign out").click()
    tab.page.wait_for_url(f"{site}/dashboard")
    tab.page.goto(f"{site}/dashboard/incidents")
    assert tab.page.url == f"{site}/dashboard"
    # Chromium logs the two refusals this test asks for (the wrong key's 401, the forged POST's
    # 403) as console errors; nothing else may show up.
    assert tab.problems == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)",
        "Failed to load resource: the server responded with a status of 403 (Forbidden)",
    ]


def test_the_dashboard_is_usable_on_a_phone_from_the_keyboard(
    site: str, harness: Harness, database: Database, tabs: Any
) -> None:
    harness.subscribers([SubscriberIn(external_id="adm0", lists=["admins"], phone=phone(0))])
    broadcast_id = harness.open(channels=["sms"], send=False)
    tab = tabs(PHONE)
    tab.page.goto(f"{site}/dashboard")
    for _ in range(10):  # Tab to the key field, as a keyboard user would
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement.id") == "key":
            break
    else:
        raise AssertionError("the key field cannot be reached with Tab")
    tab.page.keyboard.type(_key(database, Role.VIEWER))
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_url(f"{site}/dashboard/incidents")
    for path in ("/dashboard/incidents", f"/dashboard/broadcasts/{broadcast_id}"):
        tab.page.goto(f"{site}{path}")
        assert tab.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
    tab.page.get_by_label("State").select_option("failed")
    tab.page.get_by_role("button", name="Filter").press("Enter")
    tab.page.wait_for_url(f"**/dashboard/broadcasts/{broadcast_id}?state=failed*")
    assert tab.page.locator("#no-receipts").is_visible()
    assert tab.problems == []
    assert len(tab.left_streams) == 1  # the queued broadcast's live stream, cut by filtering


def test_a_commanders_retry_clicked_twice_sends_each_failed_delivery_once_more(
    site: str, harness: Harness, database: Database, tabs: Any
) -> None:
    harness.subscribers(
        [SubscriberIn(external_id=f"adm{i}", lists=["admins"], phone=phone(i)) for i in range(4)]
    )
    harness.sandbox.set_faults("twilio", error_rate=1.0)  # Twilio down: every SMS fails, for now
    harness.worker(DISPATCHER_RETRY_MAX_ATTEMPTS="1")
    broadcast_id = harness.open(channels=["sms"])
    assert harness.wait(broadcast_id)["totals"]["failed"] == 4
    harness.sandbox.clear_faults()  # Twilio is back
    tab = tabs(DESKTOP)
    tab.sign_in(site, _key(database, Role.COMMANDER))
    tab.page.goto(f"{site}/dashboard/broadcasts/{broadcast_id}")
    button = tab.page.get_by_role("button", name="Retry the failed deliveries")
    with tab.page.expect_navigation():
        button.click()
    assert "4 failed deliveries queued to be sent again" in tab.page.content()
    with tab.page.expect_navigation():
        tab.page.get_by_role("button", name="Retry the failed deliveries").click()
    assert "0 failed deliveries queued to be sent again" in tab.page.content()
    tab.page.wait_for_selector("#state:text('completed')", timeout=60_000)  # live again, to the end
    harness.wait(broadcast_id)
    with database.session() as session:
        states = list(session.scalars(select(Delivery.state).where(Delivery.broadcast_id == broadcast_id)))
    assert states == ["sent"] * 4
    accepted = sorted(m["recipient"] for m in harness.sandbox.messages("sms"))
    assert accepted == sorted(phone(i) for i in range(4))  # each sent once, for two clicks
    assert tab.problems == []
