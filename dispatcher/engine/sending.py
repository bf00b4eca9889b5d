"""Sending one batch: claim the rows, call the provider through its adapter, record what happened.

A task only acts on rows it claims (pending -> sending, atomically), so a task delivered twice sends
nothing twice. The claim carries a lease: a worker killed mid-batch leaves rows in `sending` that
the sweeper returns to `pending` after the lease, marked as possible duplicates (the provider may
have accepted them before the kill). That window, between the provider's answer and our commit, is
the only place a duplicate can come from.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from math import ceil, inf
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from channels.base import INTERNAL_ERROR, Channel, ChannelName, Failure, Outcome, Recipient, Variant
from config import Settings
from dispatcher.domain.errors import ConfigurationError
from dispatcher.domain.retry import RetryPolicy
from dispatcher.domain.states import DeliveryState
from dispatcher.engine import journal, provider_metrics, suppressions
from dispatcher.engine.breaker import Breaker
from dispatcher.engine.clock import utcnow
from dispatcher.engine.outbox import URGENT_TIER, Outbox
from dispatcher.engine.ratelimit import AT_ONCE_HOLD_S, Pacer, RateLimiter, bucket_for
from dispatcher.engine.status_reports import reapply_parked
from dispatcher.engine.tier_gates import check_gates
from dispatcher.engine.transitions import (
    RETURNING,
    Moved,
    Note,
    event_row,
    record_events,
    set_details,
    transition,
)
from dispatcher.engine.variants import stored_variant
from dispatcher.store.bulk import id_in, on_postgres
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastSends, BroadcastTier, Delivery, Subscriber
from dispatcher.store.per_process import PerProcess
from dispatcher.store.redis_client import get_redis

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What a send needs, built once per worker process."""

    settings: Settings
    database: Database
    adapters: dict[ChannelName, Channel]
    limiter: RateLimiter
    breaker: Breaker
    retry: RetryPolicy


def build_services(settings: Settings, database: Database) -> Services:
    from channels.registry import build_channels

    client = get_redis(settings)
    return Services(
        settings=settings,
        database=database,
        adapters=build_channels(settings),
        limiter=RateLimiter(client, settings.rate_headroom),
        breaker=Breaker(client, settings),
        retry=RetryPolicy(settings.retry_max_attempts, settings.retry_base_s, settings.retry_cap_s),
    )


SERVICES: PerProcess[tuple[int, int], Services] = PerProcess()


def services(settings: Settings, database: Database) -> Services:
    """This process's services for these settings and database, built once (SDK clients, pools);
    the cached value keeps both alive, so their ids stay theirs."""
    return SERVICES.get((id(settings), id(database)), lambda: build_services(settings, database))


@lru_cache(maxsize=1024)
def _variant_json(database: Database, broadcast_id: int, channel: str, locale: str) -> dict[str, Any] | None:
    """Variants never change once rendered, so each process reads each one once. `locale` is the
    delivery's variant key; a key with no variant (a broadcast from before keys had zones) reads
    the same language in UTC, then the default language."""
    with database.session() as session:
        found = stored_variant(session, broadcast_id, channel, locale)
        return found[1] if found is not None else None


def load_variant(services: Services, broadcast_id: int, channel: ChannelName, locale: str) -> Variant:
    data = _variant_json(services.database, broadcast_id, channel.value, locale)
    if data is None:
        raise LookupError(f"broadcast {broadcast_id} has no {channel.value} variant")
    return services.adapters[channel].load_variant(data)


EARLY_SLACK = timedelta(seconds=1)
# Answers that do not say whether the provider took the message: the send stays counted.
UNKNOWN_CODES = frozenset({"timeout", "connection"})
_DB_ERRORS = (OperationalError, InterfaceError)


