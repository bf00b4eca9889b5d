"""Provider answers a worker could not record are kept in Redis and recorded from there: a real
Celery worker whose database goes away (a TCP forwarder in front of PostgreSQL, cut) while the
sandbox is answering, then SIGKILLed while it retries the recording. Nothing is mocked: the rows
must be recorded from Redis by the sweeper, with the sandbox's own message ids, and nothing sent
again. The sweeper's lease is long here, so a resend could only come from a lost answer."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.engine import journal
from dispatcher.store.db import Database
from dispatcher.store.models import Delivery
from tests.conftest import PG_UNAVAILABLE, PG_URL, migrated_database
from tests.drills.tcp_cut import TcpCut
from tests.harness import Harness

pytestmark = [pytest.mark.skipif(PG_UNAVAILABLE is not None, reason=str(PG_UNAVAILABLE))]

N = 24


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[Database]:
    with migrated_database("postgresql", f"kept_{request.node.name[-12:]}") as database:
        yield database


@pytest.fixture
def cut() -> Iterator[TcpCut]:
    url = make_url(PG_URL)
    proxy = TcpCut(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    proxy.close()


def _through(database: Database, proxy: TcpCut) -> str:
    url = make_url(database.url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


def _rows(database: Database, broadcast_id: int) -> list[Any]:
    with database.session() as session:
        return list(
            session.execute(
                select(Delivery.address, Delivery.state, Delivery.sends, Delivery.provider_message_id).where(
                    Delivery.broadcast_id == broadcast_id
                )
            )
        )


def _until(what: str, check: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _phones(harness: Harness) -> None:
    harness.subscribers(
        [SubscriberIn(external_id=f"k{i}", lists=["customers"], phone=f"+1415555{i:04d}") for i in range(N)]
    )


def _restored_each_sent_once_and_counted_once(
    harness: Harness, cut: TcpCut, broadcast_id: int, client: redis.Redis
) -> None:
    cut.restore()
    done = harness.wait(broadcast_id, timeout_s=120, sweep_every_s=1)
    assert done["totals"]["sent"] == N
    assert done["sends"] == N and done["extra_sends"] == 0, done
    _sent_once_with_the_sandbox_ids(harness, broadcast_id)
    assert client.hlen(journal.answers_key(harness.settings)) == 0


def _start(harness: Harness, cut: TcpCut, lease_s: str) -> tuple[int, Any, redis.Redis]:
    harness.configure(
        DISPATCHER_LEASE_S=lease_s, DISPATCHER_SEND_CONCURRENCY="32", DISPATCHER_RETRY_BASE_S="0.2"
    )
    harness.sandbox.set_faults("twilio", latency_ms=1500)  # answers arrive while the database is away
    _phones(harness)
    worker = harness.worker(DATABASE_URL=_through(harness.database, cut))
    broadcast_id = harness.open(channels=["sms"])

    def claimed_and_planned() -> bool:  # a planning task cut off by the outage is another story
        states = [r[1] for r in _rows(harness.database, broadcast_id)]
        return states == ["sending"] * N and harness.progress(broadcast_id)["state"] == "sending"

    _until("the batch to be claimed and the broadcast planned", claimed_and_planned)
    cut.cut()
    settings = harness.settings
    client = redis.Redis.from_url(settings.redis_url or "")
    _until(
        "every answer to be kept in Redis",
        lambda: len(harness.sandbox.messages("sms")) == N and client.hlen(journal.answers_key(settings)) == N,
    )
    return broadcast_id, worker, client


def _sent_once_with_the_sandbox_ids(harness: Harness, broadcast_id: int) -> None:
    messages = harness.sandbox.messages("sms")
    copies = Counter(m["recipient"] for m in messages)
    assert len(messages) == N and set(copies.values()) == {1}, copies
    sids = {m["recipient"]: m["provider_message_id"] for m in messages}
    for address, state, sends, message_id in _rows(harness.database, broadcast_id):
        assert (state, sends) == ("sent", 1), (address, state, sends)
        assert message_id == sids[address]  # recorded from the kept answer, not re-sent


def test_a_worker_killed_between_the_answer_and_the_recording_is_recorded_from_redis(
    pg: Database, sandbox: Any, start_worker: Any, tmp_path: Path, cut: TcpCut
) -> None:
    harness = Harness(pg, sandbox, start_worker, tmp_path)
    try:
        broadcast_id, worker, client = _start(harness, cut, lease_s="600")
        time.sleep(0.5)  # well inside the worker's recording retries (half a lease)
        worker.kill()  # SIGKILL, pool children included: the answers live only in Redis now
        assert {r[1] for r in _rows(pg, broadcast_id)} == {"sending"}, "nothing recorded before the kill"
        cut.restore()
        harness.worker(DATABASE_URL=_through(pg, cut))  # the restart; this process plays beat
        done = harness.wait(broadcast_id, timeout_s=120, sweep_every_s=1)
        assert done["totals"]["sent"] == N
        assert done["sends"] == N and done["extra_sends"] == 0
        _sent_once_with_the_sandbox_ids(harness, broadcast_id)
        assert client.hlen(journal.answers_key(harness.settings)) == 0
    finally:
        harness.stop()


def test_a_database_outage_longer_than_the_recording_retries_but_shorter_than_the_lease_sends_nothing_twice(
    pg: Database, sandbox: Any, start_worker: Any, tmp_path: Path, cut: TcpCut
) -> None:
    harness = Harness(pg, sandbox, start_worker, tmp_path)
    try:
        # recording retried for 5 s (half the lease), the database away for about 8 s
        broadcast_id, worker, _ = _start(harness, cut, lease_s="10")
        time.sleep(6.5)
        assert {r[1] for r in _rows(pg, broadcast_id)} == {"sending"}
        cut.restore()
        done = harness.wait(broadcast_id, timeout_s=120, sweep_every_s=1)
        assert done["totals"]["sent"] == N and done["extra_sends"] == 0
        _sent_once_with_the_sandbox_ids(harness, broadcast_id)
        assert worker.proc.poll() is None  # the worker gave up on that batch, not on itself
    finally:
        harness.stop()


def test_a_claim_that_committed_unheard_is_handed_back_uncounted_not_sent_twice(
    pg: Database, sandbox: Any, start_worker: Any, tmp_path: Path, cut: TcpCut
) -> None:
    """The database takes the claim's COMMIT and the connection dies before it answers, for longer
    than the worker's claim retries: its rows wait in `sending`, counted, never sent. The worker
    says so in Redis, and the sweeper hands them back uncounted; without that the lease sent them
    once, counted twice (the CI drill's one "counted, not received")."""
    harness = Harness(pg, sandbox, start_worker, tmp_path)
    try:
        harness.configure(DISPATCHER_LEASE_S="10", DISPATCHER_RETRY_BASE_S="0.2")  # claim retried 5 s
        _phones(harness)
        harness.worker(DATABASE_URL=_through(harness.database, cut))
        cut.cut_after_commit(b"claim=$")  # the claim's UPDATE: pending -> sending, `sends` raised
        broadcast_id = harness.open(channels=["sms"])
        _until("the claim's commit to be cut off", cut.sprung.is_set)
        assert {r[1:3] for r in _rows(pg, broadcast_id)} == {("sending", 1)}  # committed, unheard
        time.sleep(6.5)  # past the worker's claim retries: it gives up on the batch
        assert harness.sandbox.messages("sms") == []
        client = redis.Redis.from_url(harness.settings.redis_url or "")
        assert client.hlen(journal.answers_key(harness.settings)) == N  # "never sent", per row
        _restored_each_sent_once_and_counted_once(harness, cut, broadcast_id, client)
    finally:
        harness.stop()


def test_rows_the_rate_limit_handed_back_while_the_database_was_away_are_not_counted_twice(
    pg: Database, sandbox: Any, start_worker: Any, tmp_path: Path, cut: TcpCut
) -> None:
    """A paced batch sends the rows its window has slots for and hands the rest back unsent; the
    database goes away as it hands them back, for longer than the worker retries. The unsent rows'
    "no slot" is kept in Redis with the sent rows' answers, and the sweeper hands them back
    uncounted; without it they waited for the lease and went out once, counted twice."""
    harness = Harness(pg, sandbox, start_worker, tmp_path)
    try:
        harness.configure(DISPATCHER_LEASE_S="10", DISPATCHER_RATE_TWILIO_PER_S="4")
        _phones(harness)
        harness.worker(DATABASE_URL=_through(harness.database, cut))
        cut.cut_on(b"attempts=(deliveries.attempts - ")  # the hand-back: the claim's attempt undone
        broadcast_id = harness.open(channels=["sms"])
        _until("the hand-back to be cut off", cut.sprung.is_set)
        sent_before = len(harness.sandbox.messages("sms"))
        assert 0 < sent_before < N
        time.sleep(6.5)  # past the worker's retries (half the lease): it gives up on the batch
        client = redis.Redis.from_url(harness.settings.redis_url or "")
        kept = journal.kept(client, harness.settings)
        assert len(kept) == N and sum(k.outcome.accepted for k in kept) == sent_before
        _restored_each_sent_once_and_counted_once(harness, cut, broadcast_id, client)
    finally:
        harness.stop()
