"""Starting a tier and enqueueing its rows (dispatcher/engine/tier_gates.py), on both databases: one
gate UPDATE and one read of deliveries per tier, whatever its channels, and each channel's own
watermark where its rows end, so a later page enqueues only what is new on each."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from channels.base import ChannelName
from config import Settings
from dispatcher.domain.message import OutageMessage
from dispatcher.domain.states import DeliveryState
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine import planner
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.tier_gates import dispatch_started, tiers_of
from dispatcher.engine.transitions import transition
from dispatcher.incidents.broadcasts import open_incident
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastGate, Delivery, utcnow
from dispatcher.store.subscribers import import_many
from tests.harness import purge_queues

CHANNELS = [ChannelName.EMAIL, ChannelName.SMS, ChannelName.CHAT]


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """Every statement the database is sent while the test runs, whitespace folded."""
    seen: list[str] = []

    def record(_conn: Connection, _cursor: object, statement: str, *_: object) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.engine, "before_cursor_execute", record)
    purge_queues()


def person(i: int, lists: list[str]) -> SubscriberIn:
    return SubscriberIn(
        external_id=f"p{i}",
        lists=lists,
        email=f"p{i}@example.com",
        phone=f"+1415555{i:04d}",
        slack_channel=f"C{i:06d}",
    )


def matching(statements: list[str], pattern: str) -> int:
    return sum(1 for s in statements if re.search(pattern, s))


def marks(db: Database, broadcast_id: int, tier: int) -> dict[str, int | None]:
    with db.session() as session:
        return dict(
            session.execute(
                select(BroadcastGate.channel, BroadcastGate.dispatched_through).where(
                    BroadcastGate.broadcast_id == broadcast_id, BroadcastGate.tier == tier
                )
            ).all()
        )


def last_ids(db: Database, broadcast_id: int, tier: int) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(Delivery.channel, Delivery.id).where(
                Delivery.broadcast_id == broadcast_id, Delivery.tier == tier
            )
        ).all()
    found: dict[str, int] = {}
    for channel, delivery_id in rows:
        found[channel] = max(found.get(channel, 0), delivery_id)
    return found


def test_a_tier_starts_on_all_its_channels_in_one_statement_set(db: Database, statements: list[str]) -> None:
    settings = Settings(database_url=db.url, public_url="https://status.example.test")
    with db.session() as session:
        import_many(session, settings, [person(i, ["admins"]) for i in range(3)])
        import_many(session, settings, [person(i, ["customers"]) for i in range(3, 8)])
        _, broadcast = open_incident(
            session, settings, OutageMessage(title="Checkout fails", impact="major"), channels=CHANNELS
        )
        broadcast_id = broadcast.id
    statements.clear()

    planner.run_broadcast(db, settings, broadcast_id)  # the admins: planned, started, enqueued
    admins = last_ids(db, broadcast_id, 0)
    assert sorted(admins) == sorted(c.value for c in CHANNELS)
    assert {c: m for c, m in marks(db, broadcast_id, 0).items() if m} == admins
    assert matching(statements, r"^UPDATE broadcast_gates SET started_at") == 1
    assert matching(statements, r"^SELECT deliveries\.channel, deliveries\.locale, deliveries\.id ") == 1

    # the admins' messages accepted and their tier through its gate: the empty stakeholders' tier and
    # the customers' start, each in one UPDATE of its gates however many channels it has
    with db.session() as session:
        ids = list(admins_rows(session, broadcast_id))
        for expect, to in (
            (DeliveryState.PENDING, DeliveryState.SENDING),
            (DeliveryState.SENDING, DeliveryState.SENT),
        ):
            transition(session, ids, expect=expect, to=to, now=utcnow())
    statements.clear()
    planner.finish_tier(db, settings, broadcast_id, 0)
    tiers = tier_numbers(db, broadcast_id)
    for tier in tiers[1:3]:
        planner.plan_tier(db, settings, broadcast_id, tier)
    customers = last_ids(db, broadcast_id, 2)
    assert sorted(customers) == sorted(c.value for c in CHANNELS)
    assert {c: m for c, m in marks(db, broadcast_id, 2).items() if m} == customers
    with db.session() as session:
        opened = session.scalars(
            select(BroadcastGate.tier).where(
                BroadcastGate.broadcast_id == broadcast_id,
                BroadcastGate.tier.in_(tiers[1:3]),
                BroadcastGate.started_at.is_not(None),
            )
        ).all()
    assert len(opened) == 2 * len(ChannelName)  # both tiers on every channel: 10 gates
    assert matching(statements, r"^UPDATE broadcast_gates SET started_at") == 2  # one UPDATE a tier

    # a second look enqueues nothing twice: every watermark is already at its channel's last row
    statements.clear()
    outbox = Outbox()
    with db.session() as session:
        assert dispatch_started(session, settings, broadcast_id, 2, outbox) == len(ChannelName)
    assert outbox.items == []
    assert matching(statements, r"^UPDATE broadcast_gates SET dispatched_through") == 0


def admins_rows(session: Session, broadcast_id: int) -> list[int]:
    return list(
        session.scalars(select(Delivery.id).where(Delivery.broadcast_id == broadcast_id, Delivery.tier == 0))
    )


def tier_numbers(db: Database, broadcast_id: int) -> list[int]:
    with db.session() as session:
        return [t.tier for t in tiers_of(session, broadcast_id)]
