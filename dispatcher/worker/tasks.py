"""Celery tasks: thin wrappers that carry ids (never message bodies) into the engine."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

import channels.registry  # noqa: F401  (imported before the pool forks: SDK imports are slow)
from channels.base import ChannelName
from config import get_settings
from dispatcher.engine import planner, sending, sweeper, tier_gates
from dispatcher.engine import reconcile as reconciliation
from dispatcher.engine.broker import URGENT_QUEUE, app
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.planner import run_broadcast as _run_broadcast
from dispatcher.engine.sending import Services
from dispatcher.engine.sending import send_batch as _send_batch
from dispatcher.incidents import scheduler
from dispatcher.incidents.broadcasts import enqueue
from dispatcher.store.db import DATABASES, Database, get_database


def _database() -> Database:
    """The worker's database, from the settings the worker was started with."""
    return get_database(get_settings())


def services() -> Services:
    """This worker process's services (engine/sending.py `services`: built once per process)."""
    return sending.services(get_settings(), _database())


@app.task(name="dispatcher.ping", bind=True)
def ping(self: Any, value: str) -> dict[str, object]:
    """A round trip through the broker, a worker and the database; names the worker that answered
    (remote control is off, so this is how a launcher knows each worker is up)."""
    _database().ping()
    return {"pong": value, "pid": os.getpid(), "worker": self.request.hostname}


@app.task(name="dispatcher.run_broadcast")
def run_broadcast(broadcast_id: int) -> None:
    _run_broadcast(_database(), get_settings(), broadcast_id)


# A PostgreSQL deadlock victim (planning's inserts or a gate check against a batch's recording)
# rolled back: run it again soon, rather than leave the tier `planning` until the sweeper's lease.
# Planning a tier and checking a gate are safe to run again.
DB_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 10,
    "max_retries": 5,
}


@app.task(name="dispatcher.plan_tier", **DB_RETRY)
def plan_tier(broadcast_id: int, tier: int, after: int = 0) -> None:
    """Plans a tier after the first from subscriber id `after`, a page per task (engine/planner.py)."""
    planner.plan_tier(_database(), get_settings(), broadcast_id, tier, after)


@app.task(name="dispatcher.finish_tier", **DB_RETRY)
def finish_tier(broadcast_id: int, tier: int) -> None:
    """What follows a tier's last page, run behind its batches (engine/planner.py finish_tier)."""
    planner.finish_tier(_database(), get_settings(), broadcast_id, tier)


# A claim chosen as a deadlock victim left its rows pending with no task: the same retry.
@app.task(name="dispatcher.send_batch", bind=True, **DB_RETRY)
def send_batch(
    self: Any, broadcast_id: int, channel: str, ids: list[int], slots: dict[str, list[float]] | None = None
) -> int:
    """`slots`: rate-limit slots kept for some rows (JSON: delivery id -> [bucket index, slot time]).
    A batch from the urgent queue sleeps for no slot: the lane takes that queue alone."""
    kept = {int(i): (int(slot[0]), float(slot[1])) for i, slot in (slots or {}).items()}
    at_once = (self.request.delivery_info or {}).get("routing_key") == URGENT_QUEUE
    return _send_batch(services(), broadcast_id, ChannelName(channel), ids, kept, at_once)


@app.task(name="dispatcher.check_gate", **DB_RETRY)
def check_gate(broadcast_id: int, tier: int) -> None:
    outbox = Outbox()
    with _database().session() as session:
        tier_gates.check_gate(session, get_settings(), broadcast_id, tier, outbox)
    outbox.flush()


@app.task(name="dispatcher.sweep")
def sweep() -> dict[str, int]:
    return sweeper.sweep(_database(), get_settings())


@app.task(name="dispatcher.poll_schedule")
def poll_schedule() -> dict[str, int]:
    """The scheduler pass beat runs every `scheduler_poll_s`: due maintenance notices (each claimed
    atomically, enqueued after commit) and update-cadence reminders to commanders."""
    report = scheduler.poll_schedule(_database(), get_settings(), enqueue=enqueue)
    return {"sent": len(report.sent), "skipped": len(report.skipped), "reminded": len(report.reminded)}


@app.task(name="dispatcher.reconcile")
def reconcile() -> dict[str, int]:
    """Beat's pass: claims a page of stale `sent` rows per polled channel and queues their queries."""
    adapters = services().adapters
    return reconciliation.reconcile(_database(), get_settings(), list(reconciliation.pollable(adapters)))


@app.task(name="dispatcher.reconcile_rows")
def reconcile_rows(channel: str, ids: list[int]) -> dict[str, int]:
    """Asks one channel's provider about claimed rows (on that channel's queue, paced)."""
    name = ChannelName(channel)
    source = reconciliation.pollable(services().adapters).get(name)
    if source is None:
        return {"asked": 0, "moved": 0}
    limiter = services().limiter
    return reconciliation.reconcile_rows(_database(), get_settings(), source, limiter, name, ids)


@worker_process_init.connect
def _after_fork(**_kwargs: Any) -> None:
    """Clients are cached per pid, so a forked child builds its own; drop the parent's pool too."""
    for database in DATABASES.inherited():
        database.engine.dispose(close=False)
    if get_settings().redis_url:
        for adapter in services().adapters.values():  # the first admin message must not wait on set-up
            adapter.warm()
