"""Planning a broadcast into delivery rows, and releasing it tier by tier, admins first.

- Tiers are planned in ascending order and each is dispatched as soon as it is planned and the
  tier before it has passed its gate, so the admins' messages leave before a 100,000-person
  customer list has even been read.
- De-duplication is the unique (broadcast, channel, address) key with ON CONFLICT DO NOTHING:
  planning the earlier tier first means a person in two lists is reached once, at the earlier tier,
  and a Slack channel shared by many subscribers gets one post.
- A tier's gate opens when its `outstanding` count (kept by `receipts`) reaches zero, or when its
  gate timeout passes; the tier records which. No chords: plain conditional updates decide, so
  exactly one caller wins each step whichever worker gets there first.
- Tasks are enqueued only after the transaction that made their rows visible has committed
  (`Outbox`), so a worker never looks for rows it cannot see yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.base import ChannelName, RenderContext
from config import Settings
from dispatcher import planning
from dispatcher.celery_app import URGENT_QUEUE
from dispatcher.message import EventKind, OutageMessage
from dispatcher.quiet_hours import quiet_until
from dispatcher.receipts import State, bump_counts
from dispatcher.store.bulk import id_in, insert_ignoring
from dispatcher.store.db import Database
from dispatcher.store.models import (
    Broadcast,
    BroadcastTier,
    BroadcastVariant,
    Delivery,
    Membership,
    Subscriber,
    SubscriberList,
)

PAGE = 5000
URGENT_TIER = 0  # the first tier (admins): its batches jump every queue
# The variant key for tiers whose resolved notice carries compensation (see broadcasts.compensation_text).
COMPENSATION_LOCALE = "en+compensation"
# Marks a pending row that waits out its recipient's quiet hours until `next_attempt_at`.
QUIET_HOURS_CODE = "quiet_hours"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Outbox:
    """Tasks to enqueue once the current transaction has committed."""

    items: list[tuple[str, list[Any], str, float]] = field(default_factory=list)

    def add(self, task: str, args: list[Any], queue: str, countdown: float = 0.0) -> None:
        self.items.append((task, args, queue, countdown))

    def send_batch(
        self, broadcast_id: int, channel: ChannelName | str, ids: list[int], tier: int, countdown: float = 0.0
    ) -> None:
        """A batch of one channel's deliveries, on the queue `batch_queue` picks."""
        channel = ChannelName(channel)
        self.add(
            "dispatcher.send_batch", [broadcast_id, channel.value, ids], batch_queue(channel, tier), countdown
        )

    def flush(self) -> None:
        from dispatcher.celery_app import app

        for task, args, queue, countdown in self.items:
            app.send_task(task, args=args, queue=queue, countdown=countdown or None)
        self.items.clear()


def batch_queue(channel: ChannelName, tier: int) -> str:
    """The first tier's batches go to the urgent queue, which workers take before any other: admins
    never wait behind another broadcast's customers. The rest go to their channel's queue."""
    return URGENT_QUEUE if tier == URGENT_TIER else channel.value


def insert_ignore(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Bulk insert deliveries, skipping any (broadcast, channel, address) that already has one;
    returns the (id, channel) of the rows it inserted."""
    table = Delivery.__table__
    inserted = insert_ignoring(
        session, table, rows, ["broadcast_id", "channel", "address"], (table.c.id, table.c.channel)
    )
    return [(row_id, channel) for row_id, channel in inserted]


def insert_one(session: Session, row: dict[str, Any]) -> int | None:
    """Inserts one delivery unless its key exists; returns its id when inserted."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(Delivery)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["broadcast_id", "channel", "address"])
        .returning(Delivery.id)
    )
    return session.scalar(stmt)


# ---- variants ------------------------------------------------------------------------------


def render_variants(
    session: Session,
    broadcast: Broadcast,
    message: OutageMessage,
    adapters: dict[ChannelName, Any],
    settings: Settings,
    locale: str = "en",
) -> None:
    """Renders each channel's variant once per broadcast and locale (never once per recipient)."""
    ctx = RenderContext(
        event=EventKind(broadcast.event),
        locale=locale,
        sms_segment_budget=settings.sms_segment_budget,
        unsubscribe_url=settings.unsubscribe_url,
    )
    for name, adapter in adapters.items():
        if session.get(BroadcastVariant, (broadcast.id, name.value, locale)) is None:
            variant = adapter.condense(message, ctx)
            session.add(
                BroadcastVariant(
                    broadcast_id=broadcast.id, channel=name.value, locale=locale, variant=variant.to_json()
                )
            )


# ---- planning ------------------------------------------------------------------------------


