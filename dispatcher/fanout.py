"""Planning a broadcast into delivery rows, and releasing it tier by tier, admins first.

- Tiers are planned in ascending order and each is dispatched, channel by channel, as soon as the
  tier before it has passed its gate on that channel, so the admins' messages leave before a
  100,000-person customer list has even been read, and admins' SMS at 1/s never hold customers' email.
- De-duplication is the unique (broadcast, channel, address) key with ON CONFLICT DO NOTHING:
  planning the earlier tier first means a person in two lists is reached once, at the earlier tier,
  and a Slack channel shared by many subscribers gets one post.
- The gate rule lives in `dispatcher/gates.py` (pure); here it is applied: a gate per tier and
  channel opens when that channel's outstanding count (the progress counters) reaches zero, or its
  gate timeout passes, and records which. No chords: plain conditional updates decide, so exactly
  one caller wins each step whichever worker gets there first.
- Tasks are enqueued only after the transaction that made their rows visible has committed
  (`Outbox`), so a worker never looks for rows it cannot see yet.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from channels.base import ChannelName, RenderContext
from config import Settings
from dispatcher import gates, planning
from dispatcher.celery_app import URGENT_QUEUE
from dispatcher.message import EventKind, OutageMessage
from dispatcher.quiet_hours import quiet_until
from dispatcher.receipts import State, bump_counts
from dispatcher.store.bulk import id_in, insert_ignoring
from dispatcher.store.db import Database
from dispatcher.store.models import (
    Broadcast,
    BroadcastCount,
    BroadcastGate,
    BroadcastTier,
    BroadcastVariant,
    Delivery,
    Membership,
    Subscriber,
    SubscriberList,
)

PAGE = 5000
# A later tier's planning task writes this many pages, then hands the rest on (plan_next_tier).
PAGES_PER_TASK = 1
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

    def hand_off(self) -> bool:
        """`flush` for callers that already committed and must not fail for it (an API answer): a
        broker that is down is logged, and the sweeper queues what this could not (see
        sweeper.requeue_unqueued). Returns whether everything reached the broker."""
        try:
            self.flush()
        except Exception as exc:  # whatever the broker raised, the records are committed
            logging.getLogger(__name__).warning(
                "broker unreachable after commit; the sweeper will queue %d task(s): %s: %s",
                len(self.items),
                type(exc).__name__,
                exc,
            )
            self.items.clear()
            return False
        return True


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


def plan_tier(
    database: Database,
    settings: Settings,
    broadcast_id: int,
    tier: int,
    public_tier: int | None,
    *,
    after: int = 0,
    max_pages: int | None = None,
) -> int | None:
    """Writes the tier's delivery rows, a page of subscribers at a time (never the whole audience
    in memory), counting each page in the transaction that writes it, then marks the tier planned.
    Once the tier's turn has come, each page is sent as soon as it is written: 95,000 customers
    need not wait for the last page to be planned. Safe to run again after a crash.

    From subscriber id `after` on; with `max_pages`, stops after that many pages and returns the
    cursor to go on from (None once the tier is planned), so a caller can plan a big tier in short
    tasks (see plan_next_tier)."""
    with database.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        sending_on = [ChannelName(c) for c in broadcast.policy.get("channels", [])]
        message = broadcast.policy.get("scope", {})
        respect_quiet = bool(broadcast.policy.get("quiet_hours"))
        compensated = tier in broadcast.policy.get("compensation_tiers", [])
        contacts = broadcast.policy.get("contacts")
    components, regions = message.get("components", []), message.get("regions", [])
    now = utcnow()
    if contacts is not None:  # a broadcast to named addresses (commander reminders), no subscribers
        rows = [
            _row(broadcast_id, tier, ChannelName(channel), address, None, "en", now)
            for channel, address in contacts
        ]
        _write_page(database, settings, broadcast_id, tier, rows)
    elif tier == public_tier:
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
        pages = 0
        while True:
            if max_pages is not None and pages >= max_pages:
                return after  # the rest in a task of its own
            with database.session() as session:
                page = _subscribers_in_tier(session, tier, after, columns)
            if not page:
                break
            pages += 1
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
    return None


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
            start_due_channels(session, settings, broadcast_id, tier, outbox)
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
    outbox.flush()


def start_due_channels(
    session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox
) -> None:
    """While a tier is planned page by page: starts it on each channel whose turn has come and
    enqueues the page's rows there. Touches only this tier's gates (never an earlier tier's rows,
    which a recording transaction may hold)."""
    now = utcnow()
    snapshot = gate_snapshot(session, broadcast_id, now)
    tiers = sorted({g.tier for g in snapshot})
    public = public_tier_of(session, broadcast_id, tiers)
    for gate in snapshot:
        if gate.tier != tier or gate.started_at is not None:
            continue
        if gates.turn_has_come(snapshot, tier, gate.channel, public):
            session.execute(
                update(BroadcastGate)
                .where(
                    BroadcastGate.broadcast_id == broadcast_id,
                    BroadcastGate.tier == tier,
                    BroadcastGate.channel == gate.channel,
                    BroadcastGate.started_at.is_(None),
                )
                .values(started_at=now)
            )
    dispatch_started(session, settings, broadcast_id, tier, outbox)


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


def add_gates(session: Session, broadcast_id: int, tiers: Sequence[int]) -> None:
    """A gate row per tier and channel (every channel: failover can reach one the policy left out)."""
    for tier in tiers:
        for channel in ChannelName:
            session.add(BroadcastGate(broadcast_id=broadcast_id, tier=tier, channel=channel.value))


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


def plan_next_tier(
    database: Database, settings: Settings, broadcast_id: int, tier: int, after: int = 0
) -> None:
    """Plans one tier, dispatches it where its turn has come, and hands the next tier to a task of
    its own: planning 95,000 customers in one long task would keep even the admins' sends waiting
    for the worker process it holds (measured: 19.6 s to the first admin with one worker, 100k).

    A tier after the first is planned one page per task: the task hands the rest of the tier to a
    task of its own (`after`, the cursor), queued behind every urgent task. Planning 95,000
    customers in one task held a worker for seconds: with one worker process, a second incident's
    admins waited 16-17 s behind it (benchmarks/backtoback.py, 100k, `--workers 1`). The first
    tier is planned whole: it is the urgent work."""
    with database.session() as session:
        tiers = [t.tier for t in tiers_of(session, broadcast_id)]
        public = public_tier_of(session, broadcast_id, tiers)
    sliced = PAGES_PER_TASK if tiers and tier != tiers[0] else None
    cursor = plan_tier(database, settings, broadcast_id, tier, public, after=after, max_pages=sliced)
    if cursor is not None:
        rest = Outbox()
        rest.add("dispatcher.plan_tier", [broadcast_id, tier, cursor], "control")
        rest.flush()
        return
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


def public_tier_of(session: Session, broadcast_id: int, tiers: Sequence[int]) -> int | None:
    """The last tier is the public post's, except in a broadcast to named contacts (a reminder)."""
    policy = session.scalar(select(Broadcast.policy).where(Broadcast.id == broadcast_id)) or {}
    return None if policy.get("contacts") is not None or not tiers else max(tiers)


