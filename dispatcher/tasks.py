"""Celery tasks. They carry ids, never message bodies, and act only on rows they claim."""

from __future__ import annotations

import os

from dispatcher.celery_app import app
from dispatcher.store.db import get_database


@app.task(name="dispatcher.ping")
def ping(value: str) -> dict[str, object]:
    """A round trip through the broker, a worker and the database: what readiness checks lean on."""
    get_database().ping()
    return {"pong": value, "pid": os.getpid()}


@app.task(name="dispatcher.sweep")
def sweep() -> int:
    """Returns deliveries stuck in `sending` past their lease to `pending` (the fan-out engine)."""
    return 0


@app.task(name="dispatcher.poll_schedule")
def poll_schedule() -> int:
    """Claims and sends due maintenance notices (the scheduler)."""
    return 0
