"""Celery tasks: thin wrappers that carry ids (never message bodies) into the engine."""

from __future__ import annotations

import os
from functools import lru_cache

from sqlalchemy.exc import InterfaceError, OperationalError

import channels.registry  # noqa: F401  (imported before the pool forks: SDK imports are slow)
from channels.base import ChannelName
from config import get_settings
from dispatcher.celery_app import app
from dispatcher.fanout import Outbox, gate_timed_out, plan_next_tier
from dispatcher.fanout import run_broadcast as _run_broadcast
from dispatcher.sending import Services, build_services
from dispatcher.sending import send_batch as _send_batch
from dispatcher.store.db import get_database


@lru_cache
def _services(pid: int) -> Services:
    del pid  # per process: clients must not cross a fork
    return build_services(get_settings(), get_database())


def services() -> Services:
    return _services(os.getpid())


@app.task(name="dispatcher.ping")
def ping(value: str) -> dict[str, object]:
    """A round trip through the broker, a worker and the database."""
    get_database().ping()
    return {"pong": value, "pid": os.getpid()}


@app.task(name="dispatcher.run_broadcast")
def run_broadcast(broadcast_id: int) -> None:
    _run_broadcast(get_database(), get_settings(), broadcast_id)


@app.task(name="dispatcher.plan_tier")
def plan_tier(broadcast_id: int, tier: int) -> None:
    plan_next_tier(get_database(), get_settings(), broadcast_id, tier)


# A claim chosen as a PostgreSQL deadlock victim (against another batch's recording) rolled back
# and left its rows pending with no task: run it again soon, rather than after the sweeper's lease.
@app.task(
    name="dispatcher.send_batch",
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=10,
    max_retries=5,
)
def send_batch(broadcast_id: int, channel: str, ids: list[int]) -> int:
    return _send_batch(services(), broadcast_id, ChannelName(channel), ids)


@app.task(name="dispatcher.check_gate")
def check_gate(broadcast_id: int, tier: int) -> None:
    outbox = Outbox()
    with get_database().session() as session:
        gate_timed_out(session, get_settings(), broadcast_id, tier, outbox)
    outbox.flush()


@app.task(name="dispatcher.sweep")
def sweep() -> dict[str, int]:
    from dispatcher.sweeper import sweep as _sweep

    return _sweep(get_database(), get_settings())


@app.task(name="dispatcher.poll_schedule")
def poll_schedule() -> dict[str, int]:
    """The scheduler pass beat runs every `scheduler_poll_s`: due maintenance notices (each claimed
    atomically, enqueued after commit) and update-cadence reminders to commanders."""
    from dispatcher.broadcasts import enqueue
    from dispatcher.scheduler import poll

    report = poll(get_database(), get_settings(), enqueue=enqueue)
    return {"sent": len(report.sent), "skipped": len(report.skipped), "reminded": len(report.reminded)}