# ---- dispatch and gates (the rule: dispatcher/gates.py) -------------------------------------


def try_dispatch(session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox) -> bool:
    """Applies the gates, then enqueues the tier's rows not yet enqueued on every channel where its
    turn has come (rows a page wrote while a gate opened elsewhere included). Whether any channel
    of the tier is sending.

    The tier's row is locked first: every transaction that settles one of the tier's deliveries
    holds it (its `outstanding`), so the gates are read after those commit. Without it, a recording
    that still saw the tier as being planned and this check that did not yet see the recording
    would both leave the gate shut, until its timeout."""
    session.execute(
        select(BroadcastTier.tier)
        .where(BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == tier)
        .with_for_update()
    )
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
        select(BroadcastGate.channel, BroadcastGate.started_at)
        .where(BroadcastGate.broadcast_id == broadcast_id, BroadcastGate.tier == tier)
        .order_by(BroadcastGate.channel)
        .with_for_update()
    ).all()
    channels = [channel for channel, started_at in rows if started_at is not None]
    for channel in channels:
        _dispatch_channel(session, settings, broadcast_id, tier, channel, outbox)
    return len(channels)


def _dispatch_channel(
    session: Session, settings: Settings, broadcast_id: int, tier: int, channel: str, outbox: Outbox
) -> None:
    """Enqueues the due pending rows of one tier on one channel that no earlier call enqueued (those
    above its watermark). Rows waiting out quiet hours are not enqueued now: the sweeper releases
    them when they fall due."""
    where = (
        BroadcastGate.broadcast_id == broadcast_id,
        BroadcastGate.tier == tier,
        BroadcastGate.channel == channel,
    )
    started_at, through = session.execute(
        select(BroadcastGate.started_at, BroadcastGate.dispatched_through).where(*where).with_for_update()
    ).one()
    now = utcnow()
    started_at = started_at or now
    delay = max(0.0, settings.tier_delay_s.get(tier, 0.0) - (now - started_at).total_seconds())
    highest = through or 0
    for name, ids in pending_batches(
        session, settings, broadcast_id, tier, due_by=now, above_id=highest, channel=channel
    ):
        outbox.send_batch(broadcast_id, name, ids, tier, delay)
        highest = max(highest, ids[-1])
    if highest != (through or 0):
        session.execute(update(BroadcastGate).where(*where).values(dispatched_through=highest))


