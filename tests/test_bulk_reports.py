"""Status reports applied in bulk end where applying them one at a time, in order, would: the same
states, timestamps, error codes, histories, progress counters and verdicts, on both databases, for
any sequence (duplicates, reordering, unknown rows, wrong ids, a row still `sending`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from channels.base import StatusReport
from dispatcher.domain.reports import Claim, Row, Verdict, plan
from dispatcher.domain.states import DeliveryState
from dispatcher.engine.status_reports import apply_batch
from dispatcher.engine.transitions import count_moves, transition
from dispatcher.store.db import Database
from dispatcher.store.models import BroadcastCount, BroadcastTier, Delivery, DeliveryEvent
from tests.harness import broadcast_row

SENT, SENDING, DELIVERED, BOUNCED = (
    DeliveryState.SENT,
    DeliveryState.SENDING,
    DeliveryState.DELIVERED,
    DeliveryState.BOUNCED,
)
ROWS = 4  # rows 0-2 sent (sms, sms, email), row 3 still sending
CHANNELS = ["sms", "sms", "email", "sms"]
REPORTED = ["sent", "delivered", "undelivered", "failed", "bounced", "suppressed"]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def same(_channel: str, recorded: str, reported: str) -> bool:
    return recorded == reported


# ---- the rule, pure ------------------------------------------------------------------------------


def test_a_chain_of_reports_on_one_row_is_applied_in_rounds() -> None:
    rows = {1: Row(SENT, "sms", "SM1", 7), 2: Row(SENT, "sms", "SM2", 7)}
    claims = [
        Claim(1, "sms", DELIVERED, "SM1"),
        Claim(2, "sms", DELIVERED, "SM2"),
        Claim(1, "sms", DELIVERED, "SM1"),  # a duplicate
        Claim(1, "sms", BOUNCED, "SM1"),  # a late bounce
        Claim(1, "sms", SENT, "SM1"),  # older than what the row says
    ]
    verdicts, rounds = plan(rows, claims, same)
    assert verdicts == [
        Verdict.APPLIED,
        Verdict.APPLIED,
        Verdict.UNCHANGED,
        Verdict.APPLIED,
        Verdict.UNCHANGED,
    ]
    assert [[(m.delivery_id, m.expect, m.to) for m in r] for r in rounds] == [
        [(1, SENT, DELIVERED), (2, SENT, DELIVERED)],
        [(1, DELIVERED, BOUNCED)],
    ]


def test_a_report_never_moves_a_row_a_gate_counts() -> None:
    """Gates and a broadcast's completion count only pending and sending rows; the applier checks no
    gate after a report (engine/status_reports.py `_apply_all`) because no report can move one.
    Every state a row can be in, against every state a report can claim, with and without a
    recorded id: whatever is applied starts from a state the gates do not count."""
    counted = {DeliveryState.PENDING, DeliveryState.SENDING}
    for state in DeliveryState:
        for recorded in ("SM1", None):
            rows = {1: Row(state, "sms", recorded, 7)}
            for claimed in DeliveryState:
                verdicts, rounds = plan(rows, [Claim(1, "sms", claimed, "SM1")], same)
                moves = [m for r in rounds for m in r]
                assert all(m.expect not in counted for m in moves), (state, recorded, claimed)
                if state in counted:
                    assert verdicts[0] is not Verdict.APPLIED and not moves


def test_reports_that_name_the_wrong_row_move_nothing() -> None:
    rows = {
        1: Row(SENT, "sms", "SM1", 7),
        2: Row(SENDING, "sms", None, 7),
        3: Row(DeliveryState.PENDING, "sms", None, 7),
    }
    claims = [
        Claim(None, "sms", DELIVERED, "SM1"),
        Claim(9, "sms", DELIVERED, "SM9"),
        Claim(1, "email", DELIVERED, "SM1"),
        Claim(1, "sms", DELIVERED, "SM2"),
        Claim(1, "sms", DELIVERED, None),
        Claim(2, "sms", DELIVERED, "SM2"),
        Claim(3, "sms", DELIVERED, "SM3"),
        Claim(1, None, DELIVERED, "SM1"),
    ]
    verdicts, rounds = plan(rows, claims, same)
    assert verdicts == [
        Verdict.UNKNOWN_DELIVERY,
        Verdict.UNKNOWN_DELIVERY,
        Verdict.WRONG_CHANNEL,
        Verdict.ID_MISMATCH,
        Verdict.ID_MISMATCH,
        Verdict.NOT_RECORDED,
        Verdict.NOT_SENT,
        Verdict.UNKNOWN_DELIVERY,
    ]
    assert rounds == []


# ---- bulk = one by one, on the real databases ----------------------------------------------------


def _broadcast(db: Database) -> list[int]:
    """A broadcast with ROWS deliveries as a worker leaves them (sent with ids, one still sending),
    counted as such; returns their ids."""
    with db.session() as session:
        broadcast = broadcast_row(session)
        session.add(
            BroadcastTier(broadcast_id=broadcast.id, tier=0, state="sending", planned=ROWS, outstanding=ROWS)
        )
        rows = [
            Delivery(broadcast_id=broadcast.id, tier=0, channel=c, address=f"a{i}@example.com")
            for i, c in enumerate(CHANNELS)
        ]
        session.add_all(rows)
        session.flush()
        ids = [r.id for r in rows]
        for row in rows:
            count_moves(session, [(broadcast.id, 0, row.channel)], None, DeliveryState.PENDING)
        transition(session, ids, expect=DeliveryState.PENDING, to=SENDING, now=NOW)
        for i in range(ROWS - 1):
            transition(
                session, [ids[i]], expect=SENDING, to=SENT, now=NOW, values={"provider_message_id": f"M{i}"}
            )
        return ids


def _reports(ids: Sequence[int], picks: Sequence[tuple[int, str, bool, bool, int]]) -> list[StatusReport]:
    """(row, state, right id?, right provider?, code) -> a report; row ROWS names no delivery."""
    out = []
    for row, state, right_id, right_provider, code in picks:
        delivery_id = ids[row] if row < ROWS else ids[-1] + 1000
        channel = CHANNELS[row] if row < ROWS else "sms"
        provider = {"sms": "twilio", "email": "sendgrid"}[channel]
        if not right_provider:
            provider = "sendgrid" if provider == "twilio" else "twilio"
        pmid = f"M{row}" if right_id else f"X{row}"
        error = f"e{code}" if code else None
        out.append(StatusReport(provider, delivery_id, pmid, state, error, error))
    return out


def _outcome(db: Database, ids: Sequence[int]) -> dict[str, Any]:
    """Everything a report can change, with the broadcast's ids replaced by positions."""
    with db.session() as session:
        rows = (
            session.execute(select(Delivery).where(Delivery.id.in_(ids)).order_by(Delivery.id))
            .scalars()
            .all()
        )
        broadcast_id = rows[0].broadcast_id
        events = session.execute(
            select(
                DeliveryEvent.delivery_id,
                DeliveryEvent.from_state,
                DeliveryEvent.to_state,
                DeliveryEvent.code,
            )
            .where(DeliveryEvent.delivery_id.in_(ids), DeliveryEvent.kind == "provider_report")
            .order_by(DeliveryEvent.id)
        ).all()
        counts = {
            (c.channel, c.state): c.n
            for c in session.scalars(
                select(BroadcastCount).where(BroadcastCount.broadcast_id == broadcast_id)
            )
            if c.n
        }
        tier = session.scalars(select(BroadcastTier).where(BroadcastTier.broadcast_id == broadcast_id)).one()
        return {
            "rows": [
                (
                    r.state,
                    r.provider_message_id,
                    r.last_error_code,
                    r.delivered_at is None,
                    r.final_at is None,
                )
                for r in rows
            ],
            "events": sorted((ids.index(e.delivery_id), e.from_state, e.to_state, e.code) for e in events),
            "counts": counts,
            "outstanding": tier.outstanding,
        }


