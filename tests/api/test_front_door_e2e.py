"""The subscribers' front door on the whole real path: a uvicorn API process, a Celery worker, the
provider sandbox (whose signed SendGrid events and inbound SMS come back to the API), SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dispatcher.auth import Role, create_key
from dispatcher.cli import app as cli
from dispatcher.domain.message import OutageMessage
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery, Subscriber, Suppression
from tests.api.conftest import purge_queues
from tests.conftest import free_port
from tests.harness import FAST, Harness
from tests.processes import start_api

pytestmark = pytest.mark.slow


class Stack:
    def __init__(self, url: str, harness: Harness, admin_key: str) -> None:
        self.url, self.harness, self.admin_key = url, harness, admin_key


@pytest.fixture
def stack(db: Database, sandbox: Any, start_worker: Any, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    harness = Harness(db, sandbox, start_worker, tmp_path)
    harness.configure(
        DISPATCHER_PUBLIC_URL=url,
        DISPATCHER_UNSUBSCRIBE_URL=f"{url}/unsubscribe",
        DISPATCHER_PUBLIC_POSTS_PER_HOUR="10000",
        DISPATCHER_PUBLIC_VIEWS_PER_HOUR="10000",
        DISPATCHER_CONFIRMATIONS_PER_ADDRESS_PER_DAY="10000",  # the run's Redis is shared by both backends
        DISPATCHER_SERVICE_NAME="Acme Status",
    )
    sandbox.event_webhook_url = f"{url}/v1/webhooks/sendgrid"
    env = {
        **os.environ,
        **FAST,
        **harness.env,
        "DATABASE_URL": db.url,
        "DISPATCHER_SENDGRID_WEBHOOK_PUBLIC_KEY": sandbox.public_key,
    }
    proc = start_api(env, tmp_path / "api.log", port)
    purge_queues(harness.settings)
    with db.session() as session:
        admin = create_key(session, Role.ADMIN)
    harness.worker()
    yield Stack(url, harness, admin)
    proc.terminate()
    proc.wait(timeout=20)
    harness.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _until(check: Callable[[], Any], timeout_s: float, why: Callable[[], Any] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"condition not met in {timeout_s}s: {why()}")


def _emails_to(sandbox: Any, address: str) -> list[dict[str, Any]]:
    return [m for m in sandbox.messages("email") if m["recipient"].lower() == address]


def _broadcast(stack: Stack, **message: Any) -> int:
    msg = OutageMessage(
        title="Checkout is failing",
        impact="major",
        status_page_url="https://status.example.com",
        **message,
    )
    broadcast_id = stack.harness.open(msg, channels=["email", "sms"])
    stack.harness.wait(broadcast_id)
    return broadcast_id


def _receipts(db: Database, broadcast_id: int) -> dict[tuple[str, str], tuple[str, str | None]]:
    with db.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.address, Delivery.state, Delivery.last_error).where(
                Delivery.broadcast_id == broadcast_id
            )
        )
        return {(c, a): (s, e) for c, a, s, e in rows}


def test_one_click_unsubscribe_and_hard_bounces_protect_the_next_broadcast(
    stack: Stack, db: Database
) -> None:
    sandbox, harness = stack.harness.sandbox, stack.harness
    harness.subscribers(
        [
            SubscriberIn(external_id="ann", email="ann@example.com", channels=["email"]),
            SubscriberIn(external_id="bob", email="bob@example.com", channels=["email"]),
            SubscriberIn(external_id="gone", email="gone@example.com", channels=["email"]),
            SubscriberIn(
                external_id="adm",
                lists=["admins"],
                email="adm@example.com",
                phone="+14155550100",
                channels=["email"],
            ),
        ]
    )
    sandbox.set_faults("sendgrid", bounce=["gone@example.com", "adm@example.com"])
    _broadcast(stack)
    sandbox.drain_callbacks(timeout_s=30)
    with db.session() as session:
        _until(lambda: len(list(session.scalars(select(Suppression.address)))) == 2, 30)
    # the one-click POST a mailbox provider makes, to the URL the email itself advertised
    header = _emails_to(sandbox, "ann@example.com")[0]["headers"]
    assert header["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = re.fullmatch(r"<(.+)>", header["List-Unsubscribe"])
    assert link and link.group(1).startswith(f"{stack.url}/unsubscribe?token=")
    body = _emails_to(sandbox, "ann@example.com")[0]["text"]
    assert f"Unsubscribe: {link.group(1)}\n" in body  # the footer leads to the same page
    token = link.group(1).split("token=")[1]
    assert f"{stack.url}/manage?token={token}" in body
    assert httpx.get(link.group(1)).status_code == 200  # a prefetch changes nothing...
    forged = httpx.post(link.group(1)[:-3] + "abc", data={"List-Unsubscribe": "One-Click"})
    assert forged.status_code == 404
    with db.session() as session:
        assert all(not s.opt_outs for s in session.scalars(select(Subscriber)))
    clicked = httpx.post(link.group(1), data={"List-Unsubscribe": "One-Click"})
    assert clicked.status_code == 200

    sandbox.clear_messages()
    second = _broadcast(stack)
    receipts = _receipts(db, second)
    emailed = {m["recipient"] for m in sandbox.messages("email")}
    assert emailed == {"bob@example.com"}  # ann left; gone bounced; the admin's address bounced
    assert ("email", "ann@example.com") not in receipts
    assert receipts[("email", "gone@example.com")] == ("suppressed", "suppressed: bounce")
    assert receipts[("email", "adm@example.com")][0] == "suppressed"
    # failover still reaches the admin, on their next channel
    assert receipts[("sms", "+14155550100")][0] in ("sent", "delivered")
    assert [m["recipient"] for m in sandbox.messages("sms")] == ["+14155550100"]

    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    listed = httpx.get(
        f"{stack.url}/v1/suppressions", params={"address": "gone@example.com"}, headers=admin
    ).json()["suppressions"]
    assert [(s["reason"], s["channel"]) for s in listed] == [("bounce", "email")]
    env = {"DISPATCHER_URL": stack.url, "DISPATCHER_API_KEY": stack.admin_key}
    shown = CliRunner().invoke(cli, ["suppressions", "list", "--reason", "bounce"], env=env)
    assert shown.exit_code == 0 and "gone@example.com" in shown.output and "adm@example.com" in shown.output
    row = next(line for line in shown.stdout.splitlines() if "gone@example.com" in line)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.search(rf"\b{listed[0]['id']}\b.*\bemail\b.*gone@example\.com.*\bbounce\b.*{stamp}", row), row
    as_json = CliRunner().invoke(cli, ["--json", "suppressions", "list", "--reason", "bounce"], env=env)
    params = {"reason": "bounce", "limit": 1000}
    assert (
        json.loads(as_json.stdout)
        == httpx.get(f"{stack.url}/v1/suppressions", params=params, headers=admin).json()
    )
    removed = CliRunner().invoke(cli, ["suppressions", "remove", str(listed[0]["id"])], env=env)
    assert removed.exit_code == 0, removed.output
    sandbox.clear_faults()
    sandbox.clear_messages()
    third = _broadcast(stack)
    assert _receipts(db, third)[("email", "gone@example.com")][0] in ("sent", "delivered")
    assert {m["recipient"] for m in sandbox.messages("email")} == {"bob@example.com", "gone@example.com"}


def test_double_opt_in_by_email_and_sms_keywords_end_to_end(stack: Stack, db: Database) -> None:
    sandbox, url = stack.harness.sandbox, stack.url
    answer = httpx.post(f"{url}/subscribe", json={"email": "new@example.com", "components": ["Checkout"]})
    assert answer.status_code == 202
    assert httpx.post(f"{url}/subscribe", json={"email": "lurker@example.com"}).status_code == 202
    mail = _until(lambda: _emails_to(sandbox, "new@example.com"), 60)[0]
    assert "Acme Status" in mail["subject"]
    link = re.search(r"(http://\S+/subscribe/confirm\?token=[\w-]+)", mail["text"])
    assert link
    token = link.group(1).split("token=")[1]
    with db.session() as session:
        assert session.scalar(select(Subscriber.id)) is None  # nobody is a subscriber before confirming
    page = httpx.get(link.group(1))
    assert page.status_code == 200 and "Confirm subscription" in page.text
    confirmed = httpx.post(f"{url}/subscribe/confirm", data={"token": token})
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    again = httpx.post(f"{url}/subscribe", json={"email": "new@example.com", "components": ["Checkout"]})
    assert again.status_code == 202 and again.json() == answer.json()

    sandbox.clear_messages()
    scoped = _broadcast(stack, components=["Checkout"])
    assert {m["recipient"] for m in sandbox.messages("email")} == {"new@example.com"}
    assert ("email", "lurker@example.com") not in _receipts(db, scoped)
    sandbox.clear_messages()
    _broadcast(stack, components=["Billing"])
    assert sandbox.messages("email") == []  # the chosen scope holds
    with db.session() as session:
        assert list(session.scalars(select(Subscriber.email))) == ["new@example.com"]

    # SMS: the sign-up asks for YES; the sandbox sends signed inbound messages to the real route
    phone = "+14155550142"
    assert httpx.post(f"{url}/subscribe", json={"phone": phone}).status_code == 202
    text = _until(lambda: [m for m in sandbox.messages("sms") if m["recipient"] == phone], 60)[0]
    assert "YES" in text["text"]
    inbound = f"{url}/v1/webhooks/twilio/inbound"
    assert httpx.post(inbound, data={"From": phone, "Body": "STOP"}).status_code == 403
    yes = sandbox.inbound_sms(inbound, phone, "yes")
    assert yes["status"] == 200 and "subscribed" in yes["body"]
    helped = sandbox.inbound_sms(inbound, phone, "HELP")
    assert "Acme Status" in helped["body"] and "STOP" in helped["body"]
    sandbox.inbound_sms(inbound, phone, "Stop")
    with db.session() as session:
        assert session.scalar(select(Subscriber.opt_outs).where(Subscriber.phone == phone)) == ["sms"]
    sandbox.clear_messages()
    _broadcast(stack)
    assert sandbox.messages("sms") == []
    sandbox.inbound_sms(inbound, phone, "START")
    sandbox.clear_messages()
    _broadcast(stack)
    assert [m["recipient"] for m in sandbox.messages("sms")] == [phone]
