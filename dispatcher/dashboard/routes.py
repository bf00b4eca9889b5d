"""The dashboard's routes: sign-in and sign-out, its two static files, the incidents and the audit
log. The broadcast pages are in `broadcasts.py`. GETs only read; every POST carries a CSRF token."""

from __future__ import annotations

import secrets
from hmac import compare_digest
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from config import Settings
from dispatcher.api.deps import database_of, settings_of
from dispatcher.auth import Role
from dispatcher.dashboard import access, actions, broadcasts
from dispatcher.dashboard import session as sessions
from dispatcher.dashboard.access import SIGN_IN_COOKIE
from dispatcher.dashboard.rendering import HEADERS, asset, page, problem
from dispatcher.dashboard.session import COOKIE
from dispatcher.domain.errors import NotFound, ValidationFailed
from dispatcher.domain.message import Kind, Status
from dispatcher.public.pages import client_address, over_limit
from dispatcher.reads.audit import list_audit
from dispatcher.reads.incidents import incident_story, list_incidents

router = APIRouter(prefix="/dashboard", include_in_schema=False)
router.include_router(broadcasts.router)
router.include_router(actions.router)
INCIDENT_STATUSES = tuple(s.value for s in Status)
KINDS = tuple(k.value for k in Kind)


@router.get("/static/{name}")
def static(name: str) -> Response:
    found = asset(name)
    return found if found is not None else Response(status_code=404)


# ---- sign-in and sign-out ----------------------------------------------------------------------


def _sign_in_page(
    settings: Settings, request: Request, status: int = 200, error: str | None = None
) -> Response:
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(24)
    response = page(settings, "sign_in.html.j2", "Sign in", None, status, csrf_token=token, error=error)
    access.set_cookie(response, settings, SIGN_IN_COOKIE, token, 3600)
    return response


@router.get("")
def home(request: Request) -> Response:
    """The sign-in form, or the incidents for a browser already signed in."""
    if access.current(request) is not None:
        return RedirectResponse("/dashboard/incidents", status_code=303, headers=HEADERS)
    return _sign_in_page(settings_of(request), request)


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Exchanges an API key (form field `key`) for a session cookie; limited per client address."""
    settings = settings_of(request)
    who = client_address(request, settings.trusted_proxy_hops)
    wait = over_limit(settings, "dash-sign-in", who, settings.dashboard_sign_ins_per_hour)
    if wait is not None:
        text = f"Too many sign-in attempts from your address; try again in {wait} seconds."
        response = problem(settings, None, 429, "Please wait", text)
        response.headers["Retry-After"] = str(wait)
        return response
    fields = await access.form(request)
    cookie, sent = request.cookies.get(SIGN_IN_COOKIE) or "", fields.get("csrf_token") or ""
    if not cookie or not compare_digest(cookie.encode(), sent.encode()):
        return _sign_in_page(settings, request, 403, "This form had expired: sign in again.")

    def exchange() -> sessions.DashSession | None:
        with database_of(request).session() as db:
            return sessions.sign_in(db, settings, fields.get("key") or "")

    dash = await anyio.to_thread.run_sync(exchange)
    if dash is None:
        return _sign_in_page(
            settings, request, 401, "That key is not valid (or was revoked). Nothing is shown."
        )
    response = RedirectResponse("/dashboard/incidents", status_code=303, headers=HEADERS)
    access.set_cookie(response, settings, COOKIE, dash.token, settings.dashboard_session_ttl_s)
    response.delete_cookie(SIGN_IN_COOKIE, path="/dashboard")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    dash = await anyio.to_thread.run_sync(access.current, request)
    if dash is None:
        return access.to_sign_in()
    if not sessions.csrf_ok(dash, (await access.form(request)).get("csrf_token")):
        return access.csrf_refused(request, dash)
    sessions.sign_out(settings_of(request), dash.token)
    response = RedirectResponse("/dashboard", status_code=303, headers=HEADERS)
    access.clear_cookie(response, settings_of(request))
    return response


# ---- incidents ---------------------------------------------------------------------------------


def _choice(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise ValidationFailed(f"{field}: one of {', '.join(allowed)}", fields=[field])
    return value


@router.get("/incidents")
def incidents(
    request: Request, status: str | None = None, kind: str | None = None, cursor: str | None = None
) -> Response:
    dash = access.signed_in(request)
    if isinstance(dash, Response):
        return dash
    settings = settings_of(request)
    try:
        filters: dict[str, Any] = {
            "status": _choice(status, INCIDENT_STATUSES, "status"),
            "kind": _choice(kind, KINDS, "kind"),
        }
        with database_of(request).session() as db:
            found = list_incidents(db, cursor=cursor or None, limit=50, **filters)
    except ValidationFailed as exc:
        return problem(settings, dash, 422, "Not a valid filter", exc.message)
    return page(
        settings,
        "incidents.html.j2",
        "Incidents",
        dash,
        incidents=found["incidents"],
        next_cursor=found["next_cursor"],
        filters=filters,
        statuses=INCIDENT_STATUSES,
        kinds=KINDS,
    )


@router.get("/incidents/{incident_id}")
def incident(request: Request, incident_id: int) -> Response:
    dash = access.signed_in(request)
    if isinstance(dash, Response):
        return dash
    settings = settings_of(request)
    try:
        with database_of(request).session() as db:
            story = incident_story(db, incident_id)
    except NotFound:
        return problem(settings, dash, 404, "Not found", f"There is no incident {incident_id}.")
    return page(settings, "incident.html.j2", f"Incident #{incident_id}", dash, incident=story)


# ---- the audit log (admins) --------------------------------------------------------------------


@router.get("/audit")
def audit(
    request: Request, cursor: str | None = None, actor: str | None = None, action: str | None = None
) -> Response:
    dash = access.signed_in(request, need=Role.ADMIN)
    if isinstance(dash, Response):
        return dash
    settings = settings_of(request)
    try:
        with database_of(request).session() as db:
            found = list_audit(db, cursor=cursor or None, actor=actor or None, action=action or None)
    except ValidationFailed as exc:
        return problem(settings, dash, 422, "Not a valid filter", exc.message)
    return page(
        settings,
        "audit.html.j2",
        "Audit log",
        dash,
        entries=found["entries"],
        next_cursor=found["next_cursor"],
        filters={"actor": actor or "", "action": action or ""},
    )
