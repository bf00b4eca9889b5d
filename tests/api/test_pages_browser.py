"""The public pages in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
the unsubscribe button works, the sign-up form submits from the keyboard alone and shows the
neutral answer, on a phone-sized screen, with no Content-Security-Policy violation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.db import Database
from dispatcher.store.migrate import upgrade
from dispatcher.store.models import Signup, Subscriber
from dispatcher.store.subscribers import upsert
from tests.conftest import free_port, fresh_database_url
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
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def site(tmp_root: Path) -> Iterator[tuple[str, Database]]:
    database = Database(fresh_database_url("sqlite", "browser"))
    upgrade(database)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "DISPATCHER_PUBLIC_URL": url,
        "DISPATCHER_UNSUBSCRIBE_URL": f"{url}/unsubscribe",
        "DISPATCHER_SERVICE_NAME": "Acme Status",
        "DISPATCHER_PUBLIC_POSTS_PER_HOUR": "10000",
        "DISPATCHER_PUBLIC_VIEWS_PER_HOUR": "10000",
    }
    proc = start_api(env, tmp_root / "browser-api.log", port)
    yield url, database
    proc.terminate()
    proc.wait(timeout=20)
    database.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _page(browser: object, problems: list[str]) -> object:
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
    return page


def test_the_unsubscribe_button_works(site: tuple[str, Database], browser: object) -> None:
    url, database = site
    with database.session() as session:
        row, _ = upsert(
            session, _settings(database), SubscriberIn(external_id="ann", email="ann@example.com")
        )
        token = row.unsubscribe_token
    problems: list[str] = []
    page = _page(browser, problems)
    page.goto(f"{url}/unsubscribe?token={token}")  # type: ignore[attr-defined]
    assert page.locator("h1").inner_text() == "Unsubscribe"  # type: ignore[attr-defined]
    page.get_by_role("button", name="Unsubscribe").click()  # type: ignore[attr-defined]
    page.wait_for_selector("text=You are unsubscribed")  # type: ignore[attr-defined]
    with database.session() as session:
        assert session.scalar(select(Subscriber.opt_outs).where(Subscriber.external_id == "ann")) == ["email"]
    assert problems == []


def test_the_sign_up_form_submits_from_the_keyboard_and_answers_neutrally(
    site: tuple[str, Database], browser: object, tmp_root: Path
) -> None:
    url, database = site
    problems: list[str] = []
    page = _page(browser, problems)
    page.goto(f"{url}/subscribe")  # type: ignore[attr-defined]
    width = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    assert width <= PHONE["width"]  # nothing wider than a phone's screen
    for _ in range(10):  # Tab to the email field, as a keyboard user would
        page.keyboard.press("Tab")  # type: ignore[attr-defined]
        if page.evaluate("document.activeElement.id") == "email":  # type: ignore[attr-defined]
            break
    else:
        raise AssertionError("the email field cannot be reached with Tab")
    page.keyboard.type("Keys@Example.com")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_selector("text=Check your inbox")  # type: ignore[attr-defined]
    assert "confirmation is on its way" in page.content()  # type: ignore[attr-defined]
    page.screenshot(path=str(tmp_root / "subscribe-answer.png"))  # type: ignore[attr-defined]
    with database.session() as session:
        assert list(session.scalars(select(Signup.email))) == ["keys@example.com"]
    assert problems == []


def _settings(database: Database) -> object:
    from config import Settings

    return Settings(database_url=database.url)
