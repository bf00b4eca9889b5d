"""Moving deliveries between states (dispatcher/domain/states.py), and the progress counters that
move with them.

Every change is a conditional UPDATE on the state the caller expects, with RETURNING, so a task
delivered twice, a webhook arriving twice or out of order, or a sweeper racing a slow worker can
never move a row twice or count it twice. Counters and each tier's `outstanding` (rows not yet
accepted nor final) change in the same transaction as the rows, so progress reads are O(tiers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dispatcher.domain.states import UNACCEPTED, DeliveryState
from dispatcher.store.bulk import id_in, insert_rows, update_rows
from dispatcher.store.models import BroadcastCount, BroadcastTier, Delivery, DeliveryEvent

_TIERS_HELD = "tiers_locked"  # session.info: (the transaction, broadcast ids whose tiers it holds)

_TIMESTAMP = {
    DeliveryState.SENDING: "sending_at",
    DeliveryState.SENT: "sent_at",
    DeliveryState.DELIVERED: "delivered_at",
    **{
        s: "final_at"
        for s in (
            DeliveryState.FAILED,
            DeliveryState.BOUNCED,
            DeliveryState.UNDELIVERED,
            DeliveryState.SUPPRESSED,
        )
    },
}


class Moved(NamedTuple):
    """A row a transition actually moved (a NamedTuple: thousands are built per batch, and a frozen
    dataclass costs several times more to construct)."""

    id: int
    broadcast_id: int
    tier: int
    channel: str
    address: str
    locale: str
    subscriber_id: int | None
    attempts: int
    sends: int
    resends: int = 0  # deliberate resends (see Delivery.resends)


RETURNING = (
    Delivery.id,
    Delivery.broadcast_id,
    Delivery.tier,
    Delivery.channel,
    Delivery.address,
    Delivery.locale,
    Delivery.subscriber_id,
    Delivery.attempts,
    Delivery.sends,
    Delivery.resends,
)


def _moved(rows: Iterable[Row[Any]]) -> list[Moved]:
    return [Moved._make(row) for row in rows]


class Note(NamedTuple):
    """What a delivery's history keeps beside one move: the provider's code and message, and for a
    provider's answer the attempt it answered, whether it took the message and its id."""

    code: str | None = None
    message: str | None = None
    attempt: int | None = None
    accepted: bool | None = None
    provider_message_id: str | None = None


MESSAGE_LIMIT = 2000


def event_row(
    delivery_id: int, at: datetime, kind: str, old: str | None, new: str | None, note: Note
) -> dict[str, Any]:
    """One `delivery_events` row (the table is append-only: nothing updates or deletes one)."""
    return {
        "delivery_id": delivery_id,
        "at": at,
        "kind": kind,
        "from_state": old,
        "to_state": new,
        "code": note.code,
        "message": note.message[:MESSAGE_LIMIT] if note.message else note.message,
        "attempt": note.attempt,
        "accepted": note.accepted,
        "provider_message_id": note.provider_message_id,
    }