def send_batch(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    ids: list[int],
    slots: dict[int, tuple[int, float]] | None = None,
    at_once: bool = False,
) -> int:
    """Sends the claimable rows among `ids`; returns how many were claimed. `slots`: rate-limit
    slots an earlier run kept for some of them (engine/ratelimit.py, `Pacer.kept`); `at_once`: the
    task came from the urgent lane's queue, so it sleeps for no slot (it keeps it and comes back)."""
    provider = _provider(channel)
    if services.breaker.is_open(provider):
        defer_while_open(services, broadcast_id, channel, ids, provider)
        return 0
    token = uuid.uuid4().hex
    try:
        rows, people = claim_rows(services, ids, token)
    except _DB_ERRORS:
        # The claim may have committed unheard: if so its rows wait in `sending`, counted, never
        # sent. Saying so lets the sweeper hand them back uncounted, where the lease would send them
        # again counted twice (one copy against `sends` 2, the drill's "counted, not received").
        _keep(services, broadcast_id, channel, token, [Outcome.no_slot(i) for i in ids], only_new=True)
        raise
    if not rows:
        return 0
    hold = AT_ONCE_HOLD_S if at_once else inf
    outcomes, reserved = _call_provider(services, broadcast_id, channel, rows, people, slots or {}, hold)
    kept_ids = [o.delivery_id for o in outcomes]
    # every answer, "no slot" too: a hand-back the database refuses is then the sweeper's to finish
    kept = bool(outcomes) and _keep(services, broadcast_id, channel, token, outcomes)
    rows, outcomes = hand_back_unslotted(services, broadcast_id, channel, rows, outcomes, token, reserved)
    retryable = sum(1 for o in outcomes if o.failure is Failure.RETRYABLE and o.code != INTERNAL_ERROR)
    try:  # advisory: losing one sample must never keep the outcomes from being recorded
        services.breaker.record(provider, successes=sum(o.accepted for o in outcomes), failures=retryable)
    except redis.RedisError:
        log.warning("could not update the %s breaker", provider, exc_info=True)
    try:
        record_with_retry(services, broadcast_id, channel, rows, outcomes, token)
    except _DB_ERRORS:
        if not kept:
            raise
        log.warning("%d answers kept in Redis until the database returns", len(outcomes), exc_info=True)
        return len(rows)
    if kept:
        journal.forget(get_redis(services.settings), services.settings, kept_ids)
    # status reports that beat the recording of these rows (engine/status_reports.py)
    reapply_parked(services.database, services.settings, broadcast_id, ids)
    return len(rows)


def claim_rows(
    services: Services, ids: list[int], token: str
) -> tuple[list[Moved], dict[int, tuple[str | None, str | None]]]:
    """pending -> sending, raising each row's `sends` in the same transaction: no message reaches a
    provider without being counted first. The claim's token lets a worker whose commit was cut off
    (the database committed, the connection died before it said so) find the rows it does hold,
    rather than leave them to the lease and send them after it, counted twice."""
    deadline = time.monotonic() + services.settings.lease_s / 2
    delay = 0.2
    while True:
        try:
            return _claim(services, ids, token)
        except _DB_ERRORS:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("claiming %d rows failed; checking what was claimed", len(ids), exc_info=True)
        while True:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                with services.database.session() as session:
                    held = _moved_rows(session, ids, Delivery.claim == token, DeliveryState.SENDING)
                    if held:
                        return held, _people(session, held)
                break  # nothing committed: claim again
            except _DB_ERRORS:
                if time.monotonic() + delay > deadline:
                    raise


def _claim(
    services: Services, ids: list[int], token: str
) -> tuple[list[Moved], dict[int, tuple[str | None, str | None]]]:
    now = utcnow()
    with services.database.session() as session:
        rows = transition(
            session,
            ids,
            expect=DeliveryState.PENDING,
            to=DeliveryState.SENDING,
            now=now,
            values={
                "attempts": Delivery.attempts + 1,
                "sends": Delivery.sends + 1,
                "claim": token,
                "lease_until": now + timedelta(seconds=services.settings.lease_s),
                "next_attempt_at": None,
            },
            # A row due later (quiet hours) is left for the task that is due then. The second of slack
            # keeps a retry or breaker task whose timer fires a hair early from finding nothing to send.
            where=Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= now + EARLY_SLACK),
            kind="claim",
        )
        people = _people(session, rows)
        _count_sends(session, rows, +1)
        return rows, people


