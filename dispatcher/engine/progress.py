"""A broadcast's progress as dashboards read it: counters and tier timings, never a scan of rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import NotFound
from dispatcher.domain.states import DeliveryState
from dispatcher.store.models import (
    Broadcast,
    BroadcastCount,
    BroadcastGate,
    BroadcastSends,
    BroadcastTier,
    Delivery,
)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def progress(session: Session, broadcast_id: int) -> dict[str, Any]:
    """Read as plain rows, not ORM objects: dashboards poll this, and loading objects into the
    session (and refreshing any it held) was half of each read's CPU in the API."""
    broadcast = session.execute(
        select(
            Broadcast.id,
            Broadcast.incident_id,
            Broadcast.event,
            Broadcast.state,
            Broadcast.policy,
            Broadcast.created_at,
            Broadcast.planned_at,
            Broadcast.completed_at,
        ).where(Broadcast.id == broadcast_id)
    ).first()
    if broadcast is None:
        raise NotFound(f"broadcast {broadcast_id} not found", fields=["id"])
    tiers = session.execute(
        select(
            BroadcastTier.tier,
            BroadcastTier.state,
            BroadcastTier.planned,
            BroadcastTier.outstanding,
            BroadcastTier.gate,
            BroadcastTier.started_at,
            BroadcastTier.first_accepted_at,
            BroadcastTier.all_accepted_at,
        )
        .where(BroadcastTier.broadcast_id == broadcast_id)
        .order_by(BroadcastTier.tier)
    ).all()
    counts = session.execute(
        select(BroadcastCount.tier, BroadcastCount.channel, BroadcastCount.state, BroadcastCount.n).where(
            BroadcastCount.broadcast_id == broadcast_id
        )
    ).all()
    sends = session.execute(
        select(BroadcastSends.tier, BroadcastSends.sends, BroadcastSends.extra_sends).where(
            BroadcastSends.broadcast_id == broadcast_id
        )
    ).all()
    gates = session.execute(
        select(
            BroadcastGate.tier,
            BroadcastGate.channel,
            BroadcastGate.started_at,
            BroadcastGate.opened_by,
            BroadcastGate.opened_at,
        )
        .where(BroadcastGate.broadcast_id == broadcast_id)
        .order_by(BroadcastGate.tier, BroadcastGate.channel)
    ).all()
    return progress_json(broadcast, tiers, counts, sends, gates)


def opening_progress(broadcast: Broadcast) -> dict[str, Any]:
    """The progress of a broadcast recorded in this transaction, from the tiers and gates it was
    given (incidents/broadcasts.py create_broadcast): nothing is counted or sent yet. The same answer
    `progress` reads back, without its five round trips in the commander's request."""
    gates = sorted(broadcast.gates, key=lambda g: (g.tier, g.channel))  # as `progress` reads them
    return progress_json(broadcast, broadcast.tiers, (), (), gates)


def progress_json(
    broadcast: Any,
    tier_rows: Iterable[Any],
    counts: Iterable[tuple[int, str, str, int]],
    sends: Iterable[tuple[int, int, int]],
    gate_rows: Iterable[Any],
) -> dict[str, Any]:
    """The progress document from a broadcast's rows (ORM objects or rows of the columns `progress`
    reads, by the same names): its tiers in order, its counters
    (tier, channel, state, n), its sends (tier, sends, extra) and its gates in (tier, channel) order."""
    tiers: dict[int, dict[str, Any]] = {}
    for tier in tier_rows:
        tiers[tier.tier] = {
            "tier": tier.tier,
            "state": tier.state,
            "planned": tier.planned,
            "outstanding": tier.outstanding,
            "sends": 0,  # sends that may have reached someone (see Delivery.sends)
            "extra_sends": 0,  # of those, beyond each delivery's first and its deliberate resends
            "gate": tier.gate,
            "started_at": _iso(tier.started_at),
            "first_accepted_at": _iso(tier.first_accepted_at),
            "all_accepted_at": _iso(tier.all_accepted_at),
            "channels": {},
            "gates": {},
        }
    totals: dict[str, int] = {s.value: 0 for s in DeliveryState}
    for tier, channel, state, n in counts:
        if n and tier in tiers:
            tiers[tier]["channels"].setdefault(channel, {})[state] = n
            totals[state] += n
    for tier, sent, extra in sends:
        if tier in tiers:
            tiers[tier]["sends"] += sent
            tiers[tier]["extra_sends"] += extra
    # Each channel's gate of each tier (dispatcher/domain/gates.py): shown for the channels the broadcast
    # sends on and any a failover reached.
    sending_on = set(broadcast.policy.get("channels", []))
    for gate in gate_rows:
        if gate.tier in tiers and (
            gate.channel in sending_on or gate.channel in tiers[gate.tier]["channels"]
        ):
            tiers[gate.tier]["gates"][gate.channel] = {
                "started_at": _iso(gate.started_at),
                "opened_by": gate.opened_by,
                "opened_at": _iso(gate.opened_at),
            }
    return {
        "id": broadcast.id,
        "incident_id": broadcast.incident_id,
        "event": broadcast.event,
        "state": broadcast.state,
        "channels": broadcast.policy.get("channels", []),
        "created_at": _iso(broadcast.created_at),
        "planned_at": _iso(broadcast.planned_at),
        "first_accepted_at": min(
            (t["first_accepted_at"] for t in tiers.values() if t["first_accepted_at"]), default=None
        ),
        "completed_at": _iso(broadcast.completed_at),
        "totals": totals,
        "sends": sum(t["sends"] for t in tiers.values()),
        "extra_sends": sum(t["extra_sends"] for t in tiers.values()),
        "tiers": list(tiers.values()),
    }


def possible_duplicates(session: Session, broadcast_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.broadcast_id == broadcast_id, Delivery.sends > 1 + Delivery.resends)
        )
        or 0
    )
