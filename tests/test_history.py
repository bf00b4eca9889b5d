"""Every delivery's history, written by the engine under provider faults (5xx, 429 with Retry-After),
on SQLite and PostgreSQL: an unbroken chain of moves from `pending` to the row's state, one attempt
with the provider's answer per attempt the row counts, and the provider's code on each refusal."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.models import Delivery, DeliveryEvent
from tests.harness import Harness

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(db, sandbox, start_worker, tmp_path: Path):  # type: ignore[no-untyped-def]
    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


def test_history_is_an_unbroken_chain_with_every_attempt(harness: Harness) -> None:
    harness.sandbox.set_faults("twilio", error_rate=0.25, rate_429=0.15, retry_after_s=0.3, seed=11)
    harness.sandbox.set_faults("sendgrid", error_rate=0.3, seed=5)
    harness.subscribers(
        [
            SubscriberIn(
                external_id=f"p{i}", lists=["customers"], email=f"p{i}@example.com", phone=f"+1415555{i:04d}"
            )
            for i in range(40)
        ]
    )
    harness.worker()
    broadcast_id = harness.open(channels=["email", "sms"])
    harness.wait(broadcast_id, timeout_s=120)

    with harness.database.session() as session:
        rows = {
            d.id: d for d in session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id))
        }
        history: dict[int, list[DeliveryEvent]] = defaultdict(list)
        for event in session.scalars(
            select(DeliveryEvent).where(DeliveryEvent.delivery_id.in_(list(rows))).order_by(DeliveryEvent.id)
        ):
            history[event.delivery_id].append(event)
    assert len(rows) == 80
    retried = 0
    for delivery_id, row in rows.items():
        moves = [e for e in history[delivery_id] if e.from_state is not None]
        state = "pending"
        for move in moves:  # each move starts where the last one ended
            assert move.from_state == state, (
                delivery_id,
                [(e.kind, e.from_state, e.to_state) for e in moves],
            )
            state = move.to_state
        assert state == row.state
        answers = [e for e in history[delivery_id] if e.attempt is not None]
        assert [e.attempt for e in answers] == list(range(1, row.attempts + 1))  # one answer per attempt
        assert [e.accepted for e in answers][-1] is True and row.state == "sent"
        for refused in answers[:-1]:
            assert refused.accepted is False and refused.code and refused.to_state == "pending"
        retried += len(answers) > 1
        times = [e.at for e in history[delivery_id]]
        assert times == sorted(times)
    assert retried >= 5, "the faults should have forced retries"
