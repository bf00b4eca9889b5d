"""The Celery app, configured for the Redis transport's real behaviour.

- acks_late + reject_on_worker_lost: a worker killed mid-task leaves the task for another worker.
- prefetch 1: a worker does not hoard tasks that an idle worker could run.
- visibility timeout longer than any task: otherwise Redis hands an unacknowledged task out again.
- no far-future ETA or countdown tasks: past the visibility timeout Redis would redeliver them over
  and over, so the scheduler polls the database instead (countdowns here stay under retry_cap_s).
- a queue per channel, taken in priority order (see QUEUES), so a paced provider never holds up
  another channel's sends, and an urgent queue for the first tier (admins).
- no remote control (pidbox): with it, a Redis restart killed the worker. The pidbox's PUBSUB socket
  reports the lost connection while the task channel is mid-BRPOP; kombu's Channel.close then raises
  from `_brpop_read` before its QoS restore, kombu's `collect` clears the transport's client, and
  Celery's second close reaches `restore_unacked` with no client: `'NoneType' object has no attribute
  'hostname'` escapes `ignore_errors` (kombu 5.7, celery 5.7). Without the PUBSUB the BRPOP itself sees
  the loss, the first close completes, and the worker reconnects (tests/test_broker_restart.py).
  Unacked tasks stay in Redis's unacked set and come back after the visibility timeout; the sweeper
  covers their rows and gates long before that.
  Known, not yet fixed: a task that finishes while Redis is down cannot be acked, and kombu keeps it
  as a taken prefetch slot; once as many have failed as the worker has processes (logged "Couldn't
  ack"), the worker stays up but consumes nothing more until it is restarted.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init

from channels.base import ChannelName
from config import Settings, get_settings
from dispatcher.redis_client import require_redis_url

CONTROL_QUEUE = "control"
URGENT_QUEUE = "urgent"
# Workers take from the first queue that has work ("priority" order, not round robin): the first
# tier's batches, then planning and gates, then channels by how long one batch holds a worker.
# A paced SMS batch (100 messages at the Twilio limit) holds it for seconds; an email batch of
# 1,000 for a tenth of one, so round robin made each email batch wait behind an SMS batch.
QUEUES = (
    URGENT_QUEUE,
    CONTROL_QUEUE,
    *(
        c.value
        for c in (
            ChannelName.EMAIL,
            ChannelName.WEBHOOK,
            ChannelName.SOCIAL,
            ChannelName.CHAT,
            ChannelName.SMS,
        )
    ),
)
VISIBILITY_TIMEOUT_S = 3600
_PRIORITY_STEPS = ("", "\x06\x163", "\x06\x166", "\x06\x169")  # kombu's suffix per priority step


def queue_keys(queue: str, settings: Settings) -> list[str]:
    """The Redis lists holding a queue's waiting tasks: kombu keeps one per priority step."""
    return [settings.redis_prefix + queue + step for step in _PRIORITY_STEPS]


def celery_config(settings: Settings) -> dict[str, Any]:
    url = require_redis_url(settings)
    transport: dict[str, Any] = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "queue_order_strategy": "priority",
    }
    results: dict[str, Any] = {}
    if settings.redis_prefix:
        transport["global_keyprefix"] = settings.redis_prefix
        results["global_keyprefix"] = settings.redis_prefix
    assert settings.retry_cap_s < VISIBILITY_TIMEOUT_S, (
        "a retry countdown must stay under the visibility timeout"
    )
    return {
        "broker_url": url,
        "result_backend": url,
        "broker_transport_options": transport,
        "result_backend_transport_options": results,
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 3600,
        "task_default_queue": CONTROL_QUEUE,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": False,  # see the module docstring: a broker restart killed the worker
        "beat_schedule": {
            "sweep-stale-deliveries": {"task": "dispatcher.sweep", "schedule": settings.sweep_interval_s},
            "poll-scheduled-notices": {
                "task": "dispatcher.poll_schedule",
                "schedule": settings.scheduler_poll_s,
            },
        },
    }


def make_celery(settings: Settings | None = None) -> Celery:
    app = Celery("outage_dispatcher", include=["dispatcher.tasks"])
    settings = settings or get_settings()
    if settings.redis_url:
        app.conf.update(celery_config(settings))
    return app


app = make_celery()


@worker_process_init.connect
def _after_fork(**_kwargs: Any) -> None:
    """Clients are cached per pid, so a forked child builds its own; drop the parent's pool too."""
    from dispatcher.store.db import _databases

    for database in _databases.values():
        database.engine.dispose(close=False)
    if get_settings().redis_url:
        from dispatcher.tasks import services

        for adapter in services().adapters.values():  # the first admin message must not wait on set-up
            adapter.warm()


@setup_logging.connect
def _logging(**_kwargs: Any) -> None:
    """Workers log the same masked JSON lines as the API (connecting this stops Celery's own setup)."""
    from dispatcher.logs import configure

    configure(get_settings().log_level)
