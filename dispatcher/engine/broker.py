"""The Celery app: the engine's queues on Redis, configured for the transport's real behaviour.

The engine enqueues through it (engine/outbox.py); the tasks it runs live in dispatcher/worker/tasks.py,
which it names but never imports, so imports point one way: worker -> engine -> broker.


- acks_late + reject_on_worker_lost: a worker killed mid-task leaves the task for another worker.
- prefetch 1: a worker does not hoard tasks that an idle worker could run.
- visibility timeout longer than any task: otherwise Redis hands an unacknowledged task out again.
- no far-future ETA or countdown tasks: past the visibility timeout Redis would redeliver them over
  and over, so the scheduler polls the database instead (countdowns here stay under retry_cap_s).
- two urgency classes as kombu message priorities (see `task_priority`): the first tier's work and
  gate checks before anything else; every later tier after it, with the queues taken round robin
  (a queue per channel, FIFO inside each), so no channel's later work starves behind another's.
- an urgent lane: every urgent task due now (a broadcast's first-tier planning, its first tier's
  sends, gate checks) is on the `urgent` queue, which a worker started with `-Q urgent`
  (`LANE_QUEUES`) consumes alone; a first-tier batch that comes back later waits on its channel's
  queue at urgent priority, for the pool. Priority only orders what waits; a process in the middle
  of a later task (a planning page, a customer email batch of 1,000, a paced send) finishes it
  first, so without a lane a second incident's admins waited for that: 0.4-0.7 s at 100k, one
  worker process. `up` and the Procfile run one lane beside the pool.
- no remote control (pidbox): with it, a Redis restart killed the worker. The pidbox's PUBSUB socket
  reports the lost connection while the task channel is mid-BRPOP; kombu's Channel.close then raises
  from `_brpop_read` before its QoS restore, kombu's `collect` clears the transport's client, and
  Celery's second close reaches `restore_unacked` with no client: `'NoneType' object has no attribute
  'hostname'` escapes `ignore_errors` (kombu 5.7, celery 5.7). Without the PUBSUB the BRPOP itself sees
  the loss, the first close completes, and the worker reconnects (tests/test_broker_restart.py).
  Unacked tasks stay in Redis's unacked set and come back after the visibility timeout; the sweeper
  covers their rows and gates long before that.
- an ack that fails frees its prefetch slot (`free_slot_on_failed_ack`): a task that finishes while
  Redis is down cannot be acked, and kombu 5.7's Redis QoS raises before it releases the slot, so
  with prefetch 1 a single failed ack ("Couldn't ack") left the worker up but consuming nothing,
  for good (the Redis drill hung on it). The task's copy stays in Redis's unacked set and comes back
  after the visibility timeout, when its claim finds nothing left to send.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging

from channels.base import ChannelName
from config import Settings, get_settings
from dispatcher.store.redis_client import require_redis_url

CONTROL_QUEUE = "control"
URGENT_QUEUE = "urgent"
# What an urgent lane consumes: only work that must never wait behind a later task.
LANE_QUEUES = (URGENT_QUEUE,)
# Every queue a worker consumes. Order no longer ranks them: kombu's Redis transport pops the
# highest priority step of every queue first (one BRPOP over all queues x steps), and inside a
# step takes the queues round robin. Strict queue order starved SMS: 28,510 emails of 50 later
# updates went out while the first broadcast's customer SMS sat untouched for minutes.
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
# kombu's Redis priorities: lower is served first; each step is its own Redis list per queue.
PRIORITY_URGENT = 0  # planning a broadcast's first tier, its first tier's sends, gate checks
PRIORITY_LATER = 3  # every later tier of every broadcast: FIFO per queue, round robin across
# Tasks that are later work whatever queue they are on; the rest of `control` (beat's passes) is urgent.
_LATER_TASKS = frozenset({"dispatcher.plan_tier"})


def task_priority(task: str, queue: str) -> int:
    """Pure: the urgency class of a task. Urgent work is on the urgent queue (outbox.Outbox:
    first-tier batches, run_broadcast, check_gate); `plan_tier` plans the tiers after the first."""
    if queue == URGENT_QUEUE:
        return PRIORITY_URGENT
    if queue == CONTROL_QUEUE and task not in _LATER_TASKS:
        return PRIORITY_URGENT
    return PRIORITY_LATER


def route_priority(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_kw: Any
) -> dict[str, Any]:
    """Celery router: every task sent (send_task, apply_async, beat) gets its priority here, so no
    caller can forget it. An explicit `priority=` still wins (Celery merges options over routes)."""
    queue = options.get("queue")
    queue_name = str(getattr(queue, "name", queue) or CONTROL_QUEUE)
    return {"queue": queue or queue_name, "priority": task_priority(name, queue_name)}


VISIBILITY_TIMEOUT_S = 3600
PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default steps, named so queue_keys cannot drift from them
_STEP_SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority step


def queue_keys(queue: str, settings: Settings) -> list[str]:
    """The Redis lists holding a queue's waiting tasks: kombu keeps one per priority step."""
    return [settings.redis_prefix + queue + (f"{_STEP_SEP}{p}" if p else "") for p in PRIORITY_STEPS]


def celery_config(settings: Settings) -> dict[str, Any]:
    url = require_redis_url(settings)
    transport: dict[str, Any] = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        # urgency is the message priority; among queues of one priority, take turns
        "queue_order_strategy": "round_robin",
        "priority_steps": list(PRIORITY_STEPS),
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
        "task_routes": (route_priority,),
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": False,  # see the module docstring: a broker restart killed the worker
        "beat_schedule": {
            "sweep-stale-deliveries": {"task": "dispatcher.sweep", "schedule": settings.sweep_interval_s},
            "reconcile-receipts": {"task": "dispatcher.reconcile", "schedule": settings.sweep_interval_s},
            "poll-scheduled-notices": {
                "task": "dispatcher.poll_schedule",
                "schedule": settings.scheduler_poll_s,
            },
        },
    }


def free_slot_on_failed_ack() -> None:
    """Wraps kombu's Redis QoS ack and reject so the local prefetch slot is released even when
    removing the message from Redis's unacked index fails (see the module docstring). There is no
    setting for it; the wrapper keeps kombu's own behaviour and error, adding only the release."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport.virtual import QoS as VirtualQoS

    qos = kombu_redis.QoS
    if getattr(qos.ack, "frees_slot", False):
        return
    ack, reject = qos.ack, qos.reject

    def safe_ack(self: Any, delivery_tag: Any) -> None:
        try:
            ack(self, delivery_tag)
        except Exception:
            VirtualQoS.ack(self, delivery_tag)  # the slot is free; Redis keeps its unacked copy
            raise

    def safe_reject(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            reject(self, delivery_tag, requeue=requeue)
        except Exception:
            VirtualQoS.ack(self, delivery_tag)
            raise

    safe_ack.frees_slot = True  # type: ignore[attr-defined]
    qos.ack, qos.reject = safe_ack, safe_reject  # type: ignore[method-assign]


def make_celery(settings: Settings | None = None) -> Celery:
    app = Celery("outage_dispatcher", include=["dispatcher.worker.tasks"])
    settings = settings or get_settings()
    if settings.redis_url:
        app.conf.update(celery_config(settings))
    return app


app = make_celery()
free_slot_on_failed_ack()


@setup_logging.connect
def _logging(**_kwargs: Any) -> None:
    """Workers log the same masked JSON lines as the API (connecting this stops Celery's own setup)."""
    from dispatcher.logs import configure

    configure(get_settings().log_level)
