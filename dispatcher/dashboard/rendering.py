"""Dashboard pages rendered: the public pages' plumbing (autoescaping Jinja2 environment, strict
headers) with the dashboard's own policy, which also lets our one script in and talk back to us."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import HTMLResponse, Response

from config import Settings
from dispatcher.dashboard.session import DashSession
from dispatcher.public.pages import TEMPLATES_DIR, environment, static_file, strict_headers

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = strict_headers(CSP)
ASSETS_DIR = TEMPLATES_DIR / "dashboard"
ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}


def when(value: str | None) -> str:
    """An ISO time as ops read it: UTC, to the second (`2026-12-02 14:05:09`); a dash for none."""
    if not value:
        return "–"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def _env_with_filters() -> Any:
    env = environment("dashboard")
    env.filters.setdefault("when", when)
    return env


def render(name: str, **context: Any) -> str:
    return str(_env_with_filters().get_template(name).render(**context))


def page(
    settings: Settings,
    name: str,
    title: str,
    dash: DashSession | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A full dashboard page with the service's name, who is signed in, and the strict headers."""
    html = render(name, title=title, service_name=settings.service_name, dash=dash, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def problem(settings: Settings, dash: DashSession | None, status: int, title: str, text: str) -> HTMLResponse:
    return page(settings, "problem.html.j2", title, dash, status, text=text)


def asset(name: str) -> Response | None:
    """One of the dashboard's two static files by name (nothing else is served from the folder)."""
    media_type = ASSETS.get(name)
    return static_file(ASSETS_DIR / name, media_type) if media_type else None
