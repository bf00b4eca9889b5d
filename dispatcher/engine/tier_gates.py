"""Releasing a broadcast tier by tier, admins first: the gate rule applied to the database.

The rule itself lives in dispatcher/domain/gates.py (pure). Here a gate per tier and channel opens
when that channel's outstanding count (the progress counters) reaches zero, or its gate timeout
passes, and records which. No chords: plain conditional updates decide, so exactly one caller wins
each step whichever worker gets there first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

from channels.base import ChannelName
from channels.registry import CHANNEL_CLASSES
from config import Settings
from dispatcher.domain import gates
from dispatcher.domain.states import BroadcastState, DeliveryState, TierState
from dispatcher.engine.clock import utcnow
from dispatcher.engine.deliveries import QUIET_HOURS_CODE
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.ratelimit import batch_size
from dispatcher.engine.transitions import lock_tiers
from dispatcher.store.models import Broadcast, BroadcastCount, BroadcastGate, BroadcastTier, Delivery


def start_due_channels(
    session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox
) -> None:
    """While a tier is planned page by page: starts it on each channel whose turn has come and
    enqueues the page's rows there. Touches only this tier's gates (never an earlier tier's rows,
    which a recording transaction may hold)."""
    lock_tiers(session, broadcast_id)
    now = utcnow()
    snapshot = gate_snapshot(session, broadcast_id, now)
    tiers = sorted({g.tier for g in snapshot})
    public = public_tier_of(session, broadcast_id, tiers)
    due = [
        gate.channel
        for gate in snapshot
        if gate.tier == tier
        and gate.started_at is None
        and gates.turn_has_come(snapshot, tier, gate.channel, public)
    ]
    _start(session, broadcast_id, tier, due, now)
    dispatch_started(session, settings, broadcast_id, tier, outbox)


def tiers_of(session: Session, broadcast_id: int) -> list[BroadcastTier]:
    return list(
        session.scalars(
            select(BroadcastTier)
            .where(BroadcastTier.broadcast_id == broadcast_id)
            .order_by(BroadcastTier.tier)
            .execution_options(populate_existing=True)  # gates are moved by UPDATEs: re-read them
        )
    )


def gate_rows(tiers: Sequence[int], broadcast_id: int | None = None) -> list[BroadcastGate]:
    """A gate row per tier and channel (every channel: failover can reach one the policy left out);
    without `broadcast_id`, for a broadcast's `gates` before it is flushed."""
    return [
        BroadcastGate(broadcast_id=broadcast_id, tier=tier, channel=channel.value)
        for tier in tiers
        for channel in ChannelName
    ]


def add_gates(session: Session, broadcast_id: int, tiers: Sequence[int]) -> None:
    """Adds `gate_rows` to the session."""
    session.add_all(gate_rows(tiers, broadcast_id))


def public_tier_of(session: Session, broadcast_id: int, tiers: Sequence[int]) -> int | None:
    """The last tier is the public post's, except in a broadcast to named contacts (a reminder) and
    in an internal one (a `public: false` update), which have none."""
    policy = session.scalar(select(Broadcast.policy).where(Broadcast.id == broadcast_id)) or {}
    private = policy.get("contacts") is not None or bool(policy.get("internal"))
    return None if private or not tiers else max(tiers)


def try_dispatch(session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox) -> bool:
    """Applies the gates, then enqueues the tier's rows not yet enqueued on every channel where its
    turn has come (rows a page wrote while a gate opened elsewhere included). Whether any channel
    of the tier is sending.

    `check_gates` locks the tier rows first (`lock_tiers`): every transaction that settles one of
    the tier's deliveries holds them (its `outstanding`), so the gates are read after those commit.
    Without it, a recording that still saw the tier as being planned and this check that did not
    yet see the recording would both leave the gate shut, until its timeout."""
    check_gates(session, settings, broadcast_id, outbox)
    return dispatch_started(session, settings, broadcast_id, tier, outbox) > 0


