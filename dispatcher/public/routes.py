"""The subscribers' front door: public routes, no API key, every one limited per client address.

GETs only show pages (link scanners and mail clients prefetch links); every change is a POST that
carries either the secret link token or, on the sign-up form, a CSRF token (double-submit cookie).
"""

from __future__ import annotations

import json
import secrets
from hmac import compare_digest
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import EmailStr, TypeAdapter, ValidationError

from channels.base import ChannelName
from config import Settings
from dispatcher import subscriptions
from dispatcher.api.deps import get_db, get_settings
from dispatcher.api.errors import error_body
from dispatcher.domain.subscribers import e164
from dispatcher.engine.outbox import Outbox
from dispatcher.logs import mask
from dispatcher.public.pages import (
    client_address,
    message,
    over_limit,
    page,
    stylesheet,
    too_many,
)
from dispatcher.store.db import Database

router = APIRouter(tags=["subscribers (public)"], include_in_schema=True)
CSRF_COOKIE = "od_csrf"
ONE_CLICK = "One-Click"
LABELS = {"email": "Email", "sms": "SMS"}
_EMAIL = TypeAdapter(EmailStr)
MAX_COMPONENTS = 100


class FieldError(Exception):
    def __init__(self, field: str, text: str) -> None:
        super().__init__(text)
        self.field = field
        self.text = text


def _limited(request: Request, settings: Settings, kind: str, wants_json: bool = False) -> Response | None:
    limit = settings.public_posts_per_hour if kind == "post" else settings.public_views_per_hour
    wait = over_limit(settings, kind, client_address(request, settings.trusted_proxy_hops), limit)
    return too_many(settings, wait, wants_json) if wait is not None else None


async def _form(request: Request) -> dict[str, list[str]]:
    body = await request.body()
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=300)
    except (UnicodeDecodeError, ValueError):
        return {}


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


@router.get("/pages/site.css", include_in_schema=False)
def site_css() -> Response:
    return stylesheet()


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """Browsers ask for one on every page; an empty answer beats a 404 in every log."""
    return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})


# ---- one-click unsubscribe (RFC 8058) ----------------------------------------------------------

_INVALID_LINK = (
    "This link is not valid: it may be mistyped, or replaced by a newer one.",
    "Nothing was changed. The unsubscribe link in your latest email works.",
)


