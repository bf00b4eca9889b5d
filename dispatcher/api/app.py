"""App factory: routers are mounted here and nowhere else."""

from __future__ import annotations

from fastapi import FastAPI

from config import Settings, get_settings
from dispatcher.api import health


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="outage-dispatcher",
        version="0.1.0",
        description="One canonical outage message, condensed per channel, fanned out in tiers, admins first.",
    )
    app.state.settings = settings
    app.include_router(health.router)
    return app