def record_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Appends history rows in one statement (see store/bulk.py)."""
    insert_rows(session, DeliveryEvent.__table__, rows)


def _default_note(values: dict[str, Any]) -> Note:
    """The code and message a move sets for every row it moves (a provider report's, a breaker's)."""
    code, message = values.get("last_error_code"), values.get("last_error")
    return Note(code if isinstance(code, str) else None, message if isinstance(message, str) else None)


def transition(
    session: Session,
    ids: Sequence[int],
    *,
    expect: DeliveryState,
    to: DeliveryState,
    now: datetime,
    values: dict[str, Any] | None = None,
    where: ColumnElement[bool] | None = None,
    kind: str = "transition",
    notes: Mapping[int, Note] | None = None,
) -> list[Moved]:
    """Moves the rows among `ids` that are in `expect` (and match `where`) to `to`; returns exactly
    those it moved. Each move is appended to the rows' history (`delivery_events`) in the same
    transaction, one INSERT per chunk: `kind` says why, `notes` add a row's provider answer (else the
    code and message in `values`, if any)."""
    if not ids:
        return []
    changes: dict[str, Any] = {"state": to.value, "updated_at": now, **(values or {})}
    if to in _TIMESTAMP:
        changes[_TIMESTAMP[to]] = now
    common = _default_note(changes)
    notes = notes or {}
    moved: list[Moved] = []
    for start in range(0, len(ids), 2000):  # keep the IN list within every driver's limits
        chunk = list(ids[start : start + 2000])
        query = update(Delivery).where(id_in(session, Delivery.id, chunk), Delivery.state == expect.value)
        if where is not None:
            query = query.where(where)
        result = session.execute(query.values(**changes).returning(*RETURNING))
        these = _moved(result)
        record_events(
            session,
            [event_row(m.id, now, kind, expect.value, to.value, notes.get(m.id, common)) for m in these],
        )
        moved.extend(these)
    count_moves(session, [(m.broadcast_id, m.tier, m.channel) for m in moved], expect, to)
    return moved


def count_moves(
    session: Session, keys: Sequence[tuple[int, int, str]], old: DeliveryState | None, new: DeliveryState
) -> None:
    """Applies counter deltas (and tier `outstanding`) for rows moved from `old` to `new`."""
    if not keys:
        return
    deltas: Counter[tuple[int, int, str, str]] = Counter()
    left_unaccepted: Counter[tuple[int, int]] = Counter()
    for broadcast_id, tier, channel in keys:
        if old is not None:
            deltas[(broadcast_id, tier, channel, old.value)] -= 1
        deltas[(broadcast_id, tier, channel, new.value)] += 1
        if old in UNACCEPTED and new not in UNACCEPTED:
            left_unaccepted[(broadcast_id, tier)] += 1
        elif old is not None and old not in UNACCEPTED and new in UNACCEPTED:
            left_unaccepted[(broadcast_id, tier)] -= 1  # a commander's retry or resend: outstanding again
    bump_counts(session, deltas)  # which locks the broadcasts' tiers first
    for (broadcast_id, tier), n in sorted(left_unaccepted.items()):
        if n:
            session.execute(
                update(BroadcastTier)
                .where(BroadcastTier.broadcast_id == broadcast_id, BroadcastTier.tier == tier)
                .values(outstanding=BroadcastTier.outstanding - n)
            )


def lock_tiers(session: Session, broadcast_id: int) -> None:
    """Locks every tier row of the broadcast, in tier order, once per transaction: the first thing
    any transaction does to a broadcast's counters, tiers or gates (a claim, a recording, a report
    applied, a gate check, a tier's dispatch). Each once took only the rows it wrote, in its own
    order: a recording held its tier and the gates it opened, then wanted the next tier's row, which
    the planner's dispatch of that tier held while it wanted those gates; two recordings of mixed
    outcomes moved their counters in several sorted steps, and each held one the other wanted.
    PostgreSQL broke every cycle after its one-second deadlock timeout (1-4 times in each run of the
    issue's flood, in the urgent lane too) and one side was retried. On SQLite, which drops
    FOR UPDATE, it is one plain read: its single writer cannot deadlock."""
    transaction = session.get_transaction()
    held = session.info.get(_TIERS_HELD)
    if held is None or held[0] is not transaction:
        held = session.info[_TIERS_HELD] = (transaction, set())
    if broadcast_id in held[1]:
        return
    session.execute(
        select(BroadcastTier.tier)
        .where(BroadcastTier.broadcast_id == broadcast_id)
        .order_by(BroadcastTier.tier)
        .with_for_update()
    )
    held[1].add(broadcast_id)


def bump_counts(session: Session, deltas: Counter[tuple[int, int, str, str]]) -> None:
    """Upserts counter deltas in a fixed order, after the broadcasts' tier rows (`lock_tiers`): a
    transaction may bump counters several times, and sorting each call alone orders none across them."""
    rows = [
        {"broadcast_id": b, "tier": t, "channel": c, "state": s, "n": n}
        for (b, t, c, s), n in sorted(deltas.items())
        if n
    ]
    if not rows:
        return
    for broadcast_id in sorted({row["broadcast_id"] for row in rows}):
        lock_tiers(session, broadcast_id)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for row in rows:
        stmt = insert(BroadcastCount).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["broadcast_id", "tier", "channel", "state"],
            set_={"n": BroadcastCount.n + stmt.excluded.n},
        )
        session.execute(stmt)


def set_details(session: Session, details: Sequence[dict[str, Any]]) -> None:
    """Per-row fields (provider message id, error, next attempt) after a grouped transition.
    Each dict has the row's `id` plus the columns to set."""
    update_rows(session, Delivery.__table__, details)
