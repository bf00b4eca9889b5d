"""The suppression list: addresses we must not send to again on a channel.

Sending again to a hard-bounced address, a spam reporter or a number the carrier says is invalid or
opted out is what costs a sender its reputation (and, for SMS, breaks the carriers' rules). So every
such answer is recorded per (channel, address) with its reason and time, and planning turns a later
delivery to that address into a `suppressed` row carrying the reason instead of sending it. Failover
tiers (admins) are still reached on their next channel. Admins list and remove entries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.base import ChannelName, Outcome, StatusReport, SuppressionReason
from config import Settings
from dispatcher.domain import audience
from dispatcher.domain.states import DeliveryState
from dispatcher.engine.clock import utcnow
from dispatcher.engine.deliveries import delivery_row, insert_one
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.tier_gates import check_gates
from dispatcher.engine.transitions import Moved, Note, count_moves, lock_tiers, set_details, transition
from dispatcher.store.bulk import id_in
from dispatcher.store.models import BroadcastTier, Delivery, Subscriber, Suppression
from dispatcher.store.redis_client import get_redis, key

SUPPRESSED_CODE = "suppressed"
# Which provider answers mean "never again" is the provider's to say (Outcome.suppression and
# StatusReport.suppression, set by each adapter and parser); this module only records them.
REASONS = frozenset(r.value for r in SuppressionReason)


def record(
    session: Session, channel: ChannelName | str, address: str, reason: str, detail: str | None = None
) -> bool:
    """Adds (channel, address) to the list unless it is there; returns whether it was added."""
    channel = ChannelName(channel)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(Suppression)
        .values(
            channel=channel.value,
            address=audience.normalise_address(channel, address),
            reason=str(reason),  # a SuppressionReason is stored as its plain value
            detail=(detail or None) and str(detail)[:200],
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["channel", "address"])
        .returning(Suppression.id)
    )
    return session.scalar(stmt) is not None


def _addresses(session: Session, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.execute(
        select(Delivery.id, Delivery.channel, Delivery.address).where(id_in(session, Delivery.id, wanted))
    )
    return {i: (channel, address) for i, channel, address in rows}


def from_reports(session: Session, reports: Sequence[StatusReport]) -> int:
    """The suppressions status reports carry (hard bounces, spam reports, drops, dead or opted-out
    numbers: whatever the provider's parser set), from reports that passed the checks
    (dispatcher/engine/status_reports.py), each with its delivery's channel and address from our own
    row, never from the report's text."""
    wanted: dict[int, tuple[str, str | None]] = {}
    for report in reports:
        if report.suppression is not None and report.delivery_id is not None:
            wanted[report.delivery_id] = (report.suppression, (report.error or "")[:200] or None)
    found = _addresses(session, wanted)
    added = 0
    for delivery_id, (reason, detail) in wanted.items():
        if delivery_id in found:
            added += record(session, found[delivery_id][0], found[delivery_id][1], reason, detail)
    return added


def from_outcomes(
    session: Session, settings: Settings, rows: Sequence[Moved], outcomes: Sequence[Outcome]
) -> int:
    """Sends the provider refused for good with a suppression reason (Twilio: an invalid number, or
    an opted-out one, which also opts the subscriber out of the channel), and webhook receivers that
    have failed for `webhook_suppress_after_s` without one success."""
    by_id = {r.id: r for r in rows}
    added = 0
    for address in failing_webhooks(settings, by_id, outcomes):
        added += record(
            session, ChannelName.WEBHOOK, address, SuppressionReason.WEBHOOK_FAILING, "no success since"
        )
    for outcome in outcomes:
        row = by_id.get(outcome.delivery_id)
        reason = outcome.suppression
        if row is None or reason is None:
            continue
        channel = ChannelName(row.channel)
        added += record(session, channel, row.address, reason, (outcome.error or "")[:200])
        if reason == SuppressionReason.OPTED_OUT and row.subscriber_id is not None:
            opt_out(session, row.subscriber_id, channel)
    return added


def failing_webhooks(
    settings: Settings, by_id: Mapping[int, Moved], outcomes: Sequence[Outcome]
) -> list[str]:
    """Webhook addresses whose first failure since their last success is older than the setting.
    The first failure's time is kept in Redis (one key per address, cleared by a success), so this
    never scans deliveries. Advisory: a Redis error only skips it."""
    hooks = [(o, by_id[o.delivery_id]) for o in outcomes if o.delivery_id in by_id]
    hooks = [(o, row) for o, row in hooks if row.channel == ChannelName.WEBHOOK.value]
    if not hooks:
        return []
    now = time.time()
    ttl = int(settings.webhook_suppress_after_s * 2) + 3600
    due: list[str] = []
    try:
        client = get_redis(settings)
        for outcome, row in hooks:
            name = key(
                "webhook_failing", hashlib.sha256(row.address.encode()).hexdigest()[:32], settings=settings
            )
            if outcome.accepted:
                client.delete(name)
                continue
            client.set(name, f"{now:.3f}", nx=True, ex=ttl)
            first = float(client.get(name) or now)
            if now - first >= settings.webhook_suppress_after_s:
                due.append(row.address)
    except redis.RedisError:
        return []
    return due


def opt_out(session: Session, subscriber_id: int, channel: ChannelName) -> bool:
    """Adds `channel` to a subscriber's opt-outs; returns whether it changed."""
    sub = session.get(Subscriber, subscriber_id, with_for_update=True)
    if sub is None or channel.value in (sub.opt_outs or []):
        return False
    sub.opt_outs = [*(sub.opt_outs or []), channel.value]
    return True


def suppress_planned(
    session: Session, settings: Settings, broadcast_id: int, tier: int, ids: Sequence[int]
) -> list[int]:
    """Newly planned deliveries to suppressed addresses move to `suppressed` with the reason (their
    counters with them); recipients in failover tiers get a row on their next reachable channel.
    Runs in the transaction that planned the rows, before any of them is dispatched."""
    if not ids:
        return []
    hits = session.execute(
        select(Delivery.id, Suppression.reason)
        .join(
            Suppression, (Suppression.channel == Delivery.channel) & (Suppression.address == Delivery.address)
        )
        .where(id_in(session, Delivery.id, list(ids)))
    ).all()
    if not hits:
        return []
    reasons = dict(hits)
    moved = transition(
        session,
        sorted(reasons),
        expect=DeliveryState.PENDING,
        to=DeliveryState.SUPPRESSED,
        now=utcnow(),
        kind="suppressed",
        notes={i: Note(SUPPRESSED_CODE, f"suppressed: {r}") for i, r in reasons.items()},
    )
    set_details(
        session,
        [
            {"id": m.id, "last_error_code": SUPPRESSED_CODE, "last_error": f"suppressed: {reasons[m.id]}"}
            for m in moved
        ],
    )
    if tier in settings.failover_tiers:
        for row in moved:
            fail_over_planned(session, settings, row)
    return [m.id for m in moved]


def is_suppressed(session: Session, channel: ChannelName, address: str) -> str | None:
    """The reason (channel, address) is suppressed, or None."""
    return session.scalar(
        select(Suppression.reason).where(
            Suppression.channel == channel.value,
            Suppression.address == audience.normalise_address(channel, address),
        )
    )


def fail_over_planned(session: Session, settings: Settings, moved: Moved) -> int | None:
    """A failover-tier recipient whose address is suppressed at planning: the next channel that is not."""
    found = insert_failover(
        session, settings.channels_enabled, moved, ChannelName(moved.channel), planned=True
    )
    return found[1] if found else None


def insert_failover(
    session: Session,
    enabled: Collection[ChannelName],
    moved: Moved,
    failed: ChannelName,
    *,
    planned: bool,
) -> tuple[ChannelName, int] | None:
    """Reaches the person on their next channel that is neither opted out nor suppressed: a new
    pending row pointing back at the failed one, counted in its tier (`planned` too when the tier is
    still being planned). Returns its channel and id; None when there is no such channel or the
    person was already reached on it in this broadcast. The caller enqueues it (or planning does)."""
    if moved.subscriber_id is None:
        return None
    sub = session.get(Subscriber, moved.subscriber_id)
    if sub is None:
        return None
    addresses = audience.addresses_of(sub)
    while True:
        target = audience.next_channel(failed, sub.channels, sub.opt_outs, addresses, enabled)
        if target is None:
            return None
        if is_suppressed(session, target.channel, target.address) is None:
            break
        failed = target.channel
    now = utcnow()
    row = delivery_row(
        moved.broadcast_id, moved.tier, target.channel, target.address, sub.id, moved.locale, now
    )
    new_id = insert_one(session, row | {"failover_of": moved.id})
    if new_id is None:
        return None
    lock_tiers(session, moved.broadcast_id)
    counts = {"outstanding": BroadcastTier.outstanding + 1}
    if planned:
        counts["planned"] = BroadcastTier.planned + 1
    session.execute(
        update(BroadcastTier)
        .where(BroadcastTier.broadcast_id == moved.broadcast_id, BroadcastTier.tier == moved.tier)
        .values(**counts)
    )
    count_moves(
        session, [(moved.broadcast_id, moved.tier, target.channel.value)], None, DeliveryState.PENDING
    )
    return target.channel, new_id


def withdraw_pending(
    session: Session,
    settings: Settings,
    subscriber_id: int,
    channel: ChannelName,
    reason: str,
    outbox: Outbox,
) -> list[int]:
    """A subscriber who just opted out: their deliveries on `channel` that have not left yet (still
    pending, in any broadcast in flight) become `suppressed`. Rows already sending are on their way."""
    ids = list(
        session.scalars(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber_id,
                Delivery.channel == channel.value,
                Delivery.state == DeliveryState.PENDING.value,
            )
        )
    )
    note = Note(SUPPRESSED_CODE, f"suppressed: {reason}")
    moved = transition(
        session,
        ids,
        expect=DeliveryState.PENDING,
        to=DeliveryState.SUPPRESSED,
        now=utcnow(),
        kind="suppressed",
        notes=dict.fromkeys(ids, note),
    )
    set_details(
        session,
        [
            {"id": m.id, "last_error_code": SUPPRESSED_CODE, "last_error": f"suppressed: {reason}"}
            for m in moved
        ],
    )
    if moved:
        session.flush()
        for broadcast_id in sorted({m.broadcast_id for m in moved}):  # a tier may be done now
            check_gates(session, settings, broadcast_id, outbox)
    return [m.id for m in moved]


def list_entries(
    session: Session,
    *,
    channel: str | None = None,
    address: str | None = None,
    reason: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Suppression]:
    query = select(Suppression).where(Suppression.id > after_id)
    if channel:
        query = query.where(Suppression.channel == channel)
    if address:
        chan = ChannelName(channel) if channel else ChannelName.EMAIL
        query = query.where(Suppression.address == audience.normalise_address(chan, address))
    if reason:
        query = query.where(Suppression.reason == reason)
    return list(session.scalars(query.order_by(Suppression.id).limit(limit)))


def remove(session: Session, suppression_id: int) -> bool:
    return bool(session.execute(delete(Suppression).where(Suppression.id == suppression_id)).rowcount)


def as_json(row: Suppression) -> dict[str, Any]:
    created: datetime = row.created_at
    return {
        "id": row.id,
        "channel": row.channel,
        "address": row.address,
        "reason": row.reason,
        "detail": row.detail,
        "created_at": created.isoformat(),
    }