@router.get("/unsubscribe", summary="The unsubscribe page (changes nothing: its button POSTs)")
def unsubscribe_page(
    request: Request,
    token: str = "",
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> Response:
    if limited := _limited(request, settings, "view"):
        return limited
    with database.session() as session:
        sub = subscriptions.find_by_link_token(session, token)
        address = mask(sub.email) if sub is not None and sub.email else None
    if address is None:
        return message(settings, "Link not valid", *_INVALID_LINK, status=404, error=True)
    return page(settings, "unsubscribe.html.j2", "Unsubscribe", address=address, token=token)


@router.post("/unsubscribe", summary="RFC 8058 one-click unsubscribe: body `List-Unsubscribe=One-Click`")
async def unsubscribe(
    request: Request,
    token: str = "",
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> Response:
    if limited := _limited(request, settings, "view"):
        return limited
    form = await _form(request)
    if _one(form, "List-Unsubscribe") != ONE_CLICK:
        return message(
            settings,
            "Nothing changed",
            "An unsubscribe request must carry List-Unsubscribe=One-Click; use the button on the page.",
            status=400,
            error=True,
        )
    done = await anyio.to_thread.run_sync(_unsubscribe, database, settings, token)
    if not done:
        return message(settings, "Link not valid", *_INVALID_LINK, status=404, error=True)
    return message(
        settings,
        "You are unsubscribed",
        f"You will get no more {settings.service_name} emails.",
        "A message already on its way may still arrive.",
    )


def _unsubscribe(database: Database, settings: Settings, token: str) -> bool:
    outbox = Outbox()
    with database.session() as session:
        sub = subscriptions.find_by_link_token(session, token)
        if sub is None:
            return False
        subscriptions.unsubscribe(session, settings, sub, outbox)
    outbox.hand_off()  # committed: a broker outage is the sweeper's to cover, never a 5xx
    return True


# ---- sign-up with double opt-in ----------------------------------------------------------------


def _csrf_page(settings: Settings, request: Request, status: int = 200, **context: Any) -> Response:
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    context.setdefault("form", {})
    context.setdefault("chosen_components", [])
    context.setdefault("error", None)
    context.setdefault("error_field", None)
    response = page(
        settings,
        "subscribe.html.j2",
        "Subscribe to status notices",
        status,
        csrf_token=token,
        components_offered=settings.public_components,
        **context,
    )
    response.set_cookie(
        CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=24 * 3600,
    )
    return response


@router.get("/subscribe", summary="The sign-up form")
def subscribe_page(request: Request, settings: Settings = Depends(get_settings)) -> Response:
    if limited := _limited(request, settings, "view"):
        return limited
    return _csrf_page(settings, request)


def parse_signup(settings: Settings, data: dict[str, Any]) -> subscriptions.SignupRequest:
    """Validates a sign-up (form or JSON); a FieldError names the field at fault."""
    unknown = set(data) - {"email", "phone", "channels", "components", "csrf_token"}
    if unknown:
        raise FieldError(sorted(unknown)[0], f"{sorted(unknown)[0]}: unknown field")
    email = (data.get("email") or "").strip() or None
    phone = (data.get("phone") or "").strip() or None
    if email is not None:
        try:
            email = str(_EMAIL.validate_python(email)).lower()
        except ValidationError:
            raise FieldError("email", "email: not a valid email address") from None
    if phone is not None:
        try:
            phone = e164(phone)
        except ValueError as exc:
            raise FieldError("phone", f"phone: {exc}") from None
    if email is None and phone is None:
        raise FieldError("email", "email: give an email address or a phone number")
    raw_channels = data.get("channels") or []
    if not isinstance(raw_channels, list) or not all(isinstance(c, str) for c in raw_channels):
        raise FieldError("channels", "channels: a list of channel names")
    if any(c not in LABELS for c in raw_channels):
        raise FieldError("channels", "channels: only email and sms can be chosen here")
    given = {"email": email, "sms": phone}
    chosen = list(dict.fromkeys(raw_channels)) or [c for c, a in given.items() if a]
    channels = [ChannelName(c) for c in chosen if given[c]]
    if not channels:
        raise FieldError("channels", "channels: give the address for a chosen channel (email or phone)")
    raw = data.get("components") or []
    if isinstance(raw, str):
        raw = [part for part in raw.split(",")]
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise FieldError("components", "components: a list of component names")
    components = [c.strip() for c in raw if c.strip()]
    if not all(c.isprintable() for c in components):
        raise FieldError("components", "components: names may not hold control characters")
    if len(components) > MAX_COMPONENTS or any(len(c) > 100 for c in components):
        raise FieldError("components", "components: at most 100 names of at most 100 characters")
    offered = settings.public_components
    if offered and any(c not in offered for c in components):
        raise FieldError("components", "components: choose among " + ", ".join(offered))
    return subscriptions.SignupRequest(email, phone, tuple(channels), tuple(dict.fromkeys(components)))


NEUTRAL = (
    "Thanks. If this address can subscribe, a confirmation is on its way: "
    "open the link in the email, or reply YES to the text message. Nothing else is sent until then."
)


@router.post("/subscribe", status_code=202, summary="Sign up (form or JSON); always 202 when well-formed")
async def subscribe(
    request: Request, settings: Settings = Depends(get_settings), database: Database = Depends(get_db)
) -> Response:
    wants_json = request.headers.get("content-type", "").startswith("application/json")
    if limited := _limited(request, settings, "post", wants_json):
        return limited
    data: dict[str, Any]
    if wants_json:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse(error_body("malformed_json", "the body is not valid JSON"), status_code=400)
        if not isinstance(data, dict):
            return JSONResponse(error_body("validation_error", "the body must be a JSON object"), 422)
    else:
        form = await _form(request)
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        sent = _one(form, "csrf_token") or ""
        if not cookie or not compare_digest(cookie.encode(), sent.encode()):
            return message(
                settings,
                "Please try again",
                "This form had expired. Go back, reload the page and send it again.",
                status=403,
                error=True,
            )
        data = {
            "email": _one(form, "email"),
            "phone": _one(form, "phone"),
            "channels": form.get("channels", []),
            "components": form.get("components", []),
        }
        if len(data["components"]) == 1:
            data["components"] = data["components"][0].split(",")
    try:
        signup = parse_signup(settings, data)
    except FieldError as exc:
        if wants_json:
            return JSONResponse(error_body("validation_error", exc.text, [exc.field]), status_code=422)
        return _csrf_page(
            settings,
            request,
            422,
            form={"email": data.get("email"), "phone": data.get("phone")},
            chosen_components=[c for c in data.get("components", []) if isinstance(c, str)],
            error=exc.text,
            error_field=exc.field,
        )
    await anyio.to_thread.run_sync(_start, database, settings, signup)
    if wants_json:
        return JSONResponse({"status": "accepted", "message": NEUTRAL}, status_code=202)
    return message(settings, "Check your inbox", NEUTRAL, status=202)


def _start(database: Database, settings: Settings, signup: subscriptions.SignupRequest) -> None:
    from dispatcher.public.pages import over_limit as count
    from dispatcher.subscriptions import digest

    def allowed(channel: ChannelName, address: str) -> bool:
        who = digest(f"{channel.value}:{address.lower()}")[:32]  # no address in a Redis key
        return count(settings, "confirm", who, settings.confirmations_per_address_per_day, 86400) is None

    outbox = Outbox()
    with database.session() as session:
        subscriptions.start_signup(session, settings, signup, outbox, allowed=allowed)
    outbox.hand_off()  # committed: a broker outage is the sweeper's to cover, never a 5xx


_BAD_CONFIRM = (
    "This confirmation link is not valid or has expired. Nothing was changed.",
    "Sign up again to get a new one.",
)


@router.get("/subscribe/confirm", summary="The confirmation page (its button POSTs)")
def confirm_page(
    request: Request,
    token: str = "",
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> Response:
    if limited := _limited(request, settings, "view"):
        return limited
    with database.session() as session:
        signup = subscriptions.pending_signup(session, token)
        address = mask(signup.email or signup.phone or "") if signup is not None else None
    if address is None:
        return message(settings, "Link not valid", *_BAD_CONFIRM, status=404, error=True)
    return page(settings, "confirm.html.j2", "Confirm your subscription", address=address, token=token)


@router.post("/subscribe/confirm", summary="Confirm a sign-up (form field `token`)")
async def confirm(
    request: Request, settings: Settings = Depends(get_settings), database: Database = Depends(get_db)
) -> Response:
    if limited := _limited(request, settings, "post"):
        return limited
    token = _one(await _form(request), "token") or ""
    manage_token = await anyio.to_thread.run_sync(_confirm, database, settings, token)
    if manage_token is None:
        return message(settings, "Link not valid", *_BAD_CONFIRM, status=404, error=True)
    response = page(
        settings,
        "message.html.j2",
        "You are subscribed",
        lines=["Thanks: you will get status notices from now on."],
        error=False,
        link={"href": f"/manage?token={manage_token}", "text": "Choose what you get, or unsubscribe"},
    )
    return response


def _confirm(database: Database, settings: Settings, token: str) -> str | None:
    with database.session() as session:
        signup = subscriptions.pending_signup(session, token)
        sub = subscriptions.confirm(session, settings, signup) if signup is not None else None
        return sub.unsubscribe_token if sub is not None else None


# ---- the manage page ---------------------------------------------------------------------------


def _manage_page(settings: Settings, sub: Any, token: str, saved: bool = False) -> Response:
    reachable = [
        c for c in subscriptions.SIGNUP_CHANNELS if (sub.email if c is ChannelName.EMAIL else sub.phone)
    ]
    active = [c.value for c in reachable if c.value not in (sub.opt_outs or [])]
    return page(
        settings,
        "manage.html.j2",
        "Your subscription",
        token=token,
        reachable=reachable,
        active=active,
        labels=LABELS,
        addresses={"email": mask(sub.email or ""), "sms": mask(sub.phone or "")},
        components_offered=settings.public_components,
        chosen_components=list(sub.components or []),
        saved=saved,
    )


@router.get("/manage", summary="A subscriber's own settings page (secret link token)")
def manage_page(
    request: Request,
    token: str = "",
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> Response:
    if limited := _limited(request, settings, "view"):
        return limited
    with database.session() as session:
        sub = subscriptions.find_by_link_token(session, token)
        if sub is None:
            return message(settings, "Link not valid", *_INVALID_LINK, status=404, error=True)
        return _manage_page(settings, sub, token)


@router.post("/manage", summary="Change channels and components, or leave (form field `token`)")
async def manage(
    request: Request, settings: Settings = Depends(get_settings), database: Database = Depends(get_db)
) -> Response:
    if limited := _limited(request, settings, "post"):
        return limited
    form = await _form(request)
    token = _one(form, "token") or ""
    raw = form.get("components", [])
    if len(raw) == 1:
        raw = raw[0].split(",")
    try:
        parsed = parse_signup(
            settings, {"email": "x@example.com", "components": raw}
        ).components  # components validated exactly as on sign-up
        channels = [ChannelName(c) for c in form.get("channels", []) if c in LABELS]
    except FieldError as exc:
        return message(settings, "Not saved", exc.text, status=422, error=True)
    leave = _one(form, "action") == "leave"
    return await anyio.to_thread.run_sync(_manage, database, settings, token, channels, list(parsed), leave)


def _manage(
    database: Database,
    settings: Settings,
    token: str,
    channels: list[ChannelName],
    components: list[str],
    leave: bool,
) -> Response:
    outbox = Outbox()
    with database.session() as session:
        sub = subscriptions.find_by_link_token(session, token)
        if sub is None:
            return message(settings, "Link not valid", *_INVALID_LINK, status=404, error=True)
        subscriptions.manage(
            session, settings, sub, channels=channels, components=components, leave=leave, outbox=outbox
        )
        response = (
            message(settings, "You are unsubscribed", "You will get no more status notices from us.")
            if leave
            else _manage_page(settings, sub, token, saved=True)
        )
    outbox.hand_off()  # committed: a broker outage is the sweeper's to cover, never a 5xx
    return response


# ---- SMS keywords (Twilio inbound messages) ----------------------------------------------------


@router.post(
    "/v1/webhooks/twilio/inbound",
    summary="Twilio inbound SMS (X-Twilio-Signature): STOP, START, HELP, YES",
    tags=["webhooks"],
)
async def twilio_inbound(
    request: Request, settings: Settings = Depends(get_settings), database: Database = Depends(get_db)
) -> Response:
    from dispatcher.api.webhooks import verified_twilio_form

    params = await verified_twilio_form(request, settings)
    try:
        phone = e164(params.get("From", ""))
    except ValueError:
        return _twiml(None)
    reply = await anyio.to_thread.run_sync(_keyword, database, settings, phone, params.get("Body", ""))
    return _twiml(reply)


def _keyword(database: Database, settings: Settings, phone: str, body: str) -> str | None:
    outbox = Outbox()
    with database.session() as session:
        reply = subscriptions.sms_keyword(session, settings, phone, body, outbox)
    outbox.hand_off()  # committed: a broker outage is the sweeper's to cover, never a 5xx
    return reply


def _twiml(reply: str | None) -> Response:
    from xml.sax.saxutils import escape

    inner = f"<Message>{escape(reply)}</Message>" if reply else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>',
        media_type="application/xml",
    )
