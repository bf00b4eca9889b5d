"""The public pages' plumbing: Jinja2 rendering (autoescaped), the headers every page carries, and
the per-client-address limits kept in Redis.

Pages load nothing from anywhere but this app (one stylesheet it serves), run no script, and may not
be framed: the Content-Security-Policy says so. Links carry secret tokens, so no page sends a
Referer and none is cached.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

import templates
from config import Settings
from dispatcher.api.errors import error_body
from dispatcher.store.redis_client import get_redis, key

TEMPLATES_DIR = Path(templates.__file__).parent
PAGES_DIR = TEMPLATES_DIR / "pages"
STYLESHEET = PAGES_DIR / "site.css"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
WINDOW_S = 3600


def strict_headers(csp: str) -> dict[str, str]:
    """The headers every HTML page of ours carries (the public pages and the dashboard): this
    policy, no sniffing, no framing, no Referer (URLs may hold secret tokens), never cached."""
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


PAGE_HEADERS = strict_headers(CSP)


@lru_cache(maxsize=4)
def environment(folder: str = "pages") -> Environment:
    """The autoescaping Jinja2 environment for one folder of templates/ (user text is escaped)."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR / folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def static_file(path: Path, media_type: str) -> Response:
    """One of our own assets (a stylesheet, a script), cacheable for an hour."""
    return Response(
        path.read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def site_context(settings: Settings) -> dict[str, Any]:
    """What every public page's layout shows: the service's name and how to reach support (the
    subscriber pages, the dashboard and the status page all render it)."""
    contact = settings.support_contact
    is_url = contact.startswith(("http://", "https://"))
    return {
        "service_name": settings.service_name,
        "support_contact": contact,
        "support_is_email": "@" in contact and not is_url,
        "support_is_url": is_url,
    }


def page(settings: Settings, name: str, title: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A rendered page with the service's name and support contact, and the strict headers."""
    html = (
        environment()
        .get_template(name)
        .render(title=title, **site_context(settings), base_path="", **context)
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def message(
    settings: Settings, title: str, *lines: str, status: int = 200, error: bool = False
) -> HTMLResponse:
    return page(settings, "message.html.j2", title, status, lines=list(lines), error=error, link=None)


def stylesheet() -> Response:
    return static_file(STYLESHEET, "text/css")


def client_address(request: Request, trusted_hops: int = 0) -> str:
    """The address limits count against. Behind `trusted_hops` proxies of our own it is the one
    the outermost of them saw (X-Forwarded-For, counted from the right: a client can prepend
    anything it likes, but not what our proxies append)."""
    peer = request.client.host if request.client else "unknown"
    if trusted_hops <= 0:
        return peer
    forwarded = [
        part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()
    ]
    return forwarded[-trusted_hops] if len(forwarded) >= trusted_hops else peer


def over_limit(settings: Settings, bucket: str, who: str, limit: int, window_s: int = WINDOW_S) -> int | None:
    """Counts one request against `who`'s fixed window in `bucket`; returns seconds until the
    window ends when the limit is spent, else None. Shared by every API process (Redis)."""
    now = time.time()
    window = int(now // window_s)
    name = key("public", bucket, who, window, settings=settings)
    client = get_redis(settings)
    try:
        pipe = client.pipeline()
        pipe.incr(name)
        pipe.expire(name, window_s + 5)
        count = int(pipe.execute()[0])
    except redis.RedisError:
        return None  # a Redis outage must not lock subscribers out of unsubscribing
    if count <= limit:
        return None
    return max(1, int((window + 1) * window_s - now) + 1)


def too_many(settings: Settings, retry_after: int, wants_json: bool) -> Response:
    headers = {**PAGE_HEADERS, "Retry-After": str(retry_after)}
    text = f"Too many requests from your address; try again in {retry_after} seconds."
    if wants_json:
        return JSONResponse(error_body("rate_limited", text), status_code=429, headers=headers)
    response = message(settings, "Please wait", text, status=429, error=True)
    response.headers["Retry-After"] = str(retry_after)
    return response