PLANNING_COLUMNS = (
    Subscriber.id,
    Subscriber.email,
    Subscriber.phone,
    Subscriber.slack_channel,
    Subscriber.webhook_url,
    Subscriber.channels,
    Subscriber.opt_outs,
    Subscriber.locale,
)
# Read only when the broadcast needs them: each is a JSON document to parse per subscriber, and
# parsing was a third of planning time for a 10k tier.
SCOPE_COLUMNS = (Subscriber.components, Subscriber.regions)
_QUIET_COLUMNS = (Subscriber.timezone, Subscriber.quiet_hours)  # quiet hours are local


def _subscribers_in_tier(
    session: Session, tier: int, after_id: int, columns: Sequence[Any] = PLANNING_COLUMNS
) -> list[Any]:
    """One page of a tier's subscribers, in id order, as plain rows.

    Each of the tier's lists is read on its own through the (list_id, subscriber_id) index: asked
    for all lists at once, PostgreSQL walks every membership in subscriber order instead, so 50
    admins cost a scan of the whole audience."""
    list_ids = session.scalars(select(SubscriberList.id).where(SubscriberList.tier == tier)).all()
    ids: set[int] = set()
    for list_id in list_ids:
        ids.update(
            session.scalars(
                select(Membership.subscriber_id)
                .where(Membership.list_id == list_id, Membership.subscriber_id > after_id)
                .order_by(Membership.subscriber_id)
                .limit(PAGE)
            )
        )
    page = sorted(ids)[:PAGE]  # the smallest ids of the union lie within each list's smallest
    if not page:
        return []
    return list(
        session.execute(select(*columns).where(id_in(session, Subscriber.id, page)).order_by(Subscriber.id))
    )


def plan_tier(database: Database, settings: Settings, broadcast_id: int, tier: int, public_tier: int) -> None:
    """Writes the tier's delivery rows, a page of subscribers at a time (never the whole audience
    in memory), counting each page in the transaction that writes it, then marks the tier planned.
    Once the tier's turn has come, each page is sent as soon as it is written: 95,000 customers
    need not wait for the last page to be planned. Safe to run again after a crash."""
    with database.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        sending_on = [ChannelName(c) for c in broadcast.policy.get("channels", [])]
        message = broadcast.policy.get("scope", {})
        respect_quiet = bool(broadcast.policy.get("quiet_hours"))
        compensated = tier in broadcast.policy.get("compensation_tiers", [])
    components, regions = message.get("components", []), message.get("regions", [])
    now = utcnow()
    if tier == public_tier:
        if ChannelName.SOCIAL in sending_on:
            row = _row(broadcast_id, tier, ChannelName.SOCIAL, planning.PUBLIC_ADDRESS, None, "en", now)
            _write_page(database, settings, broadcast_id, tier, [row])
    else:
        scoped = bool(components or regions)
        columns = (
            *PLANNING_COLUMNS,
            *(SCOPE_COLUMNS if scoped else ()),
            *(_QUIET_COLUMNS if respect_quiet else ()),
        )
        after = 0
        while True:
            with database.session() as session:
                page = _subscribers_in_tier(session, tier, after, columns)
            if not page:
                break
            rows = []
            for sub in page:
                if scoped and not planning.in_scope(sub.components, sub.regions, components, regions):
                    continue
                locale = COMPENSATION_LOCALE if compensated else sub.locale
                wait = quiet_until(now, sub.timezone, sub.quiet_hours) if respect_quiet else None
                for target in planning.targets(
                    sub.channels, sub.opt_outs, planning.addresses_of(sub), sending_on
                ):
                    row = _row(broadcast_id, tier, target.channel, target.address, sub.id, locale, now)
                    if wait is not None:
                        row |= {
                            "next_attempt_at": wait,
                            "last_error_code": QUIET_HOURS_CODE,
                            "last_error": f"waiting out quiet hours until {wait.isoformat()}",
                        }
                    rows.append(row)
            after = page[-1].id
            _write_page(database, settings, broadcast_id, tier, rows)
    with database.session() as session:
        session.execute(
            update(BroadcastTier)
            .where(
                BroadcastTier.broadcast_id == broadcast_id,
                BroadcastTier.tier == tier,
                BroadcastTier.state == "planning",
            )
            .values(state="planned")
        )


def _write_page(
    database: Database, settings: Settings, broadcast_id: int, tier: int, rows: list[dict[str, Any]]
) -> None:
    """One page of a tier: its rows and their counts in one transaction, then, if the tier's turn
    has come, its sends. Only rows this call inserted are counted, so a re-run counts nothing twice."""
    outbox = Outbox()
    with database.session() as session:
        inserted = insert_ignore(session, rows)
        if inserted:
            per_channel = Counter(channel for _, channel in inserted)
            # counters before the tier row: the order recording takes them in, so neither waits on the other
            bump_counts(
                session,
                Counter({(broadcast_id, tier, c, State.PENDING.value): n for c, n in per_channel.items()}),
            )
            session.execute(
                update(BroadcastTier)
                .where(BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == tier)
                .values(
                    planned=BroadcastTier.planned + len(inserted),
                    outstanding=BroadcastTier.outstanding + len(inserted),
                )
            )
            from dispatcher.suppressions import suppress_planned  # suppressed addresses: recorded, not sent

            suppress_planned(session, settings, broadcast_id, tier, [row_id for row_id, _ in inserted])
            if _turn_has_come(session, broadcast_id, tier):
                _dispatch_new(session, settings, broadcast_id, tier, outbox)
    outbox.flush()


