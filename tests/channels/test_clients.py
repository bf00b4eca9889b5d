"""Per-process clients survive a fork correctly; Retry-After is read the ways providers send it; a
batch's calls run on the send threads in lanes."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from typing import Any

from channels.base import Failure, NoSlot, Outcome, Recipient
from channels.clients import PerProcess, SendPool, retry_after, send_each


def _built_in(pool: PerProcess[int], queue: multiprocessing.Queue[int]) -> None:
    queue.put(pool.get())


def test_a_forked_child_builds_its_own_client() -> None:
    pool: PerProcess[int] = PerProcess(os.getpid)
    parent = pool.get()
    assert pool.get() == parent  # built once per process
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_built_in, args=(pool, queue))
    child.start()
    built = queue.get(timeout=10)
    child.join(timeout=10)
    assert built == child.pid and built != parent


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert retry_after({"Retry-After": "7"}, now=now) == 7.0
    assert retry_after({"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}, now=now) == 10.0
    assert retry_after({"X-RateLimit-Reset": str(int(now) + 30)}, now=now) == 30.0
    assert retry_after({"x-rate-limit-reset": str(int(now) - 5)}, now=now) == 0.0
    assert retry_after({"Content-Type": "application/json"}, now=now) is None
    assert retry_after(None) is None


def test_the_environment_is_read_once_into_the_twilio_transport(monkeypatch: Any) -> None:
    """Proxies and a CA bundle from the environment still apply, read once when the transport is
    built rather than on every message: a proxy set after that is unseen."""
    import urllib3

    from channels.sms.transport import PacedTransport

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    real = PacedTransport(None, 5, 4)
    assert real.proxy is not None and real.proxy["https"] == "http://proxy.example:3128"
    assert isinstance(real.pool, urllib3.ProxyManager)
    assert real.pool.proxy is not None and real.pool.proxy.host == "proxy.example"
    assert real.ca_bundle == "/etc/ssl/certs/ca-certificates.crt"
    sandbox = PacedTransport("http://127.0.0.1:8001", 5, 4)
    assert sandbox.proxy is None  # NO_PROXY covers the loopback sandbox
    assert not isinstance(sandbox.pool, urllib3.ProxyManager)
    monkeypatch.setenv("HTTP_PROXY", "http://late.example:3128")
    assert sandbox.proxy is None and not isinstance(sandbox.pool, urllib3.ProxyManager)  # read once


def test_send_each_answers_in_order_with_at_most_lanes_in_flight() -> None:
    pool = SendPool(4)
    recipients = [Recipient(i, f"+1555000{i:04d}") for i in range(60)]
    lock = threading.Lock()
    in_flight = busiest = 0
    threads: set[str] = set()

    def send_one(recipient: Recipient) -> Outcome:
        nonlocal in_flight, busiest
        with lock:
            in_flight += 1
            busiest = max(busiest, in_flight)
            threads.add(threading.current_thread().name)
        time.sleep(random.uniform(0, 0.004))  # uneven answers: lanes finish out of order
        with lock:
            in_flight -= 1
        return Outcome.ok(recipient.delivery_id, f"SM{recipient.delivery_id}")

    try:
        outcomes = send_each(pool, recipients, send_one, None)
    finally:
        pool.shutdown()
    assert [o.delivery_id for o in outcomes] == list(range(60))
    assert [o.provider_message_id for o in outcomes] == [f"SM{i}" for i in range(60)]
    assert 2 <= busiest <= 4 and len(threads) <= 4  # several at once, never more than the lanes


def test_send_each_fails_only_the_recipient_whose_call_failed() -> None:
    pool = SendPool(3)
    recipients = [Recipient(i, f"+1555000{i:04d}") for i in range(10)]

    def throttle(recipient: Recipient) -> str | None:
        if recipient.delivery_id == 7:
            raise NoSlot("bucket")
        return None

    def send_one(recipient: Recipient) -> Outcome:
        if recipient.delivery_id == 3:
            raise RuntimeError("adapter bug")
        return Outcome.ok(recipient.delivery_id, "SM")

    try:
        outcomes = send_each(pool, recipients, send_one, throttle)
    finally:
        pool.shutdown()
    assert [o.delivery_id for o in outcomes] == list(range(10))
    assert outcomes[3].failure is Failure.RETRYABLE and "adapter bug" in (outcomes[3].error or "")
    assert outcomes[7].failure is Failure.NO_SLOT
    assert sum(o.accepted for o in outcomes) == 8
