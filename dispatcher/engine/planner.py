"""Planning a broadcast into delivery rows, a page of subscribers at a time, tier by tier.

- Tiers are planned in ascending order; each page is counted in the transaction that writes it and,
  once the tier's turn has come on a channel (dispatcher/engine/tier_gates.py), sent at once: the
  admins' messages leave before a 100,000-person customer list has even been read.
- The first tier is planned whole, in the broadcast's first task; every later tier a page per task,
  queued behind every urgent task, so no planning holds a worker that a second incident's admins need.
- What follows the first tier's last page (its gate check, queueing the next tier's planning) is a
  task of its own, queued behind that tier's batches: on the urgent lane it ran before them, and
  cost a second incident's first admin 40-115 ms (issue 11, traced at 100k).
- Who gets what on which channel is the pure rule in dispatcher/domain/audience.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from channels.base import ChannelName
from config import Settings
from dispatcher.domain import audience
from dispatcher.domain.quiet_hours import quiet_until
from dispatcher.domain.states import BroadcastState, DeliveryState, TierState
from dispatcher.domain.variant_key import VariantKey, reader_key
from dispatcher.engine.clock import utcnow
from dispatcher.engine.deliveries import QUIET_HOURS_CODE, delivery_row, insert_ignore
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.suppressions import suppress_planned
from dispatcher.engine.tier_gates import (
    check_gates,
    public_tier_of,
    start_due_channels,
    tiers_of,
    try_dispatch,
)
from dispatcher.engine.transitions import bump_counts
from dispatcher.engine.variants import (
    broadcast_locales,
    note_unknown_locale,
    readers_adapters,
    render_variants,
    stored_message,
)
from dispatcher.store.bulk import id_in
from dispatcher.store.db import Database
from dispatcher.store.models import (
    Broadcast,
    BroadcastTier,
    BroadcastVariant,
    Membership,
    Subscriber,
    SubscriberList,
)
from dispatcher.store.scope import may_share

PAGE = 5000
# A later tier's planning task writes this many pages, then hands the rest on (plan_tier).
PAGES_PER_TASK = 1


PLANNING_COLUMNS = (
    Subscriber.id,
    Subscriber.email,
    Subscriber.phone,
    Subscriber.slack_channel,
    Subscriber.webhook_url,
    Subscriber.channels,
    Subscriber.opt_outs,
    Subscriber.locale,
    Subscriber.timezone,  # with the locale, which variant the subscriber reads (domain/variant_key.py)
)
# Read only when the broadcast needs them: each is a JSON document to parse per subscriber, and
# parsing was a third of planning time for a 10k tier.
SCOPE_COLUMNS = (Subscriber.components, Subscriber.regions)
_QUIET_COLUMNS = (Subscriber.quiet_hours,)  # in the subscriber's zone, which is always read


def planning_columns(scoped: bool, respect_quiet: bool = False) -> tuple[Any, ...]:
    """The subscriber columns planning reads: the scope only for a scoped message, quiet hours only
    when the broadcast respects them. The preview's count (audience_count.py) reads the same."""
    return (
        *PLANNING_COLUMNS,
        *(SCOPE_COLUMNS if scoped else ()),
        *(_QUIET_COLUMNS if respect_quiet else ()),
    )


def targets_of(
    sub: Any, sending_on: Sequence[ChannelName], components: Sequence[str], regions: Sequence[str]
) -> list[audience.Target]:
    """One subscriber row's deliveries for a message scoped to `components`/`regions`: the pure rule
    on the row's plain values, shared with the preview's count. The row holds scope columns only
    when the message is scoped (planning_columns)."""
    scoped = bool(components or regions)
    return audience.broadcast_targets(
        sub.channels,
        sub.opt_outs,
        audience.addresses_of(sub),
        sending_on,
        wanted_components=sub.components if scoped else (),
        wanted_regions=sub.regions if scoped else (),
        components=components,
        regions=regions,
    )


