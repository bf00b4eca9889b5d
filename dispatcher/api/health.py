"""Liveness and readiness: a load balancer's two questions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from config import Settings
from dispatcher.reads.status import SnapshotUnavailable, current_snapshot
from dispatcher.store.db import get_database
from dispatcher.store.redis_client import get_redis

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready when the broker and the database both answer; says which does not, and what the
    public status routes are serving meanwhile."""
    settings = request.app.state.settings
    checks: dict[str, str] = {}
    for name, probe in (
        ("database", lambda: get_database(settings).ping()),
        ("broker", lambda: get_redis(settings).ping()),
    ):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # readiness reports any failure rather than raising it
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "status_page": status_page(settings)},
        status_code=200 if ready else 503,
    )


def status_page(settings: Settings) -> dict[str, object]:
    """What the public status routes serve meanwhile: `fresh`, `stale` (the database is away; the
    snapshot's age) or `unavailable` (no snapshot in this process). Informational: the status routes
    keep serving a stale snapshot, so it does not decide readiness."""
    try:
        snapshot = current_snapshot(settings)
    except SnapshotUnavailable:
        return {"snapshot": "unavailable"}
    return {
        "snapshot": "stale" if snapshot.stale else "fresh",
        "age_s": snapshot.age_s(),
        "generated_at": snapshot.body.get("generated_at"),
    }
