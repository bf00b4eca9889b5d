"""Picks up whatever a crash or a broker restart left behind, so nothing is ever lost.

- provider answers a worker kept in Redis but could not record (the database was down, the worker
  was killed) are recorded first, so a row whose answer is known is never sent again;
- rows in `sending` past their lease with no known answer (a worker died mid-batch) go back to
  `pending` and are sent again: the claim that sends them counts the send (`sends`);
- `pending` rows of a released tier that no queued task covers any more (Redis restarted and lost
  its queue, a killed worker took its reserved task with it) are enqueued again. A row counts as
  orphaned only when its channel's queue is empty and the row has been untouched for a lease, so
  a long but healthy backlog is never enqueued twice; a claim makes any doubled task harmless;
- tier gates past their timeout are opened, and broadcasts whose planning task was lost re-planned;
- rows that waited out their recipient's quiet hours are enqueued once those hours end.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update

from config import Settings
from dispatcher.domain.states import BroadcastState, DeliveryState, TierState
from dispatcher.engine import journal
from dispatcher.engine.broker import CONTROL_QUEUE, QUEUES, URGENT_QUEUE, queue_keys
from dispatcher.engine.clock import utcnow
from dispatcher.engine.deliveries import QUIET_HOURS_CODE
from dispatcher.engine.outbox import Outbox, batch_queue
from dispatcher.engine.sending import apply_kept_answers, services
from dispatcher.engine.tier_gates import check_gate, check_gates, pending_batches
from dispatcher.engine.transitions import transition
from dispatcher.store.db import Database
from dispatcher.store.models import Broadcast, BroadcastTier, Delivery
from dispatcher.store.redis_client import get_redis


def idle_queues(settings: Settings) -> set[str]:
    """Channel queues with nothing waiting in Redis (kombu keeps one list per priority step)."""
    client = get_redis(settings)
    idle = set()
    for queue in QUEUES:
        pipe = client.pipeline()
        for name in queue_keys(queue, settings):
            pipe.llen(name)
        if sum(pipe.execute()) == 0:
            idle.add(queue)
    return idle


QUIET_BATCH = 500


def release_quiet_rows(database: Database, now: datetime, outbox: Outbox) -> int:
    """Enqueues rows whose quiet hours have ended (only of tiers already released: a tier not yet
    started sends them with the rest). Clearing the marker in the same conditional UPDATE makes each
    row released once; from then on it is an ordinary pending row, covered by the orphan rule."""
    with database.session() as session:
        released = session.execute(
            update(Delivery)
            .where(
                Delivery.state == DeliveryState.PENDING.value,
                Delivery.last_error_code == QUIET_HOURS_CODE,
                Delivery.next_attempt_at <= now,
                exists().where(
                    BroadcastTier.broadcast_id == Delivery.broadcast_id,
                    BroadcastTier.tier == Delivery.tier,
                    BroadcastTier.state.in_([TierState.SENDING, TierState.DONE]),
                ),
            )
            .values(last_error_code=None, last_error=None, updated_at=now)
            .returning(Delivery.broadcast_id, Delivery.channel, Delivery.tier, Delivery.id)
        ).all()
    groups: dict[tuple[int, str, int], list[int]] = {}
    for broadcast_id, channel, tier, delivery_id in released:
        groups.setdefault((broadcast_id, channel, tier), []).append(delivery_id)
    for (broadcast_id, channel, tier), ids in groups.items():
        ids.sort()
        for start in range(0, len(ids), QUIET_BATCH):
            outbox.send_batch(broadcast_id, channel, ids[start : start + QUIET_BATCH], tier)
    return len(released)


def apply_kept(database: Database, settings: Settings) -> int:
    """Records the answers kept in Redis (dispatcher/engine/journal.py); 0 when there are none."""
    if not get_redis(settings).exists(journal.answers_key(settings)):
        return 0
    return apply_kept_answers(services(settings, database))


def _without_answers(settings: Settings, ids: list[int]) -> list[int]:
    """Leases whose answer arrived after `apply_kept` read the answers are left for the next sweep."""
    answered = journal.kept_for(get_redis(settings), settings, ids)
    return [i for i in ids if i not in answered]


HANDOFF_GRACE_S = 5.0  # longer than an API's hand-off takes, publish retries included
PEEK_LIMIT = 1000  # a control queue longer than this is not searched (the lease rule still covers)


def planning_queued(settings: Settings) -> set[int] | None:
    """The broadcasts whose planning task waits in the urgent queue, or None when it is too long
    to search. First tiers' batches and gate checks share that queue, so "the queue is empty" would
    rarely hold during a broadcast; looking for the broadcast's own task always answers."""
    client = get_redis(settings)
    found: set[int] = set()
    for key in queue_keys(URGENT_QUEUE, settings):
        raw = client.lrange(key, 0, PEEK_LIMIT)
        if len(raw) > PEEK_LIMIT:
            return None
        for item in raw:
            try:
                message = json.loads(item)
                if message["headers"]["task"] == "dispatcher.run_broadcast":
                    found.add(int(json.loads(base64.b64decode(message["body"]))[0][0]))
            except (ValueError, KeyError, IndexError, TypeError):
                continue  # not a task message of ours
    return found


