"""Prometheus metrics: this API process's own, plus gauges read cheaply from the database (the
progress counters, never a scan of deliveries) and queue depths from Redis (LLEN per Celery queue).

Provider call latency and rate-limit waits happen in the workers and are not visible here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from channels.registry import PROVIDERS
from config import Settings
from dispatcher.api.progress_hub import ProgressHub
from dispatcher.engine import inbox, provider_metrics, status_reports
from dispatcher.store.db import get_database
from dispatcher.store.models import Broadcast, BroadcastCount
from dispatcher.store.redis_client import get_redis

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

# Process-wide (one API process serves one app); the DB collector is per app, on its own registry.
PROCESS = CollectorRegistry(auto_describe=True)
BROADCASTS_CREATED = Counter(
    "dispatcher_broadcasts_created", "Broadcasts created through this API process", registry=PROCESS
)
REQUESTS = Counter(
    "dispatcher_http_requests", "HTTP requests served", ["method", "route", "status"], registry=PROCESS
)
LATENCY = Histogram(
    "dispatcher_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=PROCESS
)


def observe_request(scope: dict[str, Any], status: int, seconds: float) -> None:
    route = scope.get("route")
    path = getattr(route, "path", None) or "unmatched"
    REQUESTS.labels(scope["method"], path, str(status)).inc()
    LATENCY.labels(scope["method"], path).observe(seconds)


class StoreCollector(Collector):
    """Read at scrape time: broadcasts by state, deliveries by channel and state, queue depths."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from dispatcher.engine.broker import QUEUES, queue_keys

        broadcasts = GaugeMetricFamily("dispatcher_broadcasts", "Broadcasts by state", labels=["state"])
        deliveries = GaugeMetricFamily(
            "dispatcher_deliveries", "Deliveries by channel and state", labels=["channel", "state"]
        )
        queues = GaugeMetricFamily(
            "dispatcher_queue_depth", "Tasks waiting per Celery queue", labels=["queue"]
        )
        waiting = GaugeMetricFamily(
            "dispatcher_inbox_waiting",
            "Webhook requests acknowledged whose status reports are not yet applied (the inbox)",
        )
        try:
            with get_database(self.settings).session() as session:
                for state, n in session.execute(
                    select(Broadcast.state, func.count()).group_by(Broadcast.state)
                ):
                    broadcasts.add_metric([state], n)
                for channel, state, n in session.execute(
                    select(BroadcastCount.channel, BroadcastCount.state, func.sum(BroadcastCount.n)).group_by(
                        BroadcastCount.channel, BroadcastCount.state
                    )
                ):
                    deliveries.add_metric([channel, state], int(n or 0))
        except Exception:  # a scrape reports what it can
            log.warning("metrics: database unavailable", exc_info=True)
        names = {
            "batches": "Send batches handed to each provider's adapter, by all workers",
            "recipients": "Recipients in those batches (one provider call each, but email: 1,000 per call)",
            "call_seconds": "Seconds spent in provider calls, rate-limit waits excluded",
            "waits": "Provider calls that waited for the global rate limit",
            "wait_seconds": "Seconds spent waiting for the global rate limit",
        }
        providers = {
            field: CounterMetricFamily(f"dispatcher_provider_{field}", help_text, labels=["provider"])
            for field, help_text in names.items()
        }
        receipts = {
            "ignored": CounterMetricFamily(
                "dispatcher_provider_status_ignored",
                "Provider status reports ignored: no such delivery, another channel's, another message id, "
                "or never sent",
                labels=["provider", "reason"],
            ),
            "applied": CounterMetricFamily(
                "dispatcher_provider_status_applied",
                "Provider status reports that moved a delivery, by where they came from",
                labels=["provider", "source"],
            ),
            "parked": CounterMetricFamily(
                "dispatcher_provider_status_parked",
                "Status reports that arrived before their send was recorded, held to re-apply after it",
                labels=["provider"],
            ),
            "asked": CounterMetricFamily(
                "dispatcher_reconcile_queries",
                "Deliveries asked about at their provider by reconciliation",
                labels=["provider"],
            ),
        }
        try:
            client = get_redis(self.settings)
            status_stats = status_reports.read_stats(client, self.settings)
            for (kind, provider, detail), n in sorted(status_stats.items()):
                if kind in ("ignored", "applied"):
                    receipts[kind].add_metric([provider, detail], n)
                elif kind in receipts:
                    receipts[kind].add_metric([provider], n)
            waiting.add_metric([], inbox.waiting(self.settings))
            for queue in QUEUES:
                depth = sum(client.llen(key) for key in queue_keys(queue, self.settings))
                queues.add_metric([queue], depth)
            totals = provider_metrics.read(client, self.settings, tuple(sorted(set(PROVIDERS.values()))))
            for provider, fields in totals.items():
                for field, family in providers.items():
                    family.add_metric([provider], fields[field])
        except Exception:
            log.warning("metrics: broker unavailable", exc_info=True)
        yield from (broadcasts, deliveries, queues, waiting, *providers.values(), *receipts.values())


class HubCollector(Collector):
    """The live streams of this process: how many broadcasts are read (one reader each) and how many
    streams share those readers."""

    def __init__(self, hub: ProgressHub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "dispatcher_progress_readers",
            "Broadcasts whose progress this API process reads for live streams (one reader each)",
            value=self.hub.readers,
        )
        yield GaugeMetricFamily(
            "dispatcher_progress_subscribers",
            "Live progress streams (API and dashboard SSE) open on this API process",
            value=self.hub.subscribers,
        )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    body = generate_latest(PROCESS) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def app_registry(settings: Settings, hub: ProgressHub | None = None) -> CollectorRegistry:
    """The service's metrics, and this process's live streams where it serves them (`hub`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(settings))
    if hub is not None:
        registry.register(HubCollector(hub))
    return registry