def _count_sends(session: Session, rows: list[Moved], sign: int) -> None:
    """Moves the per tier and channel send totals with their rows' `sends` (each row's value after
    a claim raised it, or `sign` -1 with the value after a refusal lowered it). Called last in its
    transaction, in a fixed order, so claims and recordings never wait on each other for it."""
    totals: dict[tuple[int, int, str], list[int]] = defaultdict(lambda: [0, 0])
    for m in rows:
        # the send beyond the first (and beyond the deliberate resends) came or went
        extra = m.sends > 1 + m.resends if sign > 0 else m.sends >= 1 + m.resends
        totals[(m.broadcast_id, m.tier, m.channel)][0] += sign
        totals[(m.broadcast_id, m.tier, m.channel)][1] += sign if extra else 0
    insert = postgresql.insert if on_postgres(session) else sqlite.insert
    for (broadcast_id, tier, channel), (n, extra_n) in sorted(totals.items()):
        stmt = insert(BroadcastSends).values(
            broadcast_id=broadcast_id, tier=tier, channel=channel, sends=n, extra_sends=extra_n
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["broadcast_id", "tier", "channel"],
            set_={
                "sends": BroadcastSends.sends + stmt.excluded.sends,
                "extra_sends": BroadcastSends.extra_sends + stmt.excluded.extra_sends,
            },
        )
        session.execute(stmt)


def _moved_rows(session: Session, ids: list[int], where: Any, *states: DeliveryState) -> list[Moved]:
    query = select(*RETURNING).where(
        id_in(session, Delivery.id, ids), Delivery.state.in_([s.value for s in states])
    )
    return [Moved._make(row) for row in session.execute(query.where(where).order_by(Delivery.id))]


def _keep(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    token: str,
    outcomes: list[Outcome],
    only_new: bool = False,
) -> bool:
    """The answers, kept in Redis before recording (see dispatcher/engine/journal.py); `only_new`
    never replaces an answer another claim kept for the same row."""
    try:
        client = get_redis(services.settings)
    except ConfigurationError:  # no Redis configured: nothing to keep them in
        return False
    if journal.keep(client, services.settings, broadcast_id, channel, token, outcomes, only_new=only_new):
        return True
    log.warning("could not keep %d answers in Redis; recording them directly", len(outcomes))
    return False


# ---- pacing: hand back the rows the rate limit had no slot for ------------------------------------


def hand_back_unslotted(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    rows: list[Moved],
    outcomes: list[Outcome],
    claim: str,
    slots: dict[int, list[float]] | None = None,
) -> tuple[list[Moved], list[Outcome]]:
    """Rows whose request found no rate-limit slot in the batch's window were never sent: they go
    back to pending as they were (the claim's attempt and counted send undone, no error recorded),
    due at their pool's booked turn (or at their kept slot in `slots`, which their task carries), with one
    countdown task per moment; the rest (sent or failed) are returned to record."""
    waiting = [o for o in outcomes if o.failure is Failure.NO_SLOT]
    if not waiting:
        return rows, outcomes
    by_id = {r.id: r for r in rows}
    back_ids = {o.delivery_id for o in waiting}
    groups: dict[int, list[int]] = defaultdict(list)  # countdown in tenths of a second -> ids
    for outcome in waiting:
        groups[round((outcome.retry_after or 0.0) * 10)].append(outcome.delivery_id)
    _with_db_retry(
        services,
        lambda: _hand_back(services, broadcast_id, channel, by_id, groups, claim, slots or {}),
        "handing back unslotted rows",
    )
    kept = [r for r in rows if r.id not in back_ids]
    return kept, [o for o in outcomes if o.delivery_id not in back_ids]