def _row(
    broadcast_id: int,
    tier: int,
    channel: ChannelName,
    address: str,
    subscriber_id: int | None,
    locale: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "broadcast_id": broadcast_id,
        "tier": tier,
        "channel": channel.value,
        "address": address,
        "subscriber_id": subscriber_id,
        "locale": locale,
        "state": State.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def tiers_of(session: Session, broadcast_id: int) -> list[BroadcastTier]:
    return list(
        session.scalars(
            select(BroadcastTier)
            .where(BroadcastTier.broadcast_id == broadcast_id)
            .order_by(BroadcastTier.tier)
            .execution_options(populate_existing=True)  # gates are moved by UPDATEs: re-read them
        )
    )


def run_broadcast(database: Database, settings: Settings, broadcast_id: int) -> None:
    """The broadcast's first task: claims it and plans its first tier (the admins)."""
    with database.session() as session:
        claimed = session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.state.in_(["queued", "planning"]))
            .values(state="planning")
        ).rowcount
        tiers = [t.tier for t in tiers_of(session, broadcast_id)]
    if claimed and tiers:
        plan_next_tier(database, settings, broadcast_id, tiers[0])


def plan_next_tier(database: Database, settings: Settings, broadcast_id: int, tier: int) -> None:
    """Plans one tier, dispatches it if its turn has come, and hands the next tier to a task of its
    own: planning 95,000 customers in one long task would keep even the admins' sends waiting for
    the worker process it holds (measured: 19.6 s to the first admin with one worker, 100k audience)."""
    with database.session() as session:
        tiers = [t.tier for t in tiers_of(session, broadcast_id)]
    plan_tier(database, settings, broadcast_id, tier, max(tiers))
    following = next((t for t in tiers if t > tier), None)
    outbox = Outbox()
    with database.session() as session:
        try_dispatch(session, settings, broadcast_id, tier, outbox)
        if following is not None:
            outbox.add("dispatcher.plan_tier", [broadcast_id, following], "control")
        else:
            session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.state == "planning")
                .values(state="sending", planned_at=utcnow())
            )
            check_gates(session, settings, broadcast_id, outbox)
    outbox.flush()


# ---- dispatch and gates --------------------------------------------------------------------


def try_dispatch(session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox) -> bool:
    """Starts sending `tier` if it is planned and the tier before it has passed its gate."""
    if not _turn_has_come(session, broadcast_id, tier):
        return False
    started = session.execute(
        update(BroadcastTier)
        .where(
            BroadcastTier.broadcast_id == broadcast_id,
            BroadcastTier.tier == tier,
            BroadcastTier.state == "planned",
        )
        .values(state="sending")
    ).rowcount
    if not started:
        return False
    started_at = _dispatch_new(session, settings, broadcast_id, tier, outbox)
    elapsed = (utcnow() - started_at).total_seconds()
    gate_in = settings.tier_delay_s.get(tier, 0.0) + settings.tier_gate_timeout_s - elapsed
    outbox.add("dispatcher.check_gate", [broadcast_id, tier], "control", max(0.0, gate_in))
    session.flush()
    check_gates(session, settings, broadcast_id, outbox)  # an empty tier passes its gate at once
    return True


def _turn_has_come(session: Session, broadcast_id: int, tier: int) -> bool:
    """The tier before this one has passed its gate, or there is none."""
    previous = session.scalar(
        select(BroadcastTier.state)
        .where(BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier < tier)
        .order_by(BroadcastTier.tier.desc())
        .limit(1)
    )
    return previous is None or previous == "done"


def _dispatch_new(
    session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox
) -> datetime:
    """Enqueues the tier's due pending rows that no earlier call enqueued (those above its
    watermark); the first call starts the tier's clock, which it returns. Rows waiting out quiet
    hours are not enqueued now: the sweeper releases them when they fall due."""
    where = (BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == tier)
    started_at, through = session.execute(
        select(BroadcastTier.started_at, BroadcastTier.dispatched_through).where(*where).with_for_update()
    ).one()
    now = utcnow()
    started_at = started_at or now
    delay = max(0.0, settings.tier_delay_s.get(tier, 0.0) - (now - started_at).total_seconds())
    highest = through or 0
    for channel, ids in pending_batches(session, settings, broadcast_id, tier, due_by=now, above_id=highest):
        outbox.send_batch(broadcast_id, channel, ids, tier, delay)
        highest = max(highest, ids[-1])
    session.execute(
        update(BroadcastTier).where(*where).values(started_at=started_at, dispatched_through=highest)
    )
    return started_at