def requeue_unqueued(database: Database, settings: Settings, now: datetime, outbox: Outbox) -> int:
    """Broadcasts still `queued` (no worker has claimed them) a few seconds after they were recorded,
    with no planning task waiting for them: it never reached the broker (Redis was down when the API
    committed, or the process died between commit and hand-off). The lost-broadcast rule waits a
    lease for those; this pass only HANDOFF_GRACE_S, so such a broadcast goes out at the first sweep
    after Redis returns. A doubled planning task is harmless (run_broadcast claims)."""
    with database.session() as session:
        ids = session.scalars(
            select(Broadcast.id).where(
                Broadcast.state == BroadcastState.QUEUED,
                Broadcast.created_at < now - timedelta(seconds=HANDOFF_GRACE_S),
                Broadcast.created_at >= now - timedelta(seconds=settings.lease_s),  # older: the rule below
            )
        ).all()
    if not ids:
        return 0
    waiting = planning_queued(settings)
    if waiting is None:
        return 0
    missing = [broadcast_id for broadcast_id in ids if broadcast_id not in waiting]
    for broadcast_id in missing:
        outbox.plan_broadcast(broadcast_id)
    return len(missing)


def sweep(database: Database, settings: Settings) -> dict[str, int]:
    report = {"expired_leases": 0, "requeued_batches": 0, "gates_timed_out": 0, "replanned": 0}
    report["answers_applied"] = apply_kept(database, settings)  # before any lease is expired
    now = utcnow()
    outbox = Outbox()
    with database.session() as session:
        stale = list(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.state == DeliveryState.SENDING.value, Delivery.lease_until < now
                )
            )
        )
        moved = transition(
            session,
            _without_answers(settings, stale),
            expect=DeliveryState.SENDING,
            to=DeliveryState.PENDING,
            now=now,
            kind="lease_expired",
        )
        report["expired_leases"] = len(moved)
        groups: dict[tuple[int, str, int], list[int]] = {}
        for row in moved:
            groups.setdefault((row.broadcast_id, row.channel, row.tier), []).append(row.id)
        for (broadcast_id, channel, tier), ids in groups.items():
            outbox.send_batch(broadcast_id, channel, ids, tier)
    report["quiet_released"] = release_quiet_rows(database, now, outbox)
    # Orphans: pending rows of released tiers that nothing has touched for a while.
    orphan_before = now - timedelta(seconds=settings.lease_s)
    idle = idle_queues(settings)
    report["requeued_unqueued"] = requeue_unqueued(database, settings, now, outbox)
    with database.session() as session:
        released = session.execute(
            select(BroadcastTier.broadcast_id, BroadcastTier.tier).where(
                BroadcastTier.state.in_([TierState.SENDING, TierState.DONE]), BroadcastTier.outstanding > 0
            )
        ).all()
        for broadcast_id, tier in released:
            for channel, ids in pending_batches(
                session, settings, broadcast_id, tier, stale_before=orphan_before, due_by=now
            ):
                if batch_queue(channel, tier) in idle:
                    outbox.send_batch(broadcast_id, channel, ids, tier)
                    report["requeued_batches"] += 1
        gate_deadline = now - timedelta(seconds=settings.tier_gate_timeout_s)
        for broadcast_id, tier in session.execute(
            select(BroadcastTier.broadcast_id, BroadcastTier.tier).where(
                BroadcastTier.state == TierState.SENDING, BroadcastTier.started_at < gate_deadline
            )
        ).all():
            check_gate(session, settings, broadcast_id, tier, outbox)
            report["gates_timed_out"] += 1
        lost = session.scalars(
            select(Broadcast.id).where(
                Broadcast.state.in_([BroadcastState.QUEUED, BroadcastState.PLANNING]),
                Broadcast.created_at < orphan_before,
            )
        ).all()
        # planning waits nowhere: neither a first tier's (urgent) nor a later tier's page (control)
        for broadcast_id in lost if {URGENT_QUEUE, CONTROL_QUEUE} <= idle else []:
            outbox.plan_broadcast(broadcast_id)
            report["replanned"] += 1
        for (broadcast_id,) in session.execute(
            select(Broadcast.id).where(Broadcast.state == BroadcastState.SENDING)
        ).all():
            check_gates(session, settings, broadcast_id, outbox)
    outbox.flush()
    return report
