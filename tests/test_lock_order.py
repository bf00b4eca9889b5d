"""Two transactions on one broadcast's rows never deadlock (PostgreSQL; SQLite has one writer).

Each test makes an interleaving that deadlocked deterministic. First, the one the PostgreSQL flood
hit: the planner's dispatch of tier 1 holds its lock and is paused just before it locks tier 1's
gates, while the recording of tier 0's last admin opens tier 0's gate, starts tier 1 on SMS, and
then needs tier 1's row. Second, two recordings whose batches mix outcomes, each moving its
counters in several steps. Before `lock_tiers` (taken first, in tier order, by every transaction
that moves a broadcast's counters, tiers or gates), each waited for the other until PostgreSQL's
one-second deadlock timeout rolled one back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, select, text

from channels.base import ChannelName
from config import Settings
from dispatcher.domain.states import DeliveryState, TierState
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.tier_gates import add_gates, check_gates, try_dispatch
from dispatcher.engine.transitions import transition
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastCount, BroadcastGate, BroadcastTier, Delivery
from tests.conftest import PG_UNAVAILABLE, migrated_database
from tests.harness import broadcast_row

pytestmark = [pytest.mark.skipif(PG_UNAVAILABLE is not None, reason=str(PG_UNAVAILABLE))]

PAUSED = "dispatch-tier-1"


@pytest.fixture
def pg() -> Iterator[Database]:
    with migrated_database("postgresql", "lock_order") as database:
        yield database


def _broadcast(db: Database) -> tuple[int, int]:
    """Tier 0: one admin's SMS being sent. Tier 1: one customer's SMS waiting for tier 0's SMS gate.
    Every other channel's gates already open, so SMS is the only gate either transaction moves."""
    now = datetime.now(UTC)
    with db.session() as session:
        broadcast = broadcast_row(session)
        add_gates(session, broadcast.id, [0, 1])
        session.add_all(
            [
                BroadcastTier(
                    broadcast_id=broadcast.id,
                    tier=0,
                    state=TierState.SENDING,
                    planned=1,
                    outstanding=1,
                    started_at=now,
                ),
                BroadcastTier(
                    broadcast_id=broadcast.id, tier=1, state=TierState.PLANNED, planned=1, outstanding=1
                ),
                BroadcastCount(broadcast_id=broadcast.id, tier=0, channel="sms", state="sending", n=1),
                BroadcastCount(broadcast_id=broadcast.id, tier=1, channel="sms", state="pending", n=1),
            ]
        )
        admin = Delivery(
            broadcast_id=broadcast.id, tier=0, channel="sms", address="+14155550100", state="sending"
        )
        customer = Delivery(broadcast_id=broadcast.id, tier=1, channel="sms", address="+14155550101")
        session.add_all([admin, customer])
        session.flush()
        for gate in session.scalars(select(BroadcastGate).where(BroadcastGate.broadcast_id == broadcast.id)):
            if gate.channel != ChannelName.SMS.value:
                gate.started_at, gate.opened_by, gate.opened_at = now, "accepted", now
            elif gate.tier == 0:
                gate.started_at = now
        return broadcast.id, admin.id


def _pause_before_gate_locks(
    db: Database, paused: threading.Event, release: threading.Event
) -> Callable[..., None]:
    """Holds the paused thread's `SELECT ... FROM broadcast_gates ... FOR UPDATE` until `release`."""

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        ours = threading.current_thread().name == PAUSED and not release.is_set()
        if ours and "FROM broadcast_gates" in statement and "FOR UPDATE" in statement:
            paused.set()
            release.wait(10)

    event.listen(db.engine, "before_cursor_execute", before)
    return before


def _waits_on_a_lock(db: Database, pid: int) -> bool:
    with db.engine.connect() as conn:
        kind = conn.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    return kind == "Lock"