def dispatch_started(
    session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox
) -> int:
    """Enqueues new due rows of `tier` on each channel already started; returns how many channels.

    Every gate row of the tier is locked, started or not, and `started_at` is read under the lock:
    a gate being started by another transaction (an earlier tier's recording that opened its gate
    while this tier's planning committed) is waited for and then seen started. Filtering on
    `started_at` in SQL would skip that row without waiting: the other side dispatched before the
    planned rows were visible to it, this side saw the gate shut, and the tier's rows were never
    queued (seen in CI: 40 customers pending until the gate's timeout, and after it)."""
    rows = session.execute(
        select(BroadcastGate.channel, BroadcastGate.started_at, BroadcastGate.dispatched_through)
        .where(BroadcastGate.broadcast_id == broadcast_id, BroadcastGate.tier == tier)
        .order_by(BroadcastGate.channel)
        .with_for_update()
    ).all()
    started = {channel: (started_at, through) for channel, started_at, through in rows if started_at}
    _dispatch(session, settings, broadcast_id, tier, started, outbox)
    return len(started)


def _dispatch(
    session: Session,
    settings: Settings,
    broadcast_id: int,
    tier: int,
    started: Mapping[str, tuple[datetime, int | None]],
    outbox: Outbox,
) -> None:
    """Enqueues the due pending rows of one tier on its started channels (channel -> its gate's
    `started_at` and watermark, read under the gate's lock) that no earlier call enqueued: those
    above the channel's watermark. One query for every channel, and a watermark written only where
    it moved: a gate UPDATE and three statements per channel once made a broadcast's start slow
    (an empty admin tier's passing 61 statements on PostgreSQL, now 22; the admins' tier with 65
    admins 43, now 30). Rows waiting out quiet hours are not enqueued now: the sweeper releases
    them when they fall due."""
    if not started:
        return
    now = utcnow()
    marks = {channel: through or 0 for channel, (_, through) in started.items()}
    highest = dict(marks)
    for name, ids in pending_batches(session, settings, broadcast_id, tier, due_by=now, watermarks=marks):
        started_at = started[name.value][0]
        delay = max(0.0, settings.tier_delay_s.get(tier, 0.0) - (now - started_at).total_seconds())
        outbox.send_batch(broadcast_id, name, ids, tier, delay)
        highest[name.value] = max(highest[name.value], ids[-1])
    for channel, through in sorted(highest.items()):
        if through != marks[channel]:
            moved = update(BroadcastGate).where(*_gates(broadcast_id, tier, [channel]))
            session.execute(moved.values(dispatched_through=through))


def _start(
    session: Session, broadcast_id: int, tier: int, channels: Sequence[str], now: datetime
) -> dict[str, tuple[datetime, int | None]]:
    """Starts the tier on these channels in one UPDATE; returns those this call started (a gate
    another transaction started first is not this call's to dispatch), each with its start and
    watermark, locked by the UPDATE."""
    if not channels:
        return {}
    won = session.execute(
        update(BroadcastGate)
        .where(*_gates(broadcast_id, tier, channels), BroadcastGate.started_at.is_(None))
        .values(started_at=now)
        .returning(BroadcastGate.channel, BroadcastGate.started_at, BroadcastGate.dispatched_through)
    )
    return {channel: (started_at, through) for channel, started_at, through in won}


def _gates(broadcast_id: int, tier: int, channels: Sequence[str]) -> tuple[ColumnElement[bool], ...]:
    """Which gate rows: these channels of one tier."""
    return (
        BroadcastGate.broadcast_id == broadcast_id,
        BroadcastGate.tier == tier,
        BroadcastGate.channel.in_(sorted(channels)),
    )