PICKS = st.lists(
    st.tuples(
        st.integers(0, ROWS),
        st.sampled_from(REPORTED),
        st.booleans() | st.just(True),
        st.just(True) | st.booleans(),
        st.integers(0, 2),
    ),
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=PICKS)
def test_bulk_application_ends_where_one_by_one_does(db: Database, picks: list[Any]) -> None:
    bulk_ids, single_ids = _broadcast(db), _broadcast(db)
    with db.session() as session:
        bulk = [c.verdict for c in apply_batch(session, _reports(bulk_ids, picks), NOW)]
    single = []
    for report in _reports(single_ids, picks):
        with db.session() as session:
            single += [c.verdict for c in apply_batch(session, [report], NOW)]
    assert bulk == single
    assert _outcome(db, bulk_ids) == _outcome(db, single_ids)


STORIES = st.lists(
    st.tuples(st.sampled_from(["delivered", "undelivered", "failed", "suppressed"]), st.booleans()),
    min_size=ROWS,
    max_size=ROWS,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stories=STORIES, noise=PICKS.map(lambda ps: [p for p in ps if not p[2] or not p[3]]), seed=st.randoms()
)
def test_replayed_and_reordered_reports_leave_the_same_final_states(
    db: Database, stories: list[tuple[str, bool]], noise: list[Any], seed: Any
) -> None:
    """A provider retries and reorders what it says of each message (sent, then its outcome, then
    perhaps a late bounce); replayed, shuffled and mixed with forged reports, applied in several
    batches, it leaves the rows and counters as the story told once, in order."""
    story = [
        (row, state, True, True, 0)
        for row, (outcome, bounced) in enumerate(stories)
        for state in ["sent", outcome, *(["bounced"] if bounced else [])]
    ]
    first, second = _broadcast(db), _broadcast(db)
    replayed = story + [p for p in story if seed.random() < 0.5] + noise
    seed.shuffle(replayed)
    with db.session() as session:
        apply_batch(session, _reports(first, story), NOW)
    for start in range(0, len(replayed), 3):  # in several batches, as an inbox drains them
        with db.session() as session:
            apply_batch(session, _reports(second, replayed[start : start + 3]), NOW)
    once, shuffled = _outcome(db, first), _outcome(db, second)
    assert [r[0] for r in once["rows"]] == [r[0] for r in shuffled["rows"]]
    assert once["counts"] == shuffled["counts"] and once["outstanding"] == shuffled["outstanding"]