def test_a_recording_and_the_next_tiers_dispatch_wait_for_each_other_without_deadlock(pg: Database) -> None:
    settings = Settings()
    broadcast_id, admin = _broadcast(pg)
    paused, release = threading.Event(), threading.Event()
    listener = _pause_before_gate_locks(pg, paused, release)
    errors: list[BaseException] = []
    recorder_pid: list[int] = []

    def dispatch() -> None:  # the planner, after tier 1's last page
        try:
            with pg.session() as session:
                try_dispatch(session, settings, broadcast_id, 1, Outbox())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def record() -> None:  # a worker recording the admin's SMS as accepted
        try:
            with pg.session() as session:
                recorder_pid.append(session.connection().connection.dbapi_connection.info.backend_pid)
                now = datetime.now(UTC)
                transition(session, [admin], expect=DeliveryState.SENDING, to=DeliveryState.SENT, now=now)
                check_gates(session, settings, broadcast_id, Outbox())
        except BaseException as exc:
            errors.append(exc)

    try:
        planner = threading.Thread(target=dispatch, name=PAUSED)
        planner.start()
        assert paused.wait(5), "the dispatch never reached its gate locks"
        recorder = threading.Thread(target=record, name="record-tier-0")
        recorder.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (recorder_pid and _waits_on_a_lock(pg, recorder_pid[0])):
            time.sleep(0.02)
        assert _waits_on_a_lock(pg, recorder_pid[0]), "the recording never waited for the paused dispatch"
        release.set()
        planner.join(15)
        recorder.join(15)
    finally:
        release.set()
        event.remove(pg.engine, "before_cursor_execute", listener)
    assert not errors, errors
    with pg.session() as session:
        sms = session.scalars(
            select(BroadcastGate).where(
                BroadcastGate.broadcast_id == broadcast_id, BroadcastGate.channel == "sms"
            )
        ).all()
        gates = {g.tier: g for g in sms}
        tiers = {
            t.tier: t
            for t in session.scalars(select(BroadcastTier).where(BroadcastTier.broadcast_id == broadcast_id))
        }
    assert gates[0].opened_by == "accepted" and gates[1].started_at is not None
    assert tiers[0].state == TierState.DONE and tiers[0].outstanding == 0
    assert tiers[1].state == TierState.SENDING and gates[1].dispatched_through is not None


def _three_sending(db: Database) -> list[int]:
    """Three admins' SMS of one broadcast, all `sending`, as two workers' batches hold them."""
    with db.session() as session:
        broadcast = broadcast_row(session)
        add_gates(session, broadcast.id, [0])
        session.add(
            BroadcastTier(
                broadcast_id=broadcast.id, tier=0, state=TierState.SENDING, planned=3, outstanding=3
            )
        )
        session.add(BroadcastCount(broadcast_id=broadcast.id, tier=0, channel="sms", state="sending", n=3))
        rows = [
            Delivery(
                broadcast_id=broadcast.id, tier=0, channel="sms", address=f"+1415555020{i}", state="sending"
            )
            for i in range(3)
        ]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def test_two_recordings_of_mixed_outcomes_wait_for_each_other_without_deadlock(pg: Database) -> None:
    """A records one row accepted (counters `sending`, then `sent`) and, after B has begun, one to be
    retried (`pending`); B records one to be retried (`pending`, then `sending`). Locked counter by
    counter, A held `sending` and wanted `pending` while B held `pending` and wanted `sending`."""
    a_accepted, a_retried, b_retried = _three_sending(pg)
    a_paused, a_go = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    b_pid: list[int] = []

    def move(session: Any, row: int, to: DeliveryState) -> None:
        transition(session, [row], expect=DeliveryState.SENDING, to=to, now=datetime.now(UTC))

    def worker_a() -> None:
        try:
            with pg.session() as session:
                move(session, a_accepted, DeliveryState.SENT)
                a_paused.set()
                a_go.wait(10)
                move(session, a_retried, DeliveryState.PENDING)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def worker_b() -> None:
        try:
            with pg.session() as session:
                b_pid.append(session.connection().connection.dbapi_connection.info.backend_pid)
                move(session, b_retried, DeliveryState.PENDING)
        except BaseException as exc:
            errors.append(exc)

    a, b = threading.Thread(target=worker_a), threading.Thread(target=worker_b)
    try:
        a.start()
        assert a_paused.wait(5), "A never recorded its first outcome"
        b.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (b_pid and _waits_on_a_lock(pg, b_pid[0])):
            time.sleep(0.02)
        assert _waits_on_a_lock(pg, b_pid[0]), "B never waited for A"
    finally:
        a_go.set()
        a.join(15)
        b.join(15)
    assert not errors, errors
    with pg.session() as session:
        counts = {c.state: c.n for c in session.scalars(select(BroadcastCount)) if c.n}
        states = sorted(d.state for d in session.scalars(select(Delivery)))
    assert counts == {"sent": 1, "pending": 2} and states == ["pending", "pending", "sent"]
