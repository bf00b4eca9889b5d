"""A delivery's story from the history `transition` writes, on SQLite and PostgreSQL: every move in
order with its cause and code, attempts with the provider's answer, the failover chain both ways,
masked addresses; and the history goes with its delivery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from channels.base import StatusReport
from config import Settings
from dispatcher.domain.errors import NotFound
from dispatcher.domain.states import DeliveryState as S
from dispatcher.engine.status_reports import apply_batch
from dispatcher.engine.transitions import Note, transition
from dispatcher.reads.story import delivery_story
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastVariant, Delivery, DeliveryEvent
from tests.reads.helpers import T0, broadcast, incident, subscriber


def test_story_tells_every_move_attempt_and_the_failover_chain(db: Database) -> None:
    settings = Settings(database_url=db.url)
    with db.session() as session:
        broadcast_id = broadcast(session, incident(session).id).id
        jane = subscriber(session, "cust-7", email="jane@example.com", phone="+14155550123").id
        sms = Delivery(
            broadcast_id=broadcast_id, tier=0, channel="sms", address="+14155550123", subscriber_id=jane
        )
        session.add(sms)
        session.flush()
        email = Delivery(
            broadcast_id=broadcast_id,
            tier=0,
            channel="email",
            address="jane@example.com",
            subscriber_id=jane,
            failover_of=sms.id,
        )
        session.add(email)
        session.add(
            BroadcastVariant(broadcast_id=broadcast_id, channel="sms", locale="en", variant={"body": "Down"})
        )
        session.flush()
        sms_id, email_id = sms.id, email.id
        t = T0
        transition(
            session, [sms_id], expect=S.PENDING, to=S.SENDING, now=t, kind="claim", values={"attempts": 1}
        )
        refused = Note("21211", "Invalid 'To' number", attempt=1, accepted=False)
        transition(
            session,
            [sms_id],
            expect=S.SENDING,
            to=S.FAILED,
            now=t + timedelta(seconds=1),
            kind="attempt",
            notes={sms_id: refused},
        )
        transition(
            session, [email_id], expect=S.PENDING, to=S.SENDING, now=t + timedelta(seconds=2), kind="claim"
        )
        took = Note(attempt=1, accepted=True, provider_message_id="sg-1")
        transition(
            session,
            [email_id],
            expect=S.SENDING,
            to=S.SENT,
            now=t + timedelta(seconds=3),
            kind="attempt",
            values={"provider_message_id": "sg-1"},
            notes={email_id: took},
        )
        (verdict,) = apply_batch(
            session, [StatusReport("sendgrid", email_id, "sg-1", "delivered")], t + timedelta(seconds=4)
        )
        assert verdict.verdict == "applied"
        bounce = StatusReport("sendgrid", email_id, "sg-1", "bounced", "bounce", "550 5.1.1 mailbox unknown")
        (late_bounce,) = apply_batch(session, [bounce], t + timedelta(seconds=5))  # bounced after delivered
        assert late_bounce.verdict == "applied"
    with db.session() as session:
        failed = delivery_story(session, settings, sms_id)
        delivered = delivery_story(session, settings, email_id)
        revealed = delivery_story(session, settings, email_id, mask=False)
    assert [(e["kind"], e["from"], e["to"], e["code"]) for e in failed["events"]] == [
        ("planned", None, "pending", None),
        ("claim", "pending", "sending", None),
        ("attempt", "sending", "failed", "21211"),
    ]
    assert failed["attempts"] == [
        {
            "n": 1,
            "at": (T0 + timedelta(seconds=1)).isoformat(),
            "accepted": False,
            "code": "21211",
            "message": "Invalid 'To' number",
            "provider_message_id": None,
        }
    ]
    assert failed["failover"]["of"] is None and failed["failover"]["by"] == [email_id]
    assert delivered["failover"]["of"] == sms_id and delivered["failover"]["by"] == []
    assert [c["delivery_id"] for c in delivered["failover"]["chain"]] == [sms_id, email_id]
    assert [(e["kind"], e["to"], e["code"]) for e in delivered["events"]] == [
        ("failover", "pending", None),
        ("claim", "sending", None),
        ("attempt", "sent", None),
        ("provider_report", "delivered", None),
        ("provider_report", "bounced", "bounce"),
    ]
    assert delivered["events"][-1]["message"] == "550 5.1.1 mailbox unknown"
    assert (
        delivered["attempts"][0]["accepted"] is True
        and delivered["attempts"][0]["provider_message_id"] == "sg-1"
    )
    assert (
        delivered["delivery"]["address"] == "j•••@e•••.com"
        and delivered["delivery"]["subscriber"] == "cust-7"
    )
    assert revealed["delivery"]["address"] == "jane@example.com"
    assert failed["variant"] == {
        "channel": "sms",
        "locale": "en",
        "timezone": "UTC",
        "to": "+14•••••••23",
        "content": {"body": "Down"},
    }
    assert (
        delivered["variant"] is None and delivered["sends"] == 0 and delivered["possible_duplicate"] is False
    )
    with db.session() as session, pytest.raises(NotFound):
        delivery_story(session, settings, email_id + 1000)
    with db.session() as session:  # the history goes with its delivery
        session.delete(session.get(Delivery, email_id))
    with db.session() as session:
        left = session.scalars(
            select(func.count()).select_from(DeliveryEvent).where(DeliveryEvent.delivery_id == email_id)
        )
        assert left.one() == 0
        assert session.scalar(select(func.count()).select_from(DeliveryEvent)) == 2
