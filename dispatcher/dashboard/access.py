"""Who may see a dashboard page: the session cookie looked up (and its key re-checked) on every
request, the cookies' flags, and the CSRF check every POST form passes."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from config import Settings
from dispatcher.api.deps import database_of, settings_of
from dispatcher.auth import Role
from dispatcher.dashboard import session as sessions
from dispatcher.dashboard.rendering import HEADERS, problem
from dispatcher.dashboard.session import COOKIE, COOKIE_PATH, DashSession

SIGN_IN_COOKIE = "od_dash_form"  # the sign-in form's own CSRF token (double-submit): no session yet


def secure(settings: Settings) -> bool:
    """Cookies are Secure when the dashboard is reached over https (the public URL says so)."""
    return settings.public_url.startswith("https://")


def set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure(settings),
    )


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure(settings)
    )


def current(request: Request) -> DashSession | None:
    """The signed-in session behind this request's cookie, if any."""
    settings = settings_of(request)
    with database_of(request).session() as db:
        return sessions.load(db, settings, request.cookies.get(COOKIE))


def to_sign_in() -> Response:
    return RedirectResponse("/dashboard", status_code=303, headers=HEADERS)


def signed_in(request: Request, *, need: Role | None = None) -> DashSession | Response:
    """The session, or the response to send instead: the sign-in form, or 403 for a key of another
    role than `need` (the API's rule: admins manage, commanders act, everyone reads)."""
    dash = current(request)
    if dash is None:
        return to_sign_in()
    if need is not None and dash.role is not need:
        title = "Admins only" if need is Role.ADMIN else "Commanders only"
        return problem(settings_of(request), dash, 403, title, f"A {dash.role.value} key may not do this.")
    return dash


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each); nothing for a malformed body."""
    try:
        parsed = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in parsed.items()}


def csrf_refused(request: Request, dash: DashSession | None) -> Response:
    return problem(
        settings_of(request),
        dash,
        403,
        "Please try again",
        "This form had expired or did not come from this dashboard. "
        "Go back, reload the page and send it again.",
    )