def _hand_back(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    by_id: dict[int, Moved],
    groups: dict[int, list[int]],
    claim: str,
    slots: dict[int, list[float]],
    kind: str = "no_slot",
) -> None:
    """Back to pending, the claim's attempt and counted send undone, only for rows `claim` holds;
    `groups` maps a countdown in tenths of a second to its rows."""
    now = utcnow()
    outbox = Outbox()
    unsent: list[Moved] = []
    with services.database.session() as session:
        for tenths, ids in sorted(groups.items()):
            countdown = tenths / 10
            back = transition(
                session,
                ids,
                expect=DeliveryState.SENDING,
                to=DeliveryState.PENDING,
                now=now,
                values={
                    "attempts": Delivery.attempts - 1,
                    **_unsent(True),
                    "lease_until": None,
                    "next_attempt_at": now + timedelta(seconds=countdown) if countdown else None,
                },
                where=Delivery.claim == claim,  # only rows this claim still holds
                kind=kind,
            )
            unsent += back
            if back:
                tier = min(by_id[m.id].tier for m in back)
                carried = {m.id: slots[m.id] for m in back if m.id in slots}
                outbox.send_batch(broadcast_id, channel, [m.id for m in back], tier, countdown, carried)
        _count_sends(session, unsent, -1)
    # Never fail here for the broker: the batch's sent rows are recorded after this, and a task that
    # raised now would leave them `sending` until the lease sends them again (Redis killed mid-broadcast
    # sent four SMS twice). The handed-back rows are pending: the sweeper queues them if this could not.
    outbox.hand_off()


def _with_db_retry(services: Services, step: Callable[[], None], what: str) -> None:
    """Retries an idempotent (conditional) database step through a blip or a deadlock, for up to
    half a lease: giving up sooner leaves rows in `sending` for the sweeper to send again."""
    deadline = time.monotonic() + services.settings.lease_s / 2
    delay = 0.2
    while True:
        try:
            step()
            return
        except _DB_ERRORS:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed; retrying in %.1fs", what, delay, exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def record_with_retry(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    rows: list[Moved],
    outcomes: list[Outcome],
    claim: str,
) -> None:
    """The provider has answered: retry the (idempotent) recording, so a database blip neither
    holds the answers in Redis longer than it must nor loses them."""
    _with_db_retry(
        services,
        lambda: record_outcomes(services, broadcast_id, channel, rows, outcomes, claim),
        f"recording {len(outcomes)} outcomes",
    )


def apply_kept_answers(services: Services) -> int:
    """Records every answer kept in Redis whose worker could not (database down, worker killed);
    the sweeper runs this before it expires any lease, so a row with a known answer is never
    sent again. Answers younger than a few seconds are left to the worker recording them (the
    sweeper leaves their leases alone meanwhile). Returns how many answers were applied."""
    client = get_redis(services.settings)
    grace = min(5.0, services.settings.lease_s / 4)
    now = time.time()
    kept = [k for k in journal.kept(client, services.settings) if now - k.kept_at >= grace]
    batches: dict[tuple[int, ChannelName, str], list[Outcome]] = defaultdict(list)
    for item in kept:
        batches[(item.broadcast_id, item.channel, item.claim)].append(item.outcome)
    applied = 0
    for (broadcast_id, channel, claim), outcomes in batches.items():
        ids = [o.delivery_id for o in outcomes]
        try:
            with services.database.session() as session:
                rows = _moved_rows(
                    session, ids, Delivery.id.isnot(None), DeliveryState.SENDING, DeliveryState.PENDING
                )
            found = {r.id: r for r in rows}
            unsent = sorted(
                o.delivery_id for o in outcomes if o.failure is Failure.NO_SLOT and o.delivery_id in found
            )
            if unsent:  # never sent (no slot, or a claim whose worker never heard it commit)
                _hand_back(services, broadcast_id, channel, found, {0: unsent}, claim, {}, kind="unsent")
            mine = [o for o in outcomes if o.delivery_id in found and o.failure is not Failure.NO_SLOT]
            record_outcomes(services, broadcast_id, channel, rows, mine, claim)
        except _DB_ERRORS:  # kept for the next sweep; the others need not wait for this one
            log.warning("recording %d kept answers failed", len(ids), exc_info=True)
            continue
        journal.forget(client, services.settings, ids)
        applied += len(ids)
        # status reports that arrived while these rows waited in `sending` (as send_batch does)
        reapply_parked(services.database, services.settings, broadcast_id, ids)
    return applied


