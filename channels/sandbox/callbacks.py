"""Status webhooks the sandbox sends back after accepting a message, off the request path.

Providers answer the send call first and report delivery later; so does the sandbox: jobs go on a
queue drained by a few worker tasks sharing one keep-alive `httpx.AsyncClient`. A job is a list of
POSTs made in order (Twilio's `sent` then `delivered` for one message).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from channels.sandbox.state import SandboxState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Post:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Job:
    provider: str
    posts: list[Post]
    delay_s: float = 0.0


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
                    ok = await self._post(post)
                    self.state.count_callback(job.provider, ok=ok)
            finally:
                self.queue.task_done()

    async def _post(self, post: Post) -> bool:
        assert self._client is not None
        try:
            response = await self._client.post(post.url, content=post.body, headers=post.headers)
        except (httpx.HTTPError, OSError) as exc:
            log.debug("sandbox callback to %s failed: %s", post.url, exc)
            return False
        return response.is_success
