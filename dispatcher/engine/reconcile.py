"""Reconciliation: receipts converge when status callbacks are lost.

A delivery still `sent` `reconcile_after_s` after it was sent (or after it was last asked about) is
asked about at its provider: Twilio's Message resource, SendGrid's Email Activity API (how, and what
their statuses mean, is the adapters' business: `fetch_statuses`). The answers go through the same
checked path as webhooks (provider_status.apply_reports), so a query can move a row only as far as
a genuine callback could have.

Bounded and fair: beat runs `plan` every sweep interval; it claims, per channel, a page of the
oldest such rows (`reconcile_batch`), by bumping their `updated_at` in a conditional UPDATE (so two
passes never ask about the same row, and a row the provider has no news about waits another
`reconcile_after_s`), and queues one task per channel on that channel's queue, where the queries
are paced by the global rate limiter in their own bucket, never taking a send's slot. Channels
whose provider has no status API (chat, social, webhook) are never asked. Rows sent more than
MAX_AGE ago are left alone (SendGrid keeps activity for days, not forever).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update

from channels.base import ChannelName, Sent, StatusReport
from config import Settings
from dispatcher.domain.reports import Verdict
from dispatcher.domain.states import DeliveryState
from dispatcher.engine.clock import utcnow
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.ratelimit import Limit, RateLimiter, limit_for
from dispatcher.engine.status_reports import apply_reports, count_asked
from dispatcher.store.bulk import id_in
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery
from dispatcher.store.redis_client import key

log = logging.getLogger(__name__)

MAX_AGE = timedelta(days=3)


class StatusSource(Protocol):
    """An adapter whose provider answers status queries."""

    provider: str

    def fetch_statuses(
        self, sent: Sequence[Sent], throttle: Callable[[], None] | None = None
    ) -> list[StatusReport]: ...


def pollable(adapters: dict[ChannelName, object]) -> dict[ChannelName, StatusSource]:
    return {c: a for c, a in adapters.items() if hasattr(a, "fetch_statuses")}  # type: ignore[misc]


def claim(
    database: Database, settings: Settings, channel: ChannelName, now: datetime | None = None
) -> list[int]:
    """The oldest page of this channel's rows due a status query, claimed for this pass."""
    now = now or utcnow()
    due = now - timedelta(seconds=settings.reconcile_after_s)
    is_due = (
        (Delivery.state == DeliveryState.SENT.value)
        & (Delivery.channel == channel.value)
        & (Delivery.updated_at <= due)
        & (Delivery.sent_at >= now - MAX_AGE)
        & Delivery.provider_message_id.is_not(None)
    )
    with database.session() as session:
        page = session.scalars(
            select(Delivery.id)
            .where(is_due)
            .order_by(Delivery.updated_at, Delivery.id)
            .limit(settings.reconcile_batch)
        ).all()
        if not page:
            return []
        claimed = session.scalars(
            update(Delivery)
            .where(id_in(session, Delivery.id, page), is_due)
            .values(updated_at=now)
            .returning(Delivery.id)
        ).all()
    return sorted(claimed)


def reconcile(database: Database, settings: Settings, channels: Sequence[ChannelName]) -> dict[str, int]:
    """Beat's pass: claims a page per channel and queues its queries on the channel's queue."""
    outbox = Outbox()
    claimed: dict[str, int] = {}
    for channel in channels:
        ids = claim(database, settings, channel)
        if ids:
            outbox.add("dispatcher.reconcile_rows", [channel.value, ids], channel.value)
            claimed[channel.value] = len(ids)
    outbox.flush()
    return claimed


def status_slots(
    limiter: RateLimiter, settings: Settings, channel: ChannelName, provider: str, wanted: int
) -> tuple[Callable[[], None], int]:
    """Status queries at the provider's rate, in their own bucket (they never take a send's slot),
    and like sends never sleeping through the limit: only the slots that start within one pacing
    window are reserved. Returns a throttle that waits for each in turn, and how many there are."""
    limit: Limit = limit_for(channel, settings)
    bucket = key("rate", provider, "status", settings=settings)
    window = min(settings.rate_pace_window_s, settings.lease_s / 4)
    due: list[float] = []
    for _ in range(wanted):
        index, delay = limiter.try_reserve([bucket], limit, window)
        if index is None:
            break
        due.append(time.monotonic() + delay)
    slots = iter(due)

    def throttle() -> None:
        time.sleep(max(0.0, next(slots) - time.monotonic()))

    return throttle, len(due)


def hand_back(database: Database, settings: Settings, ids: Sequence[int]) -> None:
    """Rows claimed but not asked about (no slot in this window): due again at the next pass."""
    if not ids:
        return
    with database.session() as session:
        session.execute(
            update(Delivery)
            .where(id_in(session, Delivery.id, list(ids)), Delivery.state == DeliveryState.SENT.value)
            .values(updated_at=utcnow() - timedelta(seconds=settings.reconcile_after_s))
        )


def reconcile_rows(
    database: Database,
    settings: Settings,
    source: StatusSource,
    limiter: RateLimiter,
    channel: ChannelName,
    ids: Sequence[int],
) -> dict[str, int]:
    """Asks the provider about the claimed rows still `sent`, and applies what it says."""
    with database.session() as session:
        rows = [
            Sent(i, pmid, address)
            for i, pmid, address in session.execute(
                select(Delivery.id, Delivery.provider_message_id, Delivery.address).where(
                    id_in(session, Delivery.id, list(ids)),
                    Delivery.state == DeliveryState.SENT.value,
                    Delivery.channel == channel.value,
                    Delivery.provider_message_id.is_not(None),
                )
            )
        ]
    if not rows:
        return {"asked": 0, "moved": 0}
    throttle, slots = status_slots(limiter, settings, channel, source.provider, len(rows))
    rows, later = rows[:slots], rows[slots:]
    hand_back(database, settings, [r.delivery_id for r in later])
    if not rows:
        return {"asked": 0, "moved": 0}
    reports = source.fetch_statuses(rows, throttle)
    verdicts = apply_reports(database, settings, reports, source="reconcile") if reports else []
    count_asked(settings, source.provider, len(rows))
    moved = sum(1 for v in verdicts if v is Verdict.APPLIED)
    log.info("reconciled %s of %s %s receipts", moved, len(rows), channel.value)
    return {"asked": len(rows), "moved": moved}
