"""The audit log's store and read-back, and the engine's retry/resend moves, on both backends:
rows move once however often they are asked to, and the counters and tier outstanding move along."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from dispatcher.domain.errors import Conflict, NotFound, ValidationFailed
from dispatcher.domain.states import BroadcastState, DeliveryState, TierState
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.progress import possible_duplicates, progress
from dispatcher.engine.redelivery import queue_sends, resend, retry_failed
from dispatcher.engine.transitions import count_moves
from dispatcher.reads.audit import list_audit
from dispatcher.store.audit import record_audit
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, BroadcastTier, Delivery, DeliveryEvent, Incident

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _settled_broadcast(session, states: list[DeliveryState]) -> tuple[int, list[int]]:
    """A completed one-tier email broadcast whose deliveries ended in `states`, counters to match."""
    incident = Incident(kind="incident", title="t", status="investigating", impact="minor", message={})
    session.add(incident)
    session.flush()
    broadcast = Broadcast(incident_id=incident.id, event="incident_opened", state=BroadcastState.COMPLETED)
    broadcast.completed_at = NOW
    session.add(broadcast)
    session.flush()
    session.add(BroadcastTier(broadcast_id=broadcast.id, tier=0, state=TierState.DONE, planned=len(states)))
    ids = []
    for n, state in enumerate(states):
        row = Delivery(
            broadcast_id=broadcast.id,
            tier=0,
            channel="email",
            address=f"p{n}@example.com",
            state=state.value,
            attempts=1,
            sends=1 if state is not DeliveryState.FAILED else 0,
            last_error_code="550" if state is DeliveryState.FAILED else None,
            final_at=NOW,
        )
        session.add(row)
        session.flush()
        ids.append(row.id)
        count_moves(session, [(broadcast.id, 0, "email")], None, state)
    return broadcast.id, ids


def test_retry_failed_moves_each_failed_row_once(db: Database) -> None:
    states = [DeliveryState.FAILED, DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.BOUNCED]
    with db.session() as session:
        broadcast_id, ids = _settled_broadcast(session, states)
    with db.session() as session:
        moved = retry_failed(session, broadcast_id, NOW)
        outbox = Outbox()
        assert queue_sends(session, db_settings(db), moved, outbox) == 2
    assert moved == [ids[0], ids[2]]
    assert [item[1] for item in outbox.items] == [[broadcast_id, "email", [ids[0], ids[2]]]]
    with db.session() as session:
        assert retry_failed(session, broadcast_id, NOW) == []  # a second click: nothing failed any more
        view = progress(session, broadcast_id)
        assert view["state"] == BroadcastState.SENDING  # completed again once the rows settle
        assert view["completed_at"] is None
        assert view["tiers"][0]["channels"]["email"] == {"pending": 2, "delivered": 1, "bounced": 1}
        assert view["tiers"][0]["outstanding"] == 2
        row = session.get(Delivery, ids[0])
        assert row.final_at is None and row.resends == 0 and row.last_error_code == "550"
        history = session.execute(
            select(DeliveryEvent.kind, DeliveryEvent.from_state, DeliveryEvent.to_state).where(
                DeliveryEvent.delivery_id == ids[0]
            )
        ).all()
        assert [tuple(h) for h in history] == [("retry", "failed", "pending")]  # in the delivery's story


def test_resend_is_deliberate_and_refused_while_on_its_way(db: Database) -> None:
    states = [DeliveryState.DELIVERED, DeliveryState.PENDING, DeliveryState.SUPPRESSED]
    with db.session() as session:
        broadcast_id, ids = _settled_broadcast(session, states)
    with db.session() as session:
        assert resend(session, ids[0], NOW) is True
    with db.session() as session:
        row = session.get(Delivery, ids[0])
        assert (row.state, row.resends, row.sends) == ("pending", 1, 1)
        row.sends = 2  # as the claim that sends the copy raises it
        session.flush()
        assert possible_duplicates(session, broadcast_id) == 0  # the copy was ordered, not an accident
        assert progress(session, broadcast_id)["tiers"][0]["channels"]["email"] == {
            "pending": 2,
            "suppressed": 1,
        }
    for delivery_id in (ids[0], ids[1]):  # now pending, and pending from the start
        with pytest.raises(Conflict), db.session() as session:
            resend(session, delivery_id, NOW)
    with pytest.raises(Conflict), db.session() as session:
        resend(session, ids[2], NOW)
    with pytest.raises(NotFound), db.session() as session:
        resend(session, ids[-1] + 1000, NOW)
    with pytest.raises(NotFound), db.session() as session:
        retry_failed(session, broadcast_id + 1000, NOW)


def test_audit_entries_read_back_newest_first_paged_and_filtered(db: Database) -> None:
    with db.session() as session:
        for n in range(5):
            record_audit(
                session,
                actor="od_AbCdE" if n % 2 else "cli",
                role="commander" if n % 2 else None,
                action="incident.open" if n < 3 else "keys.create",
                target=f"incident {n}",
                status=201,
                client="127.0.0.1",
                request_id=f"r{n}" + "x" * 100,  # clipped to the column, not refused
                key_id=7 if n % 2 else None,
            )
    with db.session() as session:
        first = list_audit(session, limit=2)
        assert [e["target"] for e in first["entries"]] == ["incident 4", "incident 3"]
        second = list_audit(session, limit=2, cursor=first["next_cursor"])
        assert [e["target"] for e in second["entries"]] == ["incident 2", "incident 1"]
        last = list_audit(session, limit=2, cursor=second["next_cursor"])
        assert [e["target"] for e in last["entries"]] == ["incident 0"] and last["next_cursor"] is None
        mine = list_audit(session, actor="od_AbCdE")["entries"]
        assert [(e["target"], e["role"], e["key_id"]) for e in mine] == [
            ("incident 3", "commander", 7),
            ("incident 1", "commander", 7),
        ]
        assert [e["target"] for e in list_audit(session, action="keys.create")["entries"]] == [
            "incident 4",
            "incident 3",
        ]
        assert len(mine[0]["request_id"]) == 64
        with pytest.raises(ValidationFailed) as bad:
            list_audit(session, cursor="nonsense")
        assert bad.value.fields == ["cursor"]
    with db.session() as session:
        assert session.scalar(select(Delivery.id)) is None  # nothing else written


def db_settings(db: Database):  # type: ignore[no-untyped-def]
    from config import Settings

    return Settings(database_url=db.url)