def defer_while_open(
    services: Services, broadcast_id: int, channel: ChannelName, ids: list[int], provider: str
) -> None:
    """The provider's breaker is open: nothing is attempted (so no attempt is counted); the batch
    comes back when it closes, and recipients in failover tiers are reached on their next channel now."""
    wait = max(1.0, services.breaker.open_for(provider))
    now = utcnow()
    outbox = Outbox()
    with services.database.session() as session:
        pending = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.state == DeliveryState.PENDING.value)
            .values(
                next_attempt_at=now + timedelta(seconds=wait),
                updated_at=now,
                last_error_code="breaker_open",
                last_error=f"{provider} circuit breaker open",
            )
            .returning(*RETURNING)
        ).all()
        deferred = [Moved._make(row) for row in pending]
        note = Note("breaker_open", f"{provider} circuit breaker open")
        pending_state = DeliveryState.PENDING.value
        record_events(
            session, [event_row(m.id, now, "deferred", pending_state, pending_state, note) for m in deferred]
        )
        for moved in deferred:
            if moved.tier in services.settings.failover_tiers:
                fail_over(session, services, moved, channel, outbox)
        if deferred:
            tier = min(m.tier for m in deferred)
            outbox.send_batch(broadcast_id, channel, [m.id for m in deferred], tier, wait)
    outbox.flush()


def _provider(channel: ChannelName) -> str:
    from channels.registry import provider_for

    return provider_for(channel)


def _people(session: Session, rows: list[Moved]) -> dict[int, tuple[str | None, str | None]]:
    ids = {r.subscriber_id for r in rows if r.subscriber_id is not None}
    if not ids:
        return {}
    found = session.execute(
        select(Subscriber.id, Subscriber.name, Subscriber.unsubscribe_token).where(
            id_in(session, Subscriber.id, ids)
        )
    )
    return {sid: (name, token) for sid, name, token in found}


def _call_provider(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    rows: list[Moved],
    people: dict[int, tuple[str | None, str | None]],
    slots: dict[int, tuple[int, float]],
    hold: float,
) -> tuple[list[Outcome], dict[int, list[float]]]:
    """The provider's answers, and the rate-limit slots kept for rows handed back (by delivery id)."""
    adapter = services.adapters[channel]
    urgent = min(r.tier for r in rows) == URGENT_TIER
    pacer = Pacer(
        channel, services.limiter, services.settings, urgent, hold=hold, kept=dict(slots), requests=len(rows)
    )
    waited: list[float] = []

    def throttle(recipient: Recipient) -> str | None:
        started = time.perf_counter()
        try:
            return pacer(recipient)
        finally:
            waited.append(time.perf_counter() - started)

    batch_started = time.perf_counter()
    by_locale: dict[str, list[Moved]] = defaultdict(list)
    for row in rows:
        by_locale[row.locale].append(row)
    outcomes: list[Outcome] = []
    for locale, group in by_locale.items():
        recipients = [
            Recipient(r.id, r.address, *people.get(r.subscriber_id or -1, (None, None))) for r in group
        ]
        started = time.perf_counter()
        try:  # the variant's first read is a query: the database down here sends nothing, refused
            variant = load_variant(services, broadcast_id, channel, locale)
            got = adapter.send(variant, recipients, throttle)
            _log_calls(channel, broadcast_id, recipients, got, (time.perf_counter() - started) * 1000)
            outcomes.extend(got)
        except Exception as exc:  # Redis/DB down in the throttle, or an adapter bug: never strand rows
            log.exception("sending %s failed before the provider answered", channel.value)
            outcomes.extend(
                Outcome.failed(r.id, Failure.RETRYABLE, code=INTERNAL_ERROR, error=repr(exc)[:500])
                for r in group
            )
    reserved: dict[int, list[float]] = {}
    if pacer.refused:
        outcomes, reserved = _with_comebacks(services, channel, rows, people, outcomes, pacer)
    sent = sum(1 for o in outcomes if o.failure is not Failure.NO_SLOT)
    _count(services, channel, sent, time.perf_counter() - batch_started, waited)
    return outcomes, reserved


