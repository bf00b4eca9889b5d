"""The provider sandbox server: the Starlette app, its control API, and an in-process runner.

Why uvicorn + Starlette on one asyncio loop in a background thread (not a ThreadingHTTPServer):
fault injection holds requests open (latency, hangs past the client's timeout) and status webhooks
go out after the answer. On an event loop a hung request costs a coroutine, not a thread, so a
benchmark with thousands of slow or hanging calls in flight does not exhaust threads; HTTP/1.1
keep-alive, pipelining and backpressure come from uvicorn; and the callbacks share the same loop
with one pooled async HTTP client. Handlers do O(1) work per recipient under a lock. With httptools
and uvloop installed (uvicorn picks them up) one loop costs about 0.3-0.4 ms of CPU per provider call,
i.e. 2,500-3,000 calls/s on one core, leaving the other core to the SDK clients; on h11 and the
stdlib loop it is roughly a third of that. Callbacks to its own `/hooks/` receiver skip the network
(channels/sandbox/callbacks.py): 0.29 CPU-s per 1,000 deliveries in a sink run, from 2.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from yarl import URL

from channels.sandbox.callbacks import CallbackSender
from channels.sandbox.faults import json_response
from channels.sandbox.inbound import DEFAULT_TO, send_inbound
from channels.sandbox.providers import Providers
from channels.sandbox.secret import event_webhook_key, new_secret
from channels.sandbox.signing import EventWebhookSigner
from channels.sandbox.state import PROVIDERS, FaultConfig, SandboxState, render_record

log = logging.getLogger(__name__)


@dataclass
class _Runtime:
    """Objects bound to the server's event loop, created inside it."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    callbacks: CallbackSender | None = None
    providers: Providers | None = None
    self_url: str | None = None  # where the sandbox listens, once bound: its own receiver is in-process