def pending_batches(
    session: Session,
    settings: Settings,
    broadcast_id: int,
    tier: int,
    *,
    stale_before: datetime | None = None,
    due_by: datetime | None = None,
    above_id: int = 0,
    channel: str | None = None,
) -> Iterator[tuple[ChannelName, list[int]]]:
    """Pending delivery ids of a tier on the channels where it has started (a channel still behind
    its gate sends nothing), cut into batches sized for each channel's provider."""
    from channels.registry import CHANNEL_CLASSES
    from dispatcher.ratelimit import batch_size

    started = select(BroadcastGate.channel).where(
        BroadcastGate.broadcast_id == broadcast_id,
        BroadcastGate.tier == tier,
        BroadcastGate.started_at.is_not(None),
    )
    query = select(Delivery.channel, Delivery.id).where(
        Delivery.broadcast_id == broadcast_id,
        Delivery.tier == tier,
        Delivery.state == State.PENDING.value,
        Delivery.channel.in_(started.scalar_subquery()),
    )
    if channel is not None:
        query = query.where(Delivery.channel == channel)
    if above_id:
        query = query.where(Delivery.id > above_id)
    if stale_before is not None:
        query = query.where(Delivery.updated_at < stale_before)
    if due_by is not None:
        query = query.where(Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= due_by))
    by_channel: dict[str, list[int]] = {}
    for name, delivery_id in session.execute(query.order_by(Delivery.channel, Delivery.id)):
        by_channel.setdefault(name, []).append(delivery_id)
    for channel_value, ids in by_channel.items():
        channel_name = ChannelName(channel_value)
        size = batch_size(channel_name, CHANNEL_CLASSES[channel_name].max_batch, settings)
        for start in range(0, len(ids), size):
            yield channel_name, ids[start : start + size]


def gate_snapshot(session: Session, broadcast_id: int, now: datetime) -> list[gates.Gate]:
    """The broadcast's gates as the rule sees them: from the gate rows, the tiers' planning state
    and the progress counters (never a scan of deliveries, except for rows in quiet hours)."""
    policy = session.scalar(select(Broadcast.policy).where(Broadcast.id == broadcast_id)) or {}
    planned = {t.tier: t.state != "planning" for t in tiers_of(session, broadcast_id)}
    outstanding: Counter[tuple[int, str]] = Counter()
    for tier, channel, n in session.execute(
        select(BroadcastCount.tier, BroadcastCount.channel, BroadcastCount.n).where(
            BroadcastCount.broadcast_id == broadcast_id,
            BroadcastCount.state.in_([State.PENDING.value, State.SENDING.value]),
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
    """Applies the gate rule (dispatcher/gates.py) to the broadcast: starts each tier on each
    channel whose turn has come and enqueues its rows, opens the gates that are accepted or timed
    out, keeps each tier's summary, and completes the broadcast once every gate is open and nothing
    is outstanding. Every step is a conditional UPDATE, so one caller wins it whoever gets there
    first. `timeout_tier` is accepted for callers of old; timeouts are read from the clock."""
    del timeout_tier
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
    for tier, channel in decision.starts:
        won = session.execute(
            update(BroadcastGate)
            .where(
                BroadcastGate.broadcast_id == broadcast_id,
                BroadcastGate.tier == tier,
                BroadcastGate.channel == channel,
                BroadcastGate.started_at.is_(None),
            )
            .values(started_at=now)
        ).rowcount
        if won:
            _dispatch_channel(session, settings, broadcast_id, tier, channel, outbox)
            started_tiers.add(tier)
    for tier, channel, reason in decision.opens:
        session.execute(
            update(BroadcastGate)
            .where(
                BroadcastGate.broadcast_id == broadcast_id,
                BroadcastGate.tier == tier,
                BroadcastGate.channel == channel,
                BroadcastGate.opened_by.is_(None),
            )
            .values(opened_by=reason.value, opened_at=now)
        )
    for tier in sorted(started_tiers):  # a gate that is not accepted opens by timeout, checked then
        gate_in = settings.tier_delay_s.get(tier, 0.0) + settings.tier_gate_timeout_s
        outbox.add("dispatcher.check_gate", [broadcast_id, tier], "control", gate_in)
    if decision.starts or decision.opens:
        session.flush()
        snapshot = gate_snapshot(session, broadcast_id, now)
    _summarize_tiers(session, broadcast_id, snapshot, now)
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
        if starts and tier_row.state == "planned":
            values["state"] = "sending"
        opened = gates.tier_gate(tier_gates)
        if opened is not None and tier_row.state in ("planned", "sending"):
            values |= {"state": "done", "gate": opened.value}
        settled = tier_row.outstanding <= 0 and tier_row.state != "planning"
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
                Delivery.state == State.PENDING.value,
                Delivery.last_error_code == QUIET_HOURS_CODE,
                Delivery.next_attempt_at > now,
            )
            .group_by(Delivery.tier, Delivery.channel)
        )
    }


def gate_timed_out(
    session: Session, settings: Settings, broadcast_id: int, tier: int, outbox: Outbox
) -> None:
    """A tier's gate timeout came round (its countdown, or the sweeper's pass): apply the gates,
    which open every channel of it that has been started for longer than the timeout."""
    del tier
    check_gates(session, settings, broadcast_id, outbox)