def subscribers_in_tier(
    session: Session,
    tier: int,
    after_id: int,
    columns: Sequence[Any] = PLANNING_COLUMNS,
    components: Sequence[str] = (),
    regions: Sequence[str] = (),
) -> tuple[list[Any], int | None]:
    """One page of a tier's subscribers, in id order, as plain rows, and the id to go on from (None
    once the tier is read). For a scoped message only those whose scope may match are read
    (store/scope.py): a page may then hold none, and the tier still goes on from the cursor.

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
        return [], None
    rows = session.execute(
        select(*columns)
        .where(
            id_in(session, Subscriber.id, page),
            may_share(session, Subscriber.components, components),
            may_share(session, Subscriber.regions, regions),
        )
        .order_by(Subscriber.id)
    )
    return list(rows), page[-1]


def plan_pages(
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
    tasks (see plan_tier)."""
    with database.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        sending_on = [ChannelName(c) for c in broadcast.policy.get("channels", [])]
        message = broadcast.policy.get("scope", {})
        respect_quiet = bool(broadcast.policy.get("quiet_hours"))
        compensated = tier in broadcast.policy.get("compensation_tiers", [])
        contacts = broadcast.policy.get("contacts")
        internal = bool(broadcast.policy.get("internal"))
        languages = broadcast_locales(broadcast.policy)
    default = str(reader_key(settings.default_locale, None, languages, settings.default_locale))
    if internal:  # a public:false update: social is public, so it is never planned, whatever the policy
        sending_on = audience.internal_channels(sending_on)
    components, regions = message.get("components", []), message.get("regions", [])
    now = utcnow()
    if contacts is not None:  # a broadcast to named addresses (commander reminders), no subscribers
        rows = [
            delivery_row(broadcast_id, tier, ChannelName(channel), address, None, default, now)
            for channel, address in contacts
        ]
        _write_page(database, settings, broadcast_id, tier, rows)
    elif tier == public_tier:  # the social post: one language for everyone (DISPATCHER_PUBLIC_LOCALE)
        public = reader_key(settings.public_locale, None, languages, settings.default_locale)
        rows = [
            delivery_row(broadcast_id, tier, t.channel, t.address, None, str(public), now)
            for t in audience.public_targets(sending_on, internal=internal)
        ]
        if rows:
            ensure_rendered(database, settings, broadcast_id, {public}, public=True)
            _write_page(database, settings, broadcast_id, tier, rows)
    else:
        columns = planning_columns(bool(components or regions), respect_quiet)
        rendered = stored_keys(database, broadcast_id)
        pages = 0
        while True:
            if max_pages is not None and pages >= max_pages:
                return after  # the rest in a task of its own
            with database.session() as session:
                page, cursor = subscribers_in_tier(session, tier, after, columns, components, regions)
            if cursor is None:
                break
            pages += 1
            rows = []
            keys: set[VariantKey] = set()
            for sub in page:
                reached = targets_of(sub, sending_on, components, regions)
                if not reached:
                    continue
                key = reader_key(sub.locale, sub.timezone, languages, settings.default_locale, compensated)
                note_unknown_locale(sub.locale, key.locale)
                keys.add(key)
                locale = str(key)
                wait = quiet_until(now, sub.timezone, sub.quiet_hours) if respect_quiet else None
                for target in reached:
                    row = delivery_row(
                        broadcast_id, tier, target.channel, target.address, sub.id, locale, now
                    )
                    if wait is not None:
                        row |= {
                            "next_attempt_at": wait,
                            "last_error_code": QUIET_HOURS_CODE,
                            "last_error": f"waiting out quiet hours until {wait.isoformat()}",
                        }
                    rows.append(row)
            after = cursor
            # Rows whose variant is stored go at once; the rest once theirs is rendered (a few ms
            # a key), so a new language never delays the readers of one already rendered.
            new = keys - rendered
            if new:
                waiting = {str(k) for k in new}
                ready = [r for r in rows if r["locale"] not in waiting]
                if ready:
                    _write_page(database, settings, broadcast_id, tier, ready)
                ensure_rendered(database, settings, broadcast_id, new)
                rendered |= new
                rows = [r for r in rows if r["locale"] in waiting]
            _write_page(database, settings, broadcast_id, tier, rows)
    with database.session() as session:
        session.execute(
            update(BroadcastTier)
            .where(
                BroadcastTier.broadcast_id == broadcast_id,
                BroadcastTier.tier == tier,
                BroadcastTier.state == TierState.PLANNING,
            )
            .values(state=TierState.PLANNED)
        )
    return None


