"""Reconciliation end to end: status callbacks lost (Twilio's go to the sandbox's sink, SendGrid's
events are switched off), and the receipts still converge from the providers' own answers: beat's
periodic task, a real worker, the real SDKs against the sandbox's status APIs, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from channels.base import ChannelName, Recipient, Sent
from channels.email.adapter import EmailChannel
from channels.sms.adapter import SmsChannel
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine.clock import utcnow
from dispatcher.engine.reconcile import claim
from dispatcher.store.models import Delivery
from tests.channels.helpers import email_variant, sms_variant
from tests.harness import Harness

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


def states(harness: Harness, broadcast_id: int) -> Counter[tuple[str, str]]:
    with harness.database.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.state).where(Delivery.broadcast_id == broadcast_id)
        ).all()
    return Counter((channel, state) for channel, state in rows)


def audience() -> list[SubscriberIn]:
    subs = [
        SubscriberIn(
            external_id=f"c{i}",
            lists=["customers"],
            email=f"c{i}@example.com",
            phone=f"+1415777{i:04d}",
            slack_channel="C0RECONCILE" if i == 0 else None,
        )
        for i in range(8)
    ]
    return subs


def test_lost_callbacks_converge_through_reconciliation(harness: Harness) -> None:
    assert harness.sandbox.event_webhook_url is None  # SendGrid events: nowhere
    assert harness.env["DISPATCHER_PUBLIC_URL"].endswith("/hooks/service")  # Twilio's: the sink
    harness.sandbox.set_faults("twilio", undelivered=["+14157770003"])
    harness.sandbox.set_faults("sendgrid", bounce=["c5@example.com"])
    harness.configure(DISPATCHER_RECONCILE_AFTER_S="1", DISPATCHER_RECONCILE_BATCH="3")
    harness.subscribers(audience())
    harness.worker()
    broadcast_id = harness.open(channels=[ChannelName.EMAIL, ChannelName.SMS, ChannelName.CHAT])
    harness.wait(broadcast_id)
    assert states(harness, broadcast_id) == {("email", "sent"): 8, ("sms", "sent"): 8, ("chat", "sent"): 1}

    harness.beat(DISPATCHER_SWEEP_INTERVAL_S="1")  # beat's reconcile pass, every second here
    expected = {
        ("email", "delivered"): 7,
        ("email", "bounced"): 1,
        ("sms", "delivered"): 7,
        ("sms", "undelivered"): 1,
        ("chat", "sent"): 1,  # Slack has no status API: never asked
    }
    deadline = time.monotonic() + 120
    while states(harness, broadcast_id) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert states(harness, broadcast_id) == expected
    with harness.database.session() as session:
        rows = session.execute(
            select(Delivery.address, Delivery.provider_message_id, Delivery.last_error_code).where(
                Delivery.broadcast_id == broadcast_id, Delivery.channel != "chat"
            )
        ).all()
    recorded = {m["recipient"].lower(): m["provider_message_id"] for m in harness.sandbox.messages()}
    assert all(pmid == recorded[address.lower()] for address, pmid, _ in rows)  # ids untouched
    codes = {address: code for address, _, code in rows if code}
    assert codes == {"+14157770003": "30003", "c5@example.com": "not_delivered"}


def test_only_rows_sent_long_enough_ago_are_claimed_oldest_first_a_page_at_a_time(harness: Harness) -> None:
    harness.configure(DISPATCHER_RECONCILE_AFTER_S="60", DISPATCHER_RECONCILE_BATCH="2")
    harness.subscribers(audience()[:4])
    harness.worker()
    broadcast_id = harness.open(channels=[ChannelName.EMAIL])
    harness.wait(broadcast_id)
    settings, db, email = harness.settings, harness.database, ChannelName.EMAIL
    with db.session() as session:
        ids = list(session.scalars(select(Delivery.id).where(Delivery.broadcast_id == broadcast_id)))
    now = utcnow()
    assert claim(db, settings, email, now) == []  # sent just now: not due
    later = now + timedelta(seconds=61)
    first, second = claim(db, settings, email, later), claim(db, settings, email, later)
    assert len(first) == 2 and len(second) == 2 and sorted(first + second) == sorted(ids)
    assert claim(db, settings, email, later) == []  # each row once per `reconcile_after_s`
    assert claim(db, settings, email, later + timedelta(seconds=61)) == first  # oldest asked first again


def test_the_sdks_read_the_sandboxs_status_apis(harness: Harness) -> None:
    """The adapters' status queries (Twilio's Message resource, SendGrid's Email Activity API)
    through the real SDKs; an unknown message or a wrong key gives no answer, not a wrong one."""
    settings = harness.settings
    sms, email = SmsChannel(settings), EmailChannel(settings)
    [sent_sms] = sms.send(sms_variant(), [Recipient(1, "+14155550100")])
    sent_mail = email.send(email_variant(), [Recipient(2, "a@example.com"), Recipient(3, "b@example.com")])
    assert sent_sms.provider_message_id and sent_mail[0].provider_message_id
    rows = [Sent(1, sent_sms.provider_message_id, "+14155550100"), Sent(9, "SM" + "0" * 32, "+1")]
    reports = sms.fetch_statuses(rows)
    assert [(r.delivery_id, r.provider_message_id, r.state) for r in reports] == [
        (1, sent_sms.provider_message_id, "delivered")
    ]
    mail_id = sent_mail[0].provider_message_id
    reports = email.fetch_statuses([Sent(2, mail_id, "a@example.com"), Sent(3, mail_id, "B@example.com")])
    assert sorted((r.delivery_id, r.state) for r in reports) == [(2, "delivered"), (3, "delivered")]
    assert all(EmailChannel.same_message(mail_id, r.provider_message_id or "") for r in reports)
    activity = httpx.get(
        f"{harness.sandbox.url}/v3/messages",
        params={"query": f'msg_id LIKE "{mail_id}.%"', "limit": 10},
        headers={"Authorization": "Bearer not-the-secret"},
    )
    assert activity.status_code == 401
