"""A task goes through the real Redis broker to a real worker process and back."""

from __future__ import annotations

from dispatcher.store.db import Database
from dispatcher.worker.tasks import ping


def test_task_round_trip_through_redis_and_a_real_worker(database: Database, start_worker) -> None:
    worker = start_worker(database.url, concurrency=1)
    result = ping.apply_async(args=["hello"], queue="control")
    try:
        answer = result.get(timeout=60)
    except Exception:
        print(worker.output())
        raise
    assert answer["pong"] == "hello"
    assert answer["pid"] != __import__("os").getpid()  # it really ran elsewhere


def test_celery_is_configured_for_the_redis_transport() -> None:
    from dispatcher.engine.broker import VISIBILITY_TIMEOUT_S, app
    from tests.conftest import PREFIX

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == VISIBILITY_TIMEOUT_S
    assert conf.broker_transport_options["global_keyprefix"] == PREFIX
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