def stored_keys(database: Database, broadcast_id: int) -> set[VariantKey]:
    """The variant keys this broadcast has rendered so far (one indexed read per planning task)."""
    with database.session() as session:
        found = session.scalars(
            select(BroadcastVariant.locale).where(BroadcastVariant.broadcast_id == broadcast_id).distinct()
        )
        return {VariantKey.parse(k) for k in found}


def ensure_rendered(
    database: Database, settings: Settings, broadcast_id: int, keys: set[VariantKey], *, public: bool = False
) -> None:
    """Every variant these keys need is stored before a page that reads them is written (so before
    it can be sent): the first page to meet a language and zone renders it, once per channel."""
    from channels.registry import build_channels

    adapters = readers_adapters(build_channels(settings), public=public)
    with database.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast is not None
        message = stored_message(broadcast)
        if message is not None:  # one created before messages were kept reads the default variant
            render_variants(session, broadcast, message, adapters, settings, keys)


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
                Counter(
                    {(broadcast_id, tier, c, DeliveryState.PENDING.value): n for c, n in per_channel.items()}
                ),
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
            suppress_planned(session, settings, broadcast_id, tier, [row_id for row_id, _ in inserted])
    outbox.flush()


def run_broadcast(database: Database, settings: Settings, broadcast_id: int) -> None:
    """The broadcast's first task: claims it and plans its first tier (the admins)."""
    with database.session() as session:
        claimed = session.execute(
            update(Broadcast)
            .where(
                Broadcast.id == broadcast_id,
                Broadcast.state.in_([BroadcastState.QUEUED, BroadcastState.PLANNING]),
            )
            .values(state=BroadcastState.PLANNING)
        ).rowcount
        tiers = [t.tier for t in tiers_of(session, broadcast_id)]
    if claimed and tiers:
        plan_tier(database, settings, broadcast_id, tiers[0])


def plan_tier(database: Database, settings: Settings, broadcast_id: int, tier: int, after: int = 0) -> None:
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
    first = bool(tiers) and tier == tiers[0]
    sliced = None if first else PAGES_PER_TASK
    cursor = plan_pages(database, settings, broadcast_id, tier, public, after=after, max_pages=sliced)
    rest = Outbox()
    if cursor is not None:
        rest.plan_tier(broadcast_id, tier, cursor)
    elif first:  # the admins' batches are queued: this tier's tail goes behind them
        rest.finish_tier(broadcast_id, tier)
    if rest.items:
        rest.flush()
        return
    finish_tier(database, settings, broadcast_id, tier, tiers)


def finish_tier(
    database: Database, settings: Settings, broadcast_id: int, tier: int, tiers: Sequence[int] | None = None
) -> None:
    """After a tier's last page: dispatches what a gate opened meanwhile, and queues the next tier's
    planning (or, after the last tier, marks the broadcast sending and checks its gates). Safe to
    run again (a redelivered task): the dispatch watermark, the state's conditional UPDATE, and
    planning that inserts no row twice."""
    if tiers is None:
        with database.session() as session:
            tiers = [t.tier for t in tiers_of(session, broadcast_id)]
    following = next((t for t in tiers if t > tier), None)
    outbox = Outbox()
    with database.session() as session:
        try_dispatch(session, settings, broadcast_id, tier, outbox)
        if following is not None:
            outbox.plan_tier(broadcast_id, following)
        else:
            session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.state == BroadcastState.PLANNING)
                .values(state=BroadcastState.SENDING, planned_at=utcnow())
            )
            check_gates(session, settings, broadcast_id, outbox)
    outbox.flush()