def pending_batches(
    session: Session,
    settings: Settings,
    broadcast_id: int,
    tier: int,
    *,
    stale_before: datetime | None = None,
    due_by: datetime | None = None,
    above_id: int = 0,
) -> Iterator[tuple[ChannelName, list[int]]]:
    """Pending delivery ids of a tier, cut into batches sized for each channel's provider."""
    from channels.registry import CHANNEL_CLASSES
    from dispatcher.ratelimit import batch_size

    query = select(Delivery.channel, Delivery.id).where(
        Delivery.broadcast_id == broadcast_id, Delivery.tier == tier, Delivery.state == State.PENDING.value
    )
    if above_id:
        query = query.where(Delivery.id > above_id)
    if stale_before is not None:
        query = query.where(Delivery.updated_at < stale_before)
    if due_by is not None:
        query = query.where(Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= due_by))
    by_channel: dict[str, list[int]] = {}
    for channel, delivery_id in session.execute(query.order_by(Delivery.channel, Delivery.id)):
        by_channel.setdefault(channel, []).append(delivery_id)
    for channel_value, ids in by_channel.items():
        channel = ChannelName(channel_value)
        size = batch_size(channel, CHANNEL_CLASSES[channel].max_batch, settings)
        for start in range(0, len(ids), size):
            yield channel, ids[start : start + size]


def check_gates(
    session: Session,
    settings: Settings,
    broadcast_id: int,
    outbox: Outbox,
    *,
    timeout_tier: int | None = None,
) -> None:
    """Opens every gate whose tier is fully accepted (or timed out), releases the next tier, and
    completes the broadcast once every tier is released and nothing is outstanding."""
    now = utcnow()
    policy = session.scalar(select(Broadcast.policy).where(Broadcast.id == broadcast_id)) or {}
    for tier in tiers_of(session, broadcast_id):
        if tier.outstanding <= 0 and tier.all_accepted_at is None and tier.state in ("sending", "done"):
            session.execute(
                update(BroadcastTier)
                .where(
                    BroadcastTier.broadcast_id == broadcast_id,
                    BroadcastTier.tier == tier.tier,
                    BroadcastTier.all_accepted_at.is_(None),
                )
                .values(all_accepted_at=now)
            )
        if tier.state != "sending":
            continue
        # Rows waiting out quiet hours do not hold the gate: the next tier (and an incident's urgency)
        # must not wait for someone's night. They stay outstanding, so the broadcast completes later.
        waiting = 0
        if tier.outstanding > 0 and policy.get("quiet_hours"):
            waiting = quiet_waiting(session, broadcast_id, tier.tier, now)
        accepted = tier.outstanding - waiting <= 0
        reason = "accepted" if accepted else ("timeout" if timeout_tier == tier.tier else None)
        if reason is None:
            continue
        opened = session.execute(
            update(BroadcastTier)
            .where(
                BroadcastTier.broadcast_id == broadcast_id,
                BroadcastTier.tier == tier.tier,
                BroadcastTier.state == "sending",
            )
            .values(state="done", gate=reason)
        ).rowcount
        if opened:
            following = session.scalar(
                select(BroadcastTier.tier)
                .where(BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier > tier.tier)
                .order_by(BroadcastTier.tier)
                .limit(1)
            )
            if following is not None:
                try_dispatch(session, settings, broadcast_id, following, outbox)
                return  # try_dispatch re-checks the gates that follow
    unfinished = session.scalar(
        select(func.count())
        .select_from(BroadcastTier)
        .where(
            BroadcastTier.broadcast_id == broadcast_id,
            (BroadcastTier.state != "done") | (BroadcastTier.outstanding > 0),
        )
    )
    if unfinished == 0:
        session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast_id, Broadcast.state == "sending")
            .values(state="completed", completed_at=now)
        )


def quiet_waiting(session: Session, broadcast_id: int, tier: int, now: datetime) -> int:
    """Pending rows of a tier still inside their recipient's quiet hours."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.tier == tier,
                Delivery.state == State.PENDING.value,
                Delivery.last_error_code == QUIET_HOURS_CODE,
                Delivery.next_attempt_at > now,
            )
        )
        or 0
    )


def gate_timed_out(
    session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox
) -> None:
    started = session.scalar(
        select(BroadcastTier.started_at).where(
            BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == tier
        )
    )
    if started is not None and utcnow() - started >= timedelta(seconds=settings.tier_gate_timeout_s * 0.99):
        check_gates(session, settings, broadcast_id, outbox, timeout_tier=tier)