def pending_batches(
    session: Session,
    settings: Settings,
    broadcast_id: int,
    tier: int,
    *,
    stale_before: datetime | None = None,
    due_by: datetime | None = None,
    watermarks: Mapping[str, int] | None = None,
) -> Iterator[tuple[ChannelName, list[int]]]:
    """Pending delivery ids of a tier on the channels where it has started (a channel still behind
    its gate sends nothing), cut into batches of one variant key sized for each channel's provider.
    With `watermarks` (channel -> delivery id), only those channels, above each one's own id."""
    started = select(BroadcastGate.channel).where(
        BroadcastGate.broadcast_id == broadcast_id,
        BroadcastGate.tier == tier,
        BroadcastGate.started_at.is_not(None),
    )
    query = select(Delivery.channel, Delivery.locale, Delivery.id).where(
        Delivery.broadcast_id == broadcast_id,
        Delivery.tier == tier,
        Delivery.state == DeliveryState.PENDING.value,
        Delivery.channel.in_(started.scalar_subquery()),
    )
    if watermarks is not None:
        if not watermarks:
            return
        query = query.where(
            or_(*(and_(Delivery.channel == c, Delivery.id > mark) for c, mark in sorted(watermarks.items())))
        )
    if stale_before is not None:
        query = query.where(Delivery.updated_at < stale_before)
    if due_by is not None:
        query = query.where(Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= due_by))
    # One variant key a batch: the provider takes one request per variant (an email batch is one
    # SendGrid call), so a tier read in 60 languages and zones mixed in each batch would cost 60.
    by_variant: dict[tuple[str, str], list[int]] = {}
    for name, key, delivery_id in session.execute(query.order_by(Delivery.channel, Delivery.id)):
        by_variant.setdefault((name, key), []).append(delivery_id)
    for (channel_value, _key), ids in by_variant.items():
        channel_name = ChannelName(channel_value)
        size = batch_size(channel_name, CHANNEL_CLASSES[channel_name].max_batch, settings)
        for start in range(0, len(ids), size):
            yield channel_name, ids[start : start + size]


def gate_snapshot(session: Session, broadcast_id: int, now: datetime) -> list[gates.Gate]:
    """The broadcast's gates as the rule sees them: from the gate rows, the tiers' planning state
    and the progress counters (never a scan of deliveries, except for rows in quiet hours)."""
    policy = session.scalar(select(Broadcast.policy).where(Broadcast.id == broadcast_id)) or {}
    planned = {t.tier: t.state != TierState.PLANNING for t in tiers_of(session, broadcast_id)}
    outstanding: Counter[tuple[int, str]] = Counter()
    for tier, channel, n in session.execute(
        select(BroadcastCount.tier, BroadcastCount.channel, BroadcastCount.n).where(
            BroadcastCount.broadcast_id == broadcast_id,
            BroadcastCount.state.in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]),
        )
    ):
        outstanding[(tier, channel)] += n
    if policy.get("quiet_hours"):
        for (tier, channel), n in quiet_waiting_by_channel(session, broadcast_id, now).items():
            outstanding[(tier, channel)] -= n
    rows = session.execute(
        select(BroadcastGate)
        .where(BroadcastGate.broadcast_id == broadcast_id)
        .order_by(BroadcastGate.tier, BroadcastGate.channel)
        .execution_options(populate_existing=True)
    ).scalars()
    return [
        gates.Gate(
            tier=g.tier,
            channel=g.channel,
            planned=planned.get(g.tier, False),
            started_at=g.started_at,
            opened_by=gates.OpenedBy(g.opened_by) if g.opened_by else None,
            outstanding=outstanding[(g.tier, g.channel)],
        )
        for g in rows
    ]