def build_app(state: SandboxState, secret: str, runtime: _Runtime) -> Starlette:
    """The ASGI app; usable on its own (any ASGI server) or through `SandboxServer`. `secret` is the
    sandbox account's credential and signs its webhooks (channels/sandbox/secret.py)."""
    signer = EventWebhookSigner(event_webhook_key(secret))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime.stopping = asyncio.Event()

        async def receive_locally(url: URL, headers: list[tuple[str, str]], body: bytes) -> int:
            return await providers().webhook_local(url, headers, body)

        own = f"{runtime.self_url}/hooks/" if runtime.self_url else None
        runtime.callbacks = CallbackSender(state, local_prefix=own, local=receive_locally if own else None)
        await runtime.callbacks.start()
        runtime.providers = Providers(state, signer, runtime.callbacks, runtime.stopping, secret)
        try:
            yield
        finally:
            runtime.stopping.set()
            await runtime.callbacks.stop()

    def providers() -> Providers:
        assert runtime.providers is not None, "sandbox app used without its lifespan"
        return runtime.providers

    async def sendgrid(request: Request) -> Response:
        return await providers().sendgrid_send(request)

    async def twilio(request: Request) -> Response:
        return await providers().twilio_messages(request)

    async def twilio_fetch(request: Request) -> Response:
        return await providers().twilio_fetch(request)

    async def sendgrid_activity(request: Request) -> Response:
        return await providers().sendgrid_activity(request)

    async def slack(request: Request) -> Response:
        return await providers().slack_post_message(request)

    async def x(request: Request) -> Response:
        return await providers().x_create_tweet(request)

    async def hooks(request: Request) -> Response:
        return await providers().webhook_receive(request)

    async def messages(request: Request) -> Response:
        q = request.query_params
        with state.lock:
            records = list(state.records)
        for key in ("channel", "recipient", "delivery_id", "provider_message_id"):
            if key in q:
                records = [r for r in records if str(r.get(key)) == q[key]]
        offset = int(q.get("offset", 0))
        limit = int(q["limit"]) if "limit" in q else None
        records = records[offset : None if limit is None else offset + limit]
        include_html = q.get("html") in ("1", "true")
        return json_response(200, [render_record(r, include_html=include_html) for r in records])

    async def clear_messages(request: Request) -> Response:
        state.clear_records()
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        return json_response(200, state.stats_json())

    async def arrivals(request: Request) -> Response:
        """Every request's wall-clock arrival and the slot its sender stamped on it, since the last clear."""
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            return json_response(404, {"error": f"unknown provider {provider!r}"})
        return json_response(200, {"arrivals": state.arrivals(provider)})

    async def keys(request: Request) -> Response:
        return json_response(200, {"sendgrid_event_webhook_public_key": signer.public_key_b64})

    async def get_faults(request: Request) -> Response:
        return json_response(200, {p: c.to_dict() for p, c in state.faults.items()})

    async def put_faults(request: Request) -> Response:
        provider = request.path_params["provider"]
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            state.set_faults(provider, FaultConfig.from_dict(data))
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, state.faults[provider].to_dict())

    async def clear_faults(request: Request) -> Response:
        provider = request.path_params.get("provider")
        if provider is None:
            state.clear_faults()
        elif provider in PROVIDERS:
            state.set_faults(provider, FaultConfig())
        else:
            return json_response(404, {"error": f"unknown provider {provider!r}"})
        return Response(status_code=204)

    async def get_config(request: Request) -> Response:
        return json_response(200, {"event_webhook_url": state.event_webhook_url})

    async def put_config(request: Request) -> Response:
        data = await request.json()
        if not isinstance(data, dict) or set(data) - {"event_webhook_url"}:
            return json_response(400, {"error": "only event_webhook_url can be set"})
        if "event_webhook_url" in data:
            state.event_webhook_url = data["event_webhook_url"] or None
        return json_response(200, {"event_webhook_url": state.event_webhook_url})

    async def drain(request: Request) -> Response:
        """Wait until every queued status webhook has been sent (tests, benchmarks)."""
        timeout = float(request.query_params.get("timeout", 30))
        assert runtime.callbacks is not None
        try:
            await asyncio.wait_for(runtime.callbacks.drain(), timeout)
        except TimeoutError:
            return json_response(504, {"drained": False})
        return json_response(200, {"drained": True})

    async def health(request: Request) -> Response:
        return json_response(200, {"ok": True})

    async def inbound(request: Request) -> Response:
        """Sends a signed inbound SMS on request: JSON {"url", "from", "body", "to"?}."""
        data = await request.json()
        if not isinstance(data, dict) or not {"url", "from", "body"} <= set(data):
            return json_response(400, {"error": "give url, from and body"})
        answer = await send_inbound(
            str(data["url"]), str(data["from"]), str(data["body"]), secret, str(data.get("to") or DEFAULT_TO)
        )
        return json_response(200, answer)

    routes = [
        Route("/v3/mail/send", sendgrid, methods=["POST"]),
        Route("/v3/messages", sendgrid_activity, methods=["GET"]),
        Route("/2010-04-01/Accounts/{account_sid}/Messages.json", twilio, methods=["POST"]),
        Route("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", twilio_fetch, methods=["GET"]),
        Route("/api/chat.postMessage", slack, methods=["POST"]),
        Route("/2/tweets", x, methods=["POST"]),
        Route("/hooks/{name:path}", hooks, methods=["POST"]),
        Route("/sandbox/messages", messages, methods=["GET"]),
        Route("/sandbox/messages", clear_messages, methods=["DELETE"]),
        Route("/sandbox/stats", stats, methods=["GET"]),
        Route("/sandbox/arrivals/{provider}", arrivals, methods=["GET"]),
        Route("/sandbox/keys", keys, methods=["GET"]),
        Route("/sandbox/faults", get_faults, methods=["GET"]),
        Route("/sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/sandbox/faults/{provider}", put_faults, methods=["PUT"]),
        Route("/sandbox/faults/{provider}", clear_faults, methods=["DELETE"]),
        Route("/sandbox/config", get_config, methods=["GET"]),
        Route("/sandbox/config", put_config, methods=["PUT"]),
        Route("/sandbox/drain", drain, methods=["POST"]),
        Route("/sandbox/health", health, methods=["GET"]),
        Route("/sandbox/twilio/inbound", inbound, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SandboxServer:
    """The sandbox, in-process (tests) or as `python -m channels.sandbox` (demo, benchmarks).

    `start()` binds (port 0 picks a free port), serves from a daemon thread, and returns `.url`.
    The same controls as the HTTP API: `set_faults`, `clear_faults`, `messages`, `clear_messages`,
    `stats`, `event_webhook_url`, `public_key`, `drain_callbacks`; `secret` is the per-run secret
    (given, or made here) the service must be given as DISPATCHER_SANDBOX_SECRET.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8001,
        *,
        event_webhook_url: str | None = None,
        secret: str | None = None,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        self.port = port
        self.log_level = log_level
        self.state = SandboxState()
        self.state.event_webhook_url = event_webhook_url
        self.secret = secret or new_secret()  # per run, never a constant: see channels/sandbox/secret.py
        self.signer = EventWebhookSigner(event_webhook_key(self.secret))
        self._runtime = _Runtime()
        self.app = build_app(self.state, self.secret, self._runtime)
        self.url: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle
    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=False,
            lifespan="on",
            loop="auto",  # uvloop when installed
            http="auto",  # httptools when installed (several times faster than h11), else h11
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
            backlog=4096,
        )

    def _bind(self) -> socket.socket:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the proto
        # says TCP; with proto 0, Nagle + delayed ACKs add 40 ms to every response.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        sock.listen(4096)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._runtime.self_url = self.url
        return sock

    def start(self, timeout_s: float = 10.0) -> str:
        sock = self._bind()
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=self._run, args=(sock,), name="provider-sandbox", daemon=True)
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout_s:
                raise RuntimeError("the provider sandbox did not start")
            threading.Event().wait(0.01)
            waited += 0.01
        assert self.url is not None
        return self.url

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None
        loop = _new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            loop.close()

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (the CLI)."""
        sock = self._bind()
        self._server = uvicorn.Server(self._config())
        log.info("provider sandbox listening on %s", self.url)
        loop = _new_event_loop()
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            loop.close()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._loop is not None and self._runtime.stopping is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._runtime.stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # controls
    def set_faults(self, provider: str, **config: Any) -> None:
        """Replace one provider's faults, e.g. `set_faults("twilio", invalid_numbers=["+15550001"])`."""
        self.state.set_faults(provider, FaultConfig.from_dict(config))

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def messages(self, channel: str | None = None, *, include_html: bool = False) -> list[dict[str, Any]]:
        with self.state.lock:
            records = list(self.state.records)
        return [
            render_record(r, include_html=include_html)
            for r in records
            if channel is None or r["channel"] == channel
        ]

    def clear_messages(self) -> None:
        self.state.clear_records()

    def stats(self) -> dict[str, Any]:
        return self.state.stats_json()

    def arrivals(self, provider: str) -> list[tuple[float, float | None, float | None]]:
        """(arrival, slot, sent) of each request since the last clear (see SLOT_HEADER)."""
        return self.state.arrivals(provider)

    @property
    def event_webhook_url(self) -> str | None:
        return self.state.event_webhook_url

    @event_webhook_url.setter
    def event_webhook_url(self, url: str | None) -> None:
        self.state.event_webhook_url = url

    @property
    def public_key(self) -> str:
        """SendGrid's Event Webhook verification key as SendGrid shows it: base64 DER SPKI."""
        return self.signer.public_key_b64

    def inbound_sms(self, url: str, sender: str, body: str) -> dict[str, Any]:
        """Has the sandbox send a signed inbound SMS to `url`; returns its answer."""
        import httpx

        payload = {"url": url, "from": sender, "body": body}
        return dict(httpx.post(f"{self.url}/sandbox/twilio/inbound", json=payload, timeout=20).json())

    def drain_callbacks(self, timeout_s: float = 30.0) -> None:
        """Block until every queued status webhook has been sent."""
        callbacks = self._runtime.callbacks
        if self._loop is None or callbacks is None:
            return
        future = asyncio.run_coroutine_threadsafe(callbacks.drain(), self._loop)
        future.result(timeout=timeout_s)
