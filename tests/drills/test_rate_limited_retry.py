"""A 429 with Retry-After is sent again after its Retry-After by its own retry task, not by the
sweeper a lease later: the lease here is ten minutes and nothing sweeps, so a row whose retry task
was lost would never be sent and the wait below would time out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.store.models import Delivery
from tests.harness import Harness

N = 40


@pytest.fixture
def harness(db: Any, sandbox: Any, start_worker: Any, tmp_path: Path) -> Any:
    h = Harness(db, sandbox, start_worker, tmp_path)
    yield h
    h.stop()


def test_a_429_is_retried_after_its_retry_after_long_before_the_lease(harness: Harness) -> None:
    harness.configure(
        DISPATCHER_LEASE_S="600", DISPATCHER_SWEEP_INTERVAL_S="600", DISPATCHER_RETRY_MAX_ATTEMPTS="30"
    )
    # a third of the calls answered 429 with Retry-After: 2, drawn from a seeded generator
    harness.sandbox.set_faults("twilio", rate_429=0.33, retry_after_s=2, seed=7)
    harness.subscribers(
        [SubscriberIn(external_id=f"r{i}", lists=["customers"], phone=f"+1415556{i:04d}") for i in range(N)]
    )
    harness.worker()
    broadcast_id = harness.open(channels=["sms"])
    done = harness.wait(broadcast_id, timeout_s=240)  # no sweeping: only retry tasks can finish it

    stats = harness.sandbox.stats()["twilio"]
    assert stats["faults"] > 0 and stats["accepted"] == N, stats
    copies = Counter(m["recipient"] for m in harness.sandbox.messages("sms"))
    assert len(copies) == N and set(copies.values()) == {1}
    with harness.database.session() as session:
        rows = session.execute(
            select(Delivery.state, Delivery.attempts, Delivery.sends, Delivery.last_error_code).where(
                Delivery.broadcast_id == broadcast_id
            )
        ).all()
    limited = [r for r in rows if r.last_error_code == "20429"]
    assert limited, "some rows should have been answered 429"
    for row in limited:
        assert row.state == "sent" and row.attempts >= 2, row
        assert row.sends == 1, row  # a 429 took nothing: only the accepted send is counted
    assert done["totals"]["sent"] == N and done["extra_sends"] == 0
    assert stats["calls"] == N + stats["faults"]  # every 429 was followed by exactly one more call