def check_gates(
    session: Session,
    settings: Settings,
    broadcast_id: int,
    outbox: Outbox,
    *,
    timeout_tier: int | None = None,
) -> None:
    """Applies the gate rule (dispatcher/domain/gates.py) to the broadcast: starts each tier on each
    channel whose turn has come and enqueues its rows, opens the gates that are accepted or timed
    out, keeps each tier's summary, and completes the broadcast once every gate is open and nothing
    is outstanding. Every step is a conditional UPDATE, so one caller wins it whoever gets there
    first. `timeout_tier` is accepted for callers of old; timeouts are read from the clock."""
    del timeout_tier
    lock_tiers(session, broadcast_id)
    now = utcnow()
    snapshot = gate_snapshot(session, broadcast_id, now)
    if not snapshot:
        return
    tiers = sorted({g.tier for g in snapshot})
    decision = gates.decide(
        snapshot,
        now=now,
        timeout_s=settings.tier_gate_timeout_s,
        public_tier=public_tier_of(session, broadcast_id, tiers),
        delays=settings.tier_delay_s,
    )
    started_tiers: set[int] = set()
    starting: dict[int, list[str]] = {}
    for tier, channel in decision.starts:
        starting.setdefault(tier, []).append(channel)
    for tier, channels in sorted(starting.items()):
        won = _start(session, broadcast_id, tier, channels, now)
        if won:
            _dispatch(session, settings, broadcast_id, tier, won, outbox)
            started_tiers.add(tier)
    opening: dict[tuple[int, str], list[str]] = {}
    for tier, channel, reason in decision.opens:
        opening.setdefault((tier, reason.value), []).append(channel)
    for (tier, reason_value), channels in sorted(opening.items()):
        session.execute(
            update(BroadcastGate)
            .where(*_gates(broadcast_id, tier, channels), BroadcastGate.opened_by.is_(None))
            .values(opened_by=reason_value, opened_at=now)
        )
    for tier in sorted(started_tiers):  # a gate that is not accepted opens by timeout, checked then
        gate_in = settings.tier_delay_s.get(tier, 0.0) + settings.tier_gate_timeout_s
        outbox.check_gate(broadcast_id, tier, gate_in)
    if decision.starts or decision.opens:
        session.flush()
        snapshot = gate_snapshot(session, broadcast_id, now)
    _summarize_tiers(session, broadcast_id, snapshot, now)
    # One statement, so the tiers are read in the same snapshot as the broadcast it completes: read
    # apart, a commander's retry committing in between (rows pending again, the broadcast `sending`
    # again) could be completed by this older look at the tiers.
    unfinished = (
        select(BroadcastTier.tier)
        .where(
            BroadcastTier.broadcast_id == broadcast_id,
            (BroadcastTier.state != TierState.DONE) | (BroadcastTier.outstanding > 0),
        )
        .exists()
    )
    session.execute(
        update(Broadcast)
        .where(Broadcast.id == broadcast_id, Broadcast.state == BroadcastState.SENDING, ~unfinished)
        .values(state=BroadcastState.COMPLETED, completed_at=now)
    )


def _summarize_tiers(session: Session, broadcast_id: int, snapshot: list[gates.Gate], now: datetime) -> None:
    """Each tier's row as dashboards and the sweeper read it: `sending` once it started on some
    channel, `done` with how its gate opened once open on every channel."""
    by_tier: dict[int, list[gates.Gate]] = {}
    for gate in snapshot:
        by_tier.setdefault(gate.tier, []).append(gate)
    for tier_row in tiers_of(session, broadcast_id):
        tier_gates = by_tier.get(tier_row.tier, [])
        starts = [g.started_at for g in tier_gates if g.started_at is not None]
        where = (BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == tier_row.tier)
        values: dict[str, Any] = {}
        if starts and tier_row.started_at is None:
            values["started_at"] = min(starts)
        if starts and tier_row.state == TierState.PLANNED:
            values["state"] = TierState.SENDING
        opened = gates.tier_gate(tier_gates)
        if opened is not None and tier_row.state in (TierState.PLANNED, TierState.SENDING):
            values |= {"state": TierState.DONE, "gate": opened.value}
        settled = tier_row.outstanding <= 0 and tier_row.state != TierState.PLANNING
        if settled and starts and tier_row.all_accepted_at is None:
            values["all_accepted_at"] = now
        if values:
            session.execute(update(BroadcastTier).where(*where).values(**values))


def quiet_waiting_by_channel(
    session: Session, broadcast_id: int, now: datetime
) -> dict[tuple[int, str], int]:
    """Pending rows of the broadcast still inside their recipient's quiet hours, per tier and channel."""
    return {
        (tier, channel): int(n)
        for tier, channel, n in session.execute(
            select(Delivery.tier, Delivery.channel, func.count())
            .where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.state == DeliveryState.PENDING.value,
                Delivery.last_error_code == QUIET_HOURS_CODE,
                Delivery.next_attempt_at > now,
            )
            .group_by(Delivery.tier, Delivery.channel)
        )
    }


def check_gate(session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox) -> None:
    """A tier's gate timeout came round (its countdown, or the sweeper's pass): apply the gates,
    which open every channel of it that has been started for longer than the timeout."""
    del tier
    check_gates(session, settings, broadcast_id, outbox)
