"""What every adapter shares: per-process SDK clients, bounded concurrency, Retry-After parsing.

Clients are built lazily and keyed by process id: the Celery worker forks, and a client (its
sockets, its pool, its threads) created before the fork must never be used in the child.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

from channels.base import INTERNAL_ERROR, Failure, NoSlot, Outcome, Recipient, Throttle
from channels.sandbox.secret import (  # the names adapters present to the sandbox
    SANDBOX_SLACK_TOKEN as SANDBOX_SLACK_TOKEN,
)
from channels.sandbox.secret import (
    SANDBOX_TWILIO_ACCOUNT_SID as SANDBOX_TWILIO_ACCOUNT_SID,
)
from channels.sandbox.secret import (
    SANDBOX_X_CREDENTIAL as SANDBOX_X_CREDENTIAL,
)

log = logging.getLogger("channels")

T = TypeVar("T")


def sandbox_secret(settings: Any) -> str:
    """The sandbox's per-run secret (DISPATCHER_SANDBOX_SECRET). Unset, a random stand-in: the sandbox
    refuses it, so nothing is sent to a sandbox this process cannot verify (startup says so)."""
    secret = settings.sandbox_secret
    return secret.get_secret_value() if secret is not None else _UNSET_SECRET


_UNSET_SECRET = secrets.token_urlsafe(32)


class PerProcess(Generic[T]):
    """One lazily built object per process (the factory runs at first use in each process)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._items: dict[int, T] = {}

    def get(self) -> T:
        pid = os.getpid()
        item = self._items.get(pid)
        if item is None:
            with self._lock:
                item = self._items.get(pid)
                if item is None:
                    item = self._factory()
                    self._items = {pid: item}  # drop the parent's: never used in this process
        return item


_announced: set[tuple[int, str]] = set()


def announce_mode(channel: str, provider: str, live: bool, url: str) -> None:
    """Log once per process and channel which endpoint is used (the URL only, never credentials)."""
    key = (os.getpid(), channel)
    if key in _announced:
        return
    _announced.add(key)
    if live:
        log.info("%s: sending through %s at %s", channel, provider, url)
    else:
        log.info("%s: no %s credentials, using the provider sandbox at %s", channel, provider, url)


class SendPool(ThreadPoolExecutor):
    """A process's send threads, and how many there are (`lanes`)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = max(1, lanes)
        super().__init__(max_workers=self.lanes, thread_name_prefix="send")


def executor(workers: int) -> PerProcess[SendPool]:
    return PerProcess(lambda: SendPool(workers))


def send_each(
    pool: SendPool,
    recipients: Sequence[Recipient],
    send_one: Callable[[Recipient], Outcome],
    throttle: Throttle | None,
) -> list[Outcome]:
    """One provider call per recipient, many in flight, outcomes in the recipients' order.

    Each send thread takes the next recipient in turn until none is left (a lane), rather than one
    task per recipient: a task each woke the batch's thread for every one of its 250 futures, and
    at the SMS rate those thread switches cost as much CPU as the HTTP request (py-spy, issue 17)."""

    def call(recipient: Recipient) -> Outcome:
        # A failure on our side fails this recipient alone: raised, it would discard the outcomes of
        # the batch's other calls, including ones the provider accepted (and so resend them).
        try:
            if throttle is not None:
                throttle(recipient)
            return send_one(recipient)
        except NoSlot:  # raised by the throttle, possibly from inside the SDK's transport
            return Outcome.no_slot(recipient.delivery_id)
        except Exception as exc:
            log.warning("sending to delivery %s failed on our side", recipient.delivery_id, exc_info=True)
            return Outcome.failed(
                recipient.delivery_id, Failure.RETRYABLE, code=INTERNAL_ERROR, error=repr(exc)[:500]
            )

    if len(recipients) == 1:
        return [call(recipients[0])]
    outcomes: list[Outcome | None] = [None] * len(recipients)
    turns = iter(range(len(recipients)))
    taking = threading.Lock()

    def lane() -> None:
        while True:
            with taking:
                i = next(turns, None)
            if i is None:
                return
            outcomes[i] = call(recipients[i])

    lanes = [pool.submit(lane) for _ in range(min(pool.lanes, len(recipients)))]
    for running in lanes:
        running.result()  # `call` returns for every recipient: a lane ends only when all are taken
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(recipients)
    return done


def retry_after(headers: Mapping[str, Any] | Any, now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date), else from a rate-limit reset epoch
    (SendGrid X-RateLimit-Reset, X x-rate-limit-reset). None when the provider did not say."""
    if headers is None:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    now = time.time() if now is None else now
    value = lowered.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = lowered.get("x-ratelimit-reset") or lowered.get("x-rate-limit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, whatever its case: a framework's headers already look up that way,
    a plain dict (a test, another server) may not."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value
