"""The HTTP composition root: the API (dispatcher/api/), the public pages (dispatcher/public/) and
the ops dashboard (dispatcher/dashboard/) mounted on one app, here and nowhere else; and the
providers' door alone (`create_callbacks_app`), for a process that serves only their callbacks.
Above them all, so none imports another's floor back."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from config import Settings, get_settings
from dispatcher import logs
from dispatcher.api import (
    actions,
    audit,
    broadcasts,
    deliveries,
    errors,
    health,
    incidents,
    maintenances,
    metrics,
    preview,
    subscribers,
    suppressions,
    webhooks,
)
from dispatcher.api.auditing import AuditTrail
from dispatcher.api.deps import database_of, settings_of
from dispatcher.api.middleware import AccessLog, BodyLimit
from dispatcher.api.precedence import Precedence
from dispatcher.api.progress_hub import ProgressHub
from dispatcher.dashboard import routes as dashboard
from dispatcher.engine.inbox import Applier
from dispatcher.public import routes as public
from dispatcher.public.caching import SNAPSHOT_PATHS
from dispatcher.public.status_limit import StatusLimit
from dispatcher.reads.status import rebuild_snapshot
from dispatcher.statuspage import feeds as status_feeds
from dispatcher.statuspage import pages as status_pages
from dispatcher.statuspage import routes as statuspage
from dispatcher.store.db import Database, get_database
from dispatcher.store.redis_client import close_async_redis

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level)
    app = FastAPI(
        title="outage-dispatcher",
        version="0.1.0",
        description="One canonical outage message, condensed per channel, fanned out in tiers, admins first.",
        lifespan=lambda app: _lifespan(app, settings),
    )
    app.state.settings = settings
    # one progress reader per broadcast for all of its live streams (the API's and the dashboard's)
    app.state.progress_hub = ProgressHub(settings)
    # a commander's request goes before provider callbacks (api/precedence.py)
    app.state.precedence = Precedence()
    app.state.metrics = metrics.app_registry(settings, app.state.progress_hub)
    app.state.status_limit = StatusLimit(settings)
    # the providers' status reports, applied in bulk behind their webhooks; not in a process that
    # serves commanders while others serve the webhooks (`apply_callbacks`, as `up` runs them)
    app.state.inbox = (
        Applier(get_database(settings), settings, defer=app.state.precedence.wait_quiet)
        if settings.redis_url and settings.apply_callbacks
        else None
    )
    app.state.inbox_door = webhooks.inbox_door(settings)  # and kept there, callbacks in flight together
    errors.install(app)
    # The busiest routes first, as matching a path walks the routes in order: the provider callbacks
    # (two per SMS, SendGrid's batches: 12% of the API's CPU went on matching them when they came
    # after the others; two routes, so the rest pay little for it), then the status routes (pollers,
    # a crowd during an outage: a third of their cost when they came last).
    app.include_router(webhooks.router)
    app.include_router(status_pages.router)  # the public status page and its history (from the snapshot)
    app.include_router(status_feeds.router)  # and its Atom and RSS feeds
    app.include_router(statuspage.router)  # Statuspage-compatible /api/v2/*.json (public, from the snapshot)
    for module in (health, metrics, incidents, maintenances, preview, broadcasts, subscribers):
        app.include_router(module.router)
    app.include_router(deliveries.router)  # one delivery's story, for the dashboards
    app.include_router(actions.router)  # a commander's retry and resend, an admin's reveal
    app.include_router(audit.router)
    app.include_router(suppressions.router)  # the subscribers' front door: admin side
    app.include_router(public.router)  # and the public pages (no API key; limited per client)
    app.include_router(dashboard.router)  # the ops dashboard (a session cookie, from an API key)
    # Outermost last: the access log sees every response, 413s included, and gives each request the
    # id the audit trail (inside it, outside the body limit) records with every write.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuditTrail, settings=settings)
    # The snapshot routes' and the provider callbacks' successes are not logged one by one (a crowd,
    # or the two callbacks of every SMS, would flood the log and cost a tenth of each request); their
    # failures are, and the metrics count every request.
    app.add_middleware(AccessLog, quiet_paths=(*SNAPSHOT_PATHS, *webhooks.QUIET_PATHS))
    return app


def create_callbacks_app(settings: Settings | None = None) -> Starlette:
    """The providers' door alone: their webhooks (status callbacks, SendGrid's events, inbound SMS),
    `/healthz`, `/readyz` and `/metrics`, for the process that serves them apart from the people's
    (`up`'s `callbacks`, `outage-dispatcher web --callbacks`). The same handlers as the API's, on a
    bare Starlette app: FastAPI's per-request layers (dependency solving, its middleware) were a
    sixth of a callback's CPU, and no commander waits in this process. It applies what it keeps
    unless `DISPATCHER_APPLY_CALLBACKS` says not to."""
    settings = settings or get_settings()
    logs.configure(settings.log_level)

    def provider(handler: Callable[[Request, Settings, Database], Awaitable[Response]]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            return await handler(request, settings_of(request), database_of(request))

        return endpoint

    async def twilio_status(request: Request, settings: Settings, database: Database) -> Response:
        delivery_id = request.query_params.get("delivery_id")
        return await webhooks.twilio_status(request, delivery_id, settings, database)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse(health.healthz())

    app = Starlette(
        routes=[
            Route("/v1/webhooks/twilio", provider(twilio_status), methods=["POST"]),
            Route("/v1/webhooks/sendgrid", provider(webhooks.sendgrid_events), methods=["POST"]),
            Route("/v1/webhooks/twilio/inbound", provider(public.twilio_inbound), methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", health.readyz),
            Route("/metrics", metrics.metrics),
        ],
        lifespan=_callbacks_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics.app_registry(settings)
    app.state.inbox = (
        Applier(get_database(settings), settings) if settings.redis_url and settings.apply_callbacks else None
    )
    app.state.inbox_door = webhooks.inbox_door(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, quiet_paths=webhooks.QUIET_PATHS)
    return app


@asynccontextmanager
async def _callbacks_lifespan(app: Starlette) -> AsyncIterator[None]:
    freeze_startup_heap()
    if app.state.inbox is not None:
        app.state.inbox.start()
    try:
        yield
    finally:
        if app.state.inbox is not None:
            await asyncio.to_thread(app.state.inbox.stop)
        await close_async_redis()


@asynccontextmanager
async def _lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    await asyncio.to_thread(start_snapshot, settings)
    freeze_startup_heap()
    if app.state.inbox is not None:  # providers' status reports, applied behind their webhooks
        app.state.inbox.start()
    try:
        yield
    finally:
        await app.state.progress_hub.close()
        if app.state.inbox is not None:
            await asyncio.to_thread(app.state.inbox.stop)
        await asyncio.to_thread(app.state.status_limit.close)
        await close_async_redis()


def freeze_startup_heap() -> None:
    """Takes what the started process holds (modules, the app and its routes, templates, the
    snapshot) out of the cyclic collector's sight: a full collection otherwise walks all of it and
    stalls every request in flight (benchmarks/statuspage.py: p99 at 16 connections 82 -> 28 ms).
    Garbage made afterwards is collected as before."""
    gc.collect()
    gc.freeze()


def start_snapshot(settings: Settings) -> None:
    """Rebuilds the status snapshot as the API starts (components may have been reconfigured), which
    also gives this process its copy to serve through a later database outage. A database that does
    not answer now must not keep the API from starting."""
    try:
        with get_database(settings).session() as session:
            rebuild_snapshot(session, settings)
    except Exception as exc:  # the status routes answer 503 until a snapshot can be read
        log.warning("status snapshot not rebuilt at start: %s", type(exc).__name__)
