"""Status webhooks the sandbox sends back after accepting a message, off the request path.

Providers answer the send call first and report delivery later; so does the sandbox: jobs go on a
queue drained by a few worker tasks sharing one keep-alive `httpx.AsyncClient`. A job is a list of
POSTs made in order (Twilio's `sent` then `delivered` for one message).

Every POST is timed and its answer counted (2xx, another status, no answer at all), so a benchmark
can read from the sandbox's stats how the receiving service took the flood: its webhooks' latency
as a provider would see it, and how far the sandbox's queue fell behind (lag: submit to answer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx

from channels.sandbox.state import SandboxState

log = logging.getLogger(__name__)


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
    def __init__(self, state: SandboxState, workers: int = 16, timeout_s: float = 10.0) -> None:
        self.state = state
        self.workers = workers
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        limits = httpx.Limits(max_connections=self.workers, max_keepalive_connections=self.workers)
        self._client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def submit(self, job: Job) -> None:
        self.queue.put_nowait(job)

    async def drain(self) -> None:
        await self.queue.join()

    async def _work(self) -> None:
        assert self._client is not None
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
        assert self._client is not None
        try:
            response = await self._client.post(post.url, content=post.body, headers=post.headers)
        except (httpx.HTTPError, OSError) as exc:
            log.debug("sandbox callback to %s failed: %s", post.url, exc)
            return None
        if not response.is_success:
            log.debug("sandbox callback to %s answered %s", post.url, response.status_code)
        return response.status_code