def _with_comebacks(
    services: Services,
    channel: ChannelName,
    rows: list[Moved],
    people: dict[int, tuple[str | None, str | None]],
    outcomes: list[Outcome],
    pacer: Pacer,
) -> tuple[list[Outcome], dict[int, list[float]]]:
    """Books each refused pool's turn; an unslotted outcome carries its countdown in `retry_after`
    (to its kept slot, if it has one: returned by delivery id). If Redis fails here, the rows come
    back after one window rather than stay stranded."""
    try:
        turns = pacer.comebacks()
    except redis.RedisError:
        log.warning("could not book a %s turn", channel.value, exc_info=True)
        turns = {}
    kept = pacer.kept_slots()
    by_id = {r.id: r for r in rows}
    fallback = services.settings.rate_pace_window_s
    settled: list[Outcome] = []
    for outcome in outcomes:
        if outcome.failure is Failure.NO_SLOT:
            row = by_id[outcome.delivery_id]
            recipient = Recipient(row.id, row.address, *people.get(row.subscriber_id or -1, (None, None)))
            if outcome.delivery_id in kept:
                wait = kept[outcome.delivery_id][1]
            else:
                wait = turns.get(bucket_for(channel, recipient, services.settings), fallback)
            outcome = replace(outcome, retry_after=min(wait, services.settings.retry_cap_s))
        settled.append(outcome)
    return settled, {i: slot for i, (slot, _) in kept.items()}


def _count(
    services: Services, channel: ChannelName, recipients: int, seconds: float, waited: list[float]
) -> None:
    """Adds the batch to the provider's totals for /metrics; advisory, so a Redis error is only logged.
    Call time excludes rate-limit waits (they overlap across threads, so this is an approximation)."""
    wait_seconds = sum(waited)
    try:
        provider_metrics.record(
            get_redis(services.settings),
            services.settings,
            _provider(channel),
            recipients=recipients,
            call_seconds=max(0.0, seconds - wait_seconds / max(1, services.settings.send_concurrency)),
            waits=sum(1 for w in waited if w > 0.001),
            wait_seconds=wait_seconds,
        )
    except redis.RedisError:
        log.warning("could not record %s stats", channel.value, exc_info=True)


def _log_calls(
    channel: ChannelName, broadcast_id: int, recipients: list[Recipient], outcomes: list[Outcome], ms: float
) -> None:
    """One JSON line per recipient's provider answer; addresses are masked by the log formatter."""
    provider = _provider(channel)
    for recipient, outcome in zip(recipients, outcomes, strict=False):
        result = "accepted" if outcome.accepted else str(outcome.failure)
        log.info(
            "%s %s to %s: %s",
            provider,
            channel.value,
            recipient.address,
            result,
            extra={
                "provider": provider,
                "channel": channel.value,
                "broadcast_id": broadcast_id,
                "delivery_id": recipient.delivery_id,
                "outcome": result,
                "code": outcome.code,
                "provider_message_id": outcome.provider_message_id,
                "duration_ms": round(ms, 1),
            },
        )


