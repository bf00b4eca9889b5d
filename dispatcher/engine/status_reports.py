"""Providers' status reports applied to deliveries: the one path for webhooks and reconciliation.

A report (channels.base.StatusReport: from a Twilio callback, a SendGrid event, or a provider's
answer to a status query) names a delivery id, but that is only a claim. It applies only to a
delivery on that provider's channel, that was sent, whose recorded provider id is the report's
(the rule: domain/reports.py); anything else is ignored and counted by provider and reason,
for /metrics.

Providers report fast: a Twilio `delivered` or a SendGrid event often arrives before the worker has
recorded the send (a batch is recorded after its last provider call). Such a report, for a row still
`sending`, is parked in Redis and re-applied, checked the same way, right after the worker records
the batch (`reapply_parked`). Both sides write first and read second (park then re-check; commit
then read the parked reports), so at least one of them sees the other and no report falls between.
A parked report that never finds its row sent (the worker died; the row is sent again with a new
id) expires; reconciliation covers what it would have said.

Signature checks happen at the HTTP edge (dispatcher/api, with the provider's own check from
channels/*/webhook.py); this module trusts who sent a report, never what it claims. What a report
means (its state, whether it is a suppression) is the provider's parser's to say.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import redis
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from channels.base import ChannelName, StatusReport
from channels.registry import CHANNEL_CLASSES, PROVIDERS
from config import Settings
from dispatcher.domain.reports import IGNORED, Claim, Move, Row, Verdict, plan
from dispatcher.domain.states import DeliveryState
from dispatcher.engine import suppressions
from dispatcher.engine.clock import utcnow
from dispatcher.engine.transitions import Note, lock_tiers, set_details, transition
from dispatcher.store.bulk import id_and_text_in, id_in
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery
from dispatcher.store.redis_client import get_redis, key

log = logging.getLogger(__name__)

CHANNEL_OF = {provider: channel for channel, provider in PROVIDERS.items()}
REPORTED_STATES = tuple(
    s.value for s in DeliveryState if s not in (DeliveryState.PENDING, DeliveryState.SENDING)
)
MAX_ID = 2**63 - 1  # a larger "delivery id" is no row of ours (and would not fit the column)
PARKED_TTL_S = 900.0  # longer than any batch takes to record; shorter than reconciliation's wait


class Checked(NamedTuple):
    verdict: Verdict
    broadcast_id: int | None = None


def _claim(report: StatusReport) -> Claim:
    channel = CHANNEL_OF.get(report.provider)
    delivery_id = report.delivery_id if report.delivery_id and 0 < report.delivery_id <= MAX_ID else None
    return Claim(
        delivery_id,
        channel.value if channel else None,
        DeliveryState(report.state),
        report.provider_message_id,
    )


def _same_message(channel: str, recorded: str, reported: str) -> bool:
    return CHANNEL_CLASSES[ChannelName(channel)].same_message(recorded, reported)


def _rows(session: Session, ids: Sequence[int]) -> dict[int, Row]:
    found: dict[int, Row] = {}
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        query = select(
            Delivery.id, Delivery.state, Delivery.channel, Delivery.provider_message_id, Delivery.broadcast_id
        ).where(id_in(session, Delivery.id, chunk))
        for r in session.execute(query):
            found[r.id] = Row(DeliveryState(r.state), r.channel, r.provider_message_id, r.broadcast_id)
    return found


def apply_batch(
    session: Session, reports: Sequence[StatusReport], now: datetime | None = None
) -> list[Checked]:
    """Reports applied in bulk, ending where applying them one by one, in order, would (the rule is
    domain/reports.py's): one read of their rows, then one compare-and-set UPDATE per kind of move
    (on the state and provider id read, so a concurrent move is never overwritten), with the
    progress counters in the same transaction (transitions.transition). Rows another transaction
    moved in between are read again. Never writes a provider id: a valid signature proves who sent
    a report, not which row it is about."""
    now = now or utcnow()
    claims = [_claim(r) for r in reports]
    checked: list[Checked] = [Checked(Verdict.UNCHANGED)] * len(reports)
    todo = list(range(len(reports)))
    for _ in range(5):  # compare-and-set: what a concurrent move raced is read again
        ids = sorted({c.delivery_id for i in todo if (c := claims[i]).delivery_id and c.channel})
        rows = _rows(session, ids)
        for broadcast_id in sorted({r.broadcast_id for r in rows.values()}):  # in order, before any move
            lock_tiers(session, broadcast_id)
        verdicts, rounds = plan(rows, [claims[i] for i in todo], _same_message)
        for i, verdict in zip(todo, verdicts, strict=True):
            row = rows.get(claims[i].delivery_id or 0)
            checked[i] = Checked(verdict, row.broadcast_id if row else None)
        raced: set[int] = set()
        for moves in rounds:
            raced |= _apply_round(
                session, [m for m in moves if m.delivery_id not in raced], rows, todo, reports, now
            )
        todo = [i for i in todo if claims[i].delivery_id in raced]
        if not todo:
            break
    for i in todo:  # still racing after five reads: as one report at a time, left to a later report
        checked[i] = Checked(Verdict.UNCHANGED, checked[i].broadcast_id)
    return checked


def _apply_round(
    session: Session,
    moves: Sequence[Move],
    rows: dict[int, Row],
    todo: Sequence[int],
    reports: Sequence[StatusReport],
    now: datetime,
) -> set[int]:
    """One move per row, one UPDATE per (from, to); returns the rows that had moved under us."""
    groups: dict[tuple[DeliveryState, DeliveryState], list[Move]] = {}
    for move in moves:
        groups.setdefault((move.expect, move.to), []).append(move)
    raced: set[int] = set()
    for (expect, to), group in sorted(groups.items()):
        by_id = {m.delivery_id: reports[todo[m.report]] for m in group}
        pairs = [(m.delivery_id, rows[m.delivery_id].provider_message_id or "") for m in group]
        notes = {
            d: Note(r.error_code, r.error, provider_message_id=r.provider_message_id)
            for d, r in by_id.items()
        }
        moved = transition(
            session,
            sorted(by_id),
            expect=expect,
            to=to,
            now=now,
            where=id_and_text_in(session, (Delivery.id, Delivery.provider_message_id), pairs),
            kind="provider_report",
            notes=notes,
        )
        done = {m.id for m in moved}
        set_details(
            session,
            [
                {"id": d, "last_error_code": r.error_code, "last_error": r.error}
                for d, r in by_id.items()
                if d in done and (r.error_code or r.error)
            ],
        )
        raced |= set(by_id) - done
    return raced


def apply_reports(
    database: Database, settings: Settings, reports: Sequence[StatusReport], *, source: str = "webhook"
) -> list[Verdict]:
    """Applies reports in one transaction, re-checks the tiers they touch, parks those that came
    before their send was recorded, counts the ignored. Returns a verdict per report."""
    checked = _apply_all(database, reports)
    # An early `sent` (Twilio's, SendGrid's `processed`) says no more than the worker will record.
    checked = [
        Checked(Verdict.UNCHANGED, c.broadcast_id)
        if c.verdict is Verdict.NOT_RECORDED and r.state == DeliveryState.SENT.value
        else c
        for r, c in zip(reports, checked, strict=True)
    ]
    verdicts = [c.verdict for c in checked]
    early = [
        (r, c.broadcast_id)
        for r, c in zip(reports, checked, strict=True)
        if c.verdict is Verdict.NOT_RECORDED
    ]
    if early:
        _park(settings, early)
        # Re-check after parking: the worker may have recorded the send between our read and the park.
        again = _apply_all(database, [r for r, _ in early])
        settled = [
            (r, b) for (r, b), c in zip(early, again, strict=True) if c.verdict is not Verdict.NOT_RECORDED
        ]
        _unpark(settings, settled)
        by_report = dict(zip([id(r) for r, _ in early], again, strict=True))
        verdicts = [
            by_report[id(r)].verdict if id(r) in by_report else v
            for r, v in zip(reports, verdicts, strict=True)
        ]
    _count(settings, reports, verdicts, source)
    return verdicts


def _suppress(database: Database, reports: Sequence[StatusReport], verdicts: Sequence[Verdict]) -> None:
    """Bounces, spam reports, drops and dead numbers go on the suppression list, but only from
    reports that passed the checks: a misdirected report must not silence anyone."""
    checked = [
        r
        for r, v in zip(reports, verdicts, strict=True)
        if v in (Verdict.APPLIED, Verdict.UNCHANGED) and r.suppression
    ]
    if checked:
        with database.session() as session:
            suppressions.from_reports(session, checked)


def reapply_parked(
    database: Database, settings: Settings, broadcast_id: int, delivery_ids: Sequence[int]
) -> int:
    """Right after a batch is recorded: the reports that arrived while its rows were `sending`.
    Returns how many moved a row. Advisory: a Redis or database error is logged, not raised (the
    batch is recorded; reconciliation catches up)."""
    if not delivery_ids:
        return 0
    name = _parked_key(settings, broadcast_id)
    try:
        found = _parked_for(get_redis(settings), name, delivery_ids)
    except redis.RedisError:
        log.warning("could not read parked status reports", exc_info=True)
        return 0
    if not found:
        return 0
    reports = [StatusReport(*json.loads(v)) for _, v in found]
    try:
        checked = _apply_all(database, reports)
    except SQLAlchemyError:  # the batch is recorded; these stay parked until they expire
        log.warning("could not apply parked status reports", exc_info=True)
        return 0
    verdicts = [c.verdict for c in checked]
    done = [f for (f, _), v in zip(found, verdicts, strict=True) if v is not Verdict.NOT_RECORDED]
    kept = [(r, v) for r, v in zip(reports, verdicts, strict=True) if v is not Verdict.NOT_RECORDED]
    try:
        if done:
            get_redis(settings).hdel(name, *done)
    except redis.RedisError:
        log.warning("could not clear parked status reports", exc_info=True)
    _count(settings, [r for r, _ in kept], [v for _, v in kept], "parked")
    return sum(1 for v in verdicts if v is Verdict.APPLIED)


def _parked_for(client: redis.Redis, name: str, delivery_ids: Sequence[int]) -> list[tuple[str, bytes]]:
    """The parked reports of these rows. Only early reports are parked and they leave once applied,
    so the hash is usually empty or small: asking for every (row, state) of a batch, 6,000 fields
    for 1,000 emails, cost more than reading the few that are there."""
    size = client.hlen(name)
    if not size:
        return []
    fields = [f"{d}:{s}" for d in delivery_ids for s in REPORTED_STATES]
    if size < len(fields):
        wanted = set(fields)
        return [(f.decode(), v) for f, v in client.hgetall(name).items() if f.decode() in wanted]
    return [(f, v) for f, v in zip(fields, client.hmget(name, fields), strict=True) if v is not None]


def _apply_all(database: Database, reports: Sequence[StatusReport]) -> list[Checked]:
    """Applies and commits. No gate is checked after: a report moves only a row already recorded as
    sent (domain/reports.py `judge`: one still `sending` is parked), never a pending or sending one,
    and those are all a gate or a broadcast's completion counts. Re-checking every broadcast a batch
    touched was a third of the applier's time and lengthened its write transaction, which on SQLite
    is the one a commander's own write waits for (issue 17)."""
    now = utcnow()
    with database.session() as session:
        checked = apply_batch(session, reports, now)
    _suppress(database, reports, [c.verdict for c in checked])
    return checked


def _parked_key(settings: Settings, broadcast_id: int | None) -> str:
    return key("receipts", "parked", broadcast_id, settings=settings)


def _park(settings: Settings, early: Iterable[tuple[StatusReport, int | None]]) -> None:
    try:
        pipe = get_redis(settings).pipeline(transaction=False)
        for report, broadcast_id in early:
            name = _parked_key(settings, broadcast_id)
            pipe.hset(name, f"{report.delivery_id}:{report.state}", json.dumps(list(report)))
            pipe.expire(name, int(PARKED_TTL_S))
        pipe.execute()
    except redis.RedisError:
        log.warning("could not park early status reports", exc_info=True)


def _unpark(settings: Settings, settled: Iterable[tuple[StatusReport, int | None]]) -> None:
    try:
        pipe = get_redis(settings).pipeline(transaction=False)
        for report, broadcast_id in settled:
            pipe.hdel(_parked_key(settings, broadcast_id), f"{report.delivery_id}:{report.state}")
        pipe.execute()
    except redis.RedisError:
        log.warning("could not clear parked status reports", exc_info=True)


# counters for /metrics ------------------------------------------------------------------------------
def _stats_key(settings: Settings) -> str:
    return key("stats", "receipts", settings=settings)


def _count(
    settings: Settings, reports: Sequence[StatusReport], verdicts: Sequence[Verdict], source: str
) -> None:
    """Adds to the running totals: ignored by provider and reason, parked and applied by provider."""
    totals: Counter[str] = Counter()
    for report, verdict in zip(reports, verdicts, strict=True):
        if verdict in IGNORED:
            totals[f"ignored|{report.provider}|{verdict.value}"] += 1
            log.info(
                "ignored a %s status report for delivery %s: %s",
                report.provider,
                report.delivery_id,
                verdict.value,
                extra={
                    "provider": report.provider,
                    "delivery_id": report.delivery_id,
                    "reason": verdict.value,
                },
            )
        elif verdict is Verdict.NOT_RECORDED:
            totals[f"parked|{report.provider}|-"] += 1
        elif verdict is Verdict.APPLIED:
            totals[f"applied|{report.provider}|{source}"] += 1
    if not totals:
        return
    try:
        pipe = get_redis(settings).pipeline(transaction=False)
        for field, n in totals.items():
            pipe.hincrby(_stats_key(settings), field, n)
        pipe.execute()
    except redis.RedisError:
        log.warning("could not count status reports", exc_info=True)


def count_asked(settings: Settings, provider: str, asked: int) -> None:
    """Reconciliation's status queries, per provider."""
    try:
        get_redis(settings).hincrby(_stats_key(settings), f"asked|{provider}|-", asked)
    except redis.RedisError:
        log.warning("could not count status queries", exc_info=True)


def read_stats(client: redis.Redis, settings: Settings) -> dict[tuple[str, str, str], int]:
    """(kind, provider, detail) -> count; kinds: ignored (detail: reason), parked, applied (detail:
    webhook, parked, reconcile), asked."""
    raw = client.hgetall(_stats_key(settings))
    out: dict[tuple[str, str, str], int] = {}
    for field, value in raw.items():
        kind, provider, detail = field.decode().split("|", 2)
        out[(kind, provider, detail)] = int(value)
    return out
