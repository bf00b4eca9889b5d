"""Status webhooks the sandbox sends back after accepting a message, off the request path.

Providers answer the send call first and report delivery later; so does the sandbox: jobs go on a
queue drained by a few worker tasks sharing one keep-alive `aiohttp.ClientSession`. A job is a list of
POSTs made in order (Twilio's `sent` then `delivered` for one message).

Why aiohttp, not httpx: with 16 POSTs in flight httpx/httpcore cost ~3.5 ms of CPU per POST here
(its pool's bookkeeping, a failed `import sniffio` per request), aiohttp ~0.17 ms; in a 20,000-subscriber
run with callbacks to the API the client was 77% of the sandbox's CPU. aiohttp comes with twilio. The
headers on the wire are still the ones httpx sent (`wire_headers`).

Every POST is timed and its answer counted (2xx, another status, no answer at all), so a benchmark
can read from the sandbox's stats how the receiving service took the flood: its webhooks' latency
as a provider would see it, and how far the sandbox's queue fell behind (lag: submit to answer).

A POST to the sandbox's own `/hooks/` receiver (`--callbacks sink`, the tests) is handed to that
receiver in-process rather than over loopback HTTP, where the sandbox paid for both the client and the
server of every callback (~45% of its CPU in a sink run): the same URL, headers and body the client
would send, the same handler, record, fault gate, answer and counters; its latency is the handler's
time (no network), and the client's timeout still applies (no answer: counted as an error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from channels.sandbox.state import SandboxState

log = logging.getLogger(__name__)

# Besides a POST's own headers, what httpx (the client before aiohttp) sent with every one.
DEFAULT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}
# Below the keep-alive of uvicorn's default (5 s): a POST is never sent on a connection the receiver
# is closing (aiohttp does not retry a POST on a stale connection).
KEEPALIVE_S = 2.0

# The sandbox's own receiver: the URL, the headers as on the wire and the body in, the status out.
LocalReceiver = Callable[[URL, list[tuple[str, str]], bytes], Awaitable[int]]


@dataclass(frozen=True)
class Post:
    url: str
    body: bytes
    headers: dict[str, str]
    reports: int = 1  # status reports it carries (a SendGrid POST: a batch of events)


@dataclass(frozen=True)
class Job:
    provider: str
    posts: list[Post]
    delay_s: float = 0.0
    submitted: float = field(default_factory=time.monotonic)  # for the lag: how far the queue fell behind


class CallbackSender:
    def __init__(
        self,
        state: SandboxState,
        workers: int = 16,
        timeout_s: float = 10.0,
        *,
        local_prefix: str | None = None,
        local: LocalReceiver | None = None,
    ) -> None:
        """`local` receives, in-process, every POST whose URL starts with `local_prefix` (the
        sandbox's own `<url>/hooks/`); without both, every POST goes over HTTP."""
        self.state = state
        self.workers = workers
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.local_prefix = local_prefix if local is not None else None
        self._local = local
        self._handling: set[asyncio.Task[int]] = set()  # local handlers still running past a timeout

    async def start(self) -> None:
        # per phase, as httpx's timeout was: connecting (with waiting for a connection), each read
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_read=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.workers, keepalive_timeout=KEEPALIVE_S)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._handling]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._handling, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def submit(self, job: Job) -> None:
        self.queue.put_nowait(job)

    async def drain(self) -> None:
        await self.queue.join()

    async def _work(self) -> None:
        assert self._session is not None
        while True:
            job = await self.queue.get()
            try:
                for post in job.posts:
                    if job.delay_s > 0:
                        await asyncio.sleep(job.delay_s)
                    started = time.monotonic()
                    status = await self._post(post)
                    now = time.monotonic()
                    self.state.count_callback(
                        job.provider,
                        ok=status is not None and 200 <= status < 300,
                        status=status,
                        latency_s=now - started,
                        lag_s=now - job.submitted,
                        reports=post.reports,
                    )
            finally:
                self.queue.task_done()

    async def _post(self, post: Post) -> int | None:
        """The answer's status, or None when there was none (refused, reset, timed out)."""
        assert self._session is not None
        if self.local_prefix is not None and post.url.startswith(self.local_prefix):
            return await self._post_local(post)
        try:
            async with self._session.post(
                post.url, data=post.body, headers={**DEFAULT_HEADERS, **post.headers}
            ) as response:
                await response.read()  # the whole answer, so the connection is kept
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("sandbox callback to %s failed: %r", post.url, exc)
            return None
        if not 200 <= response.status < 300:
            log.debug("sandbox callback to %s answered %s", post.url, response.status)
        return response.status

    async def _post_local(self, post: Post) -> int | None:
        """The POST handed to the sandbox's own receiver. As over HTTP: a receiver slower than the
        timeout is no answer (None) and goes on to its end (a server does not notice a client giving
        up); a receiver that raises is a 500 (Starlette's ServerErrorMiddleware)."""
        assert self._local is not None
        url = URL(post.url)
        task = asyncio.ensure_future(self._local(url, wire_headers(url, post), post.body))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)
        done, _ = await asyncio.wait((task,), timeout=self.timeout_s)
        if not done:
            log.debug("sandbox callback to %s: no answer in %ss", post.url, self.timeout_s)
            return None
        if task.exception() is not None:
            log.exception("sandbox receiver failed on %s", post.url, exc_info=task.exception())
            return 500
        return task.result()


def wire_headers(url: URL, post: Post) -> list[tuple[str, str]]:
    """The headers `_post` sends, in aiohttp's order: Host, the defaults (a POST's own replace them in
    place), the POST's own, Content-Length."""
    return [
        ("Host", url.host_port_subcomponent or ""),
        *{**DEFAULT_HEADERS, **post.headers}.items(),
        ("Content-Length", str(len(post.body))),
    ]