def record_outcomes(
    services: Services,
    broadcast_id: int,
    channel: ChannelName,
    rows: list[Moved],
    outcomes: list[Outcome],
    claim: str,
) -> None:
    """One transaction: states, counters, tier gates, retries and failovers; tasks after commit.

    An accepted answer moves its row to sent whether the row is still in `sending` or its lease
    expired meanwhile (back in `pending`): a row the provider took is never sent again for a lease
    that ran out while its answer was being recorded. A refusal applies only to the claim that
    sent it (a later claim's send is still in flight) and lowers the row's `sends`, since the
    provider said it took nothing; an answer that does not say (a timeout) leaves it counted."""
    settings = services.settings
    by_id = {r.id: r for r in rows}
    now = utcnow()
    accepted = [o for o in outcomes if o.accepted]
    retry_at: dict[tuple[int, bool], list[int]] = defaultdict(list)  # (delay s, refused) -> ids
    final: dict[tuple[DeliveryState, bool], list[Outcome]] = defaultdict(list)
    details: list[dict[str, Any]] = []
    notes = {
        o.delivery_id: Note(
            o.code,
            o.error,
            attempt=by_id[o.delivery_id].attempts,
            accepted=o.accepted,
            provider_message_id=o.provider_message_id,
        )
        for o in outcomes
        if o.delivery_id in by_id
    }
    # A request-level message id (SendGrid's: one for up to 1,000 rows) is written with the state
    # change; per-message ids (Twilio's SIDs) follow in one UPDATE. Writing every row a second time
    # was a third of recording an email batch.
    by_message_id: dict[str | None, list[int]] = defaultdict(list)
    for outcome in accepted:
        by_message_id[outcome.provider_message_id].append(outcome.delivery_id)
    shared = {mid: ids for mid, ids in by_message_id.items() if len(ids) > 1}
    singles = [o for o in accepted if len(by_message_id[o.provider_message_id]) == 1]
    for outcome in singles:
        details.append({"id": outcome.delivery_id, "provider_message_id": outcome.provider_message_id})
    for outcome in outcomes:
        if outcome.accepted:
            continue
        details.append(
            {
                "id": outcome.delivery_id,
                "last_error_code": outcome.code,
                "last_error": (outcome.error or "")[:2000],
            }
        )
        refused = outcome.code not in UNKNOWN_CODES
        attempts = by_id[outcome.delivery_id].attempts
        if outcome.code == INTERNAL_ERROR:
            delay: float | None = services.retry.backoff(attempts)
        else:
            delay = services.retry.decide(outcome, attempts)
        if delay is None:
            # the person said no (the adapter says so): suppressed, not failed
            state = DeliveryState.SUPPRESSED if outcome.recipient_refused else DeliveryState.FAILED
            final[(state, refused)].append(outcome)
        else:
            retry_at[(max(1, ceil(delay)), refused)].append(outcome.delivery_id)
    mine = Delivery.claim == claim
    unsent: list[Moved] = []  # refused sends, taken off the totals last
    outbox = Outbox()
    with services.database.session() as session:
        moved_ok = _to_sent(session, [o.delivery_id for o in singles], now, {}, notes)
        for message_id, ids in shared.items():
            moved = _to_sent(session, ids, now, {"provider_message_id": message_id}, notes)
            moved_ok += moved
            # A status webhook can move a row past `sent` before we record it: it still gets its id,
            # and its history the attempt (unless this answer was recorded before: a kept answer
            # applied again finds the id there).
            overtaken = sorted(set(ids) - {m.id for m in moved})
            details += [{"id": i, "provider_message_id": message_id} for i in overtaken]
            if overtaken:
                unrecorded = session.scalars(
                    select(Delivery.id).where(
                        id_in(session, Delivery.id, overtaken), Delivery.provider_message_id.is_(None)
                    )
                )
                record_events(
                    session, [event_row(i, now, "attempt", None, None, notes[i]) for i in unrecorded]
                )
        if moved_ok:
            tiers = sorted({m.tier for m in moved_ok})
            session.execute(
                update(BroadcastTier)
                .where(
                    BroadcastTier.broadcast_id == broadcast_id,
                    BroadcastTier.tier.in_(tiers),
                    BroadcastTier.first_accepted_at.is_(None),
                )
                .values(first_accepted_at=now)
            )
        for (delay, refused), ids in sorted(retry_at.items()):
            values: dict[str, Any] = {"next_attempt_at": now + timedelta(seconds=delay)}
            back = transition(
                session,
                ids,
                expect=DeliveryState.SENDING,
                to=DeliveryState.PENDING,
                now=now,
                values={**values, **_unsent(refused)},
                where=mine,
                kind="attempt",
                notes=notes,
            )
            unsent += back if refused else []
        for (state, refused), failed in final.items():
            gone = transition(
                session,
                [o.delivery_id for o in failed],
                expect=DeliveryState.SENDING,
                to=state,
                now=now,
                values=_unsent(refused),
                where=mine,
                kind="attempt",
                notes=notes,
            )
            unsent += gone if refused else []
            for moved in gone:
                if moved.tier in settings.failover_tiers:
                    fail_over(session, services, moved, channel, outbox)
        if retry_at:
            # Every row this claim put back gets its retry task, including those an earlier attempt of
            # this same recording committed without our hearing of it: else they wait for the sweeper.
            ours = {
                m.id: m
                for m in _moved_rows(
                    session, [i for ids in retry_at.values() for i in ids], mine, DeliveryState.PENDING
                )
            }
            for delay in sorted({d for d, _ in retry_at}):
                due = sorted(i for (d, _), ids in retry_at.items() if d == delay for i in ids if i in ours)
                if due:
                    tier = min(ours[i].tier for i in due)
                    outbox.send_batch(broadcast_id, channel, due, tier, delay)
        set_details(session, details)
        suppressions.from_outcomes(session, settings, rows, outcomes)  # adapters' suppressions, dead webhooks
        session.flush()
        check_gates(session, settings, broadcast_id, outbox)
        _count_sends(session, unsent, -1)
    outbox.flush()


