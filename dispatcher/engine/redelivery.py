"""A commander's second go: a broadcast's failed deliveries retried, or one delivery sent again.

Rows go back to `pending` through `transitions.transition` (a conditional UPDATE on the state they
were read in), so two clicks, or two concurrent calls, move each row once and the counters and the
tier's `outstanding` move with it; a completed broadcast is `sending` again until they settle. The
caller queues the returned rows with `queue_sends` after its commit, as every send is queued.

A retry is not marked: it sends what the provider did not take. A resend is deliberate, and counted
in `Delivery.resends`, so the copy it adds is not reported as a possible duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from channels.base import ChannelName
from channels.registry import CHANNEL_CLASSES
from config import Settings
from dispatcher.domain.errors import Conflict, NotFound
from dispatcher.domain.states import UNACCEPTED, BroadcastState, DeliveryState
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.ratelimit import batch_size
from dispatcher.engine.suppressions import is_suppressed
from dispatcher.engine.transitions import transition
from dispatcher.store.bulk import id_in
from dispatcher.store.models import Broadcast, Delivery, Suppression

# What a row sent again starts from: no claim, no lease, due now, not final.
_FRESH: dict[str, Any] = {"claim": None, "lease_until": None, "next_attempt_at": None, "final_at": None}


def _reopen(session: Session, broadcast_id: int) -> None:
    """A completed broadcast sends again: it completes once more when the rows settle (tier_gates)."""
    session.execute(
        update(Broadcast)
        .where(Broadcast.id == broadcast_id, Broadcast.state == BroadcastState.COMPLETED.value)
        .values(state=BroadcastState.SENDING.value, completed_at=None)
    )


def retry_failed(session: Session, broadcast_id: int, now: datetime) -> list[int]:
    """Moves the broadcast's `failed` deliveries back to pending, except those whose address is on
    the suppression list; returns the ids it moved (none on a second call: they are not failed now)."""
    if session.get(Broadcast, broadcast_id) is None:
        raise NotFound(f"broadcast {broadcast_id} not found", fields=["broadcast_id"])
    suppressed = exists().where(
        Suppression.channel == Delivery.channel, Suppression.address == Delivery.address
    )
    ids = list(
        session.scalars(
            select(Delivery.id)
            .where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.state == DeliveryState.FAILED.value,
                ~suppressed,  # an invalid number stays failed: remove its suppression to try it again
            )
            .order_by(Delivery.id)
        )
    )
    moved = transition(
        session,
        ids,
        expect=DeliveryState.FAILED,
        to=DeliveryState.PENDING,
        now=now,
        values=_FRESH,
        kind="retry",
    )
    if moved:
        _reopen(session, broadcast_id)
    return sorted(m.id for m in moved)


def resend(session: Session, delivery_id: int, now: datetime) -> bool:
    """Sends one delivery again whatever it reached (sent, delivered, failed, bounced, undelivered),
    counting the copy as a deliberate resend. 409 while it is pending or sending (it is on its way)
    and when its address is suppressed (it asked us to stop, or does not exist). False when a
    concurrent move got there first."""
    row = session.execute(
        select(Delivery.state, Delivery.broadcast_id, Delivery.channel, Delivery.address).where(
            Delivery.id == delivery_id
        )
    ).first()
    if row is None:
        raise NotFound(f"delivery {delivery_id} not found", fields=["delivery_id"])
    state = DeliveryState(row.state)
    if state in UNACCEPTED:
        raise Conflict(f"delivery {delivery_id} is {state.value}: it is being sent already")
    if state is DeliveryState.SUPPRESSED or is_suppressed(session, ChannelName(row.channel), row.address):
        raise Conflict(
            f"delivery {delivery_id}'s address is on the suppression list: remove it there to send again"
        )
    values = {**_FRESH, "resends": Delivery.resends + 1}
    moved = transition(
        session, [delivery_id], expect=state, to=DeliveryState.PENDING, now=now, values=values, kind="resend"
    )
    if moved:
        _reopen(session, row.broadcast_id)
    return bool(moved)


def queue_sends(session: Session, settings: Settings, ids: Sequence[int], outbox: Outbox) -> int:
    """Adds `send_batch` tasks for these pending rows to `outbox` (flushed after commit), a batch
    per broadcast, channel and tier, sized for the channel's provider; returns how many rows."""
    if not ids:
        return 0
    groups: dict[tuple[int, str, int], list[int]] = defaultdict(list)
    for start in range(0, len(ids), 2000):
        chunk = list(ids[start : start + 2000])
        for delivery_id, broadcast_id, channel, tier in session.execute(
            select(Delivery.id, Delivery.broadcast_id, Delivery.channel, Delivery.tier).where(
                id_in(session, Delivery.id, chunk), Delivery.state == DeliveryState.PENDING.value
            )
        ):
            groups[(broadcast_id, channel, tier)].append(delivery_id)
    queued = 0
    for (broadcast_id, channel, tier), group in sorted(groups.items()):
        name = ChannelName(channel)
        size = batch_size(name, CHANNEL_CLASSES[name].max_batch, settings)
        group.sort()
        for start in range(0, len(group), size):
            outbox.send_batch(broadcast_id, name, group[start : start + size], tier)
        queued += len(group)
    return queued