def _to_sent(
    session: Session, ids: list[int], now: datetime, values: dict[str, Any], notes: dict[int, Note]
) -> list[Moved]:
    """Accepted: from `sending`, or from `pending` if the lease ran out before this answer was
    recorded (the sweeper's retry task then finds nothing to send)."""
    sent = DeliveryState.SENT
    moved = transition(
        session,
        ids,
        expect=DeliveryState.SENDING,
        to=sent,
        now=now,
        values=values,
        kind="attempt",
        notes=notes,
    )
    rest = sorted(set(ids) - {m.id for m in moved})
    if rest:
        late = {**values, "next_attempt_at": None}
        moved += transition(
            session,
            rest,
            expect=DeliveryState.PENDING,
            to=sent,
            now=now,
            values=late,
            kind="attempt",
            notes=notes,
        )
    return moved


def _unsent(refused: bool) -> dict[str, Any]:
    return {"sends": Delivery.sends - 1} if refused else {}


def fail_over(
    session: Session, services: Services, moved: Moved, failed: ChannelName, outbox: Outbox
) -> None:
    """Reaches the person on their next channel (not one they opted out of or that is suppressed);
    the new row points back at the failed one."""
    found = suppressions.insert_failover(session, services.adapters, moved, failed, planned=False)
    if found is not None:
        outbox.send_batch(moved.broadcast_id, found[0], [found[1]], moved.tier)
