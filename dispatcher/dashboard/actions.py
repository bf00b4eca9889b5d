"""A commander's two actions from the dashboard, as the API offers them (api/actions.py): retry a
broadcast's failed deliveries, resend one delivery. Each is a POST form with the session's CSRF
token, audited like the API's, and answered with a redirect back to the page it came from (so a
reload does not repeat it). Clicked twice, a retry sends each row once: the second finds none
failed; a resend of a row on its way is refused (409)."""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from dispatcher.api.deps import database_of, settings_of
from dispatcher.auth import Role
from dispatcher.dashboard import access
from dispatcher.dashboard import session as sessions
from dispatcher.dashboard.rendering import HEADERS, problem
from dispatcher.domain.errors import Conflict, NotFound
from dispatcher.engine.clock import utcnow
from dispatcher.engine.outbox import Outbox
from dispatcher.engine.redelivery import queue_sends, resend, retry_failed
from dispatcher.public.pages import client_address
from dispatcher.store.audit import record_audit

router = APIRouter()


def _act(
    request: Request,
    dash: sessions.DashSession,
    action: str,
    target: str,
    work: Callable[[Session, Outbox], int],
) -> int:
    """Runs `work` and its audit entry in one transaction, then queues what it moved (after commit:
    a broker outage is the sweeper's to cover, as for the API)."""
    settings = settings_of(request)
    outbox = Outbox()
    with database_of(request).session() as db:
        queued = work(db, outbox)
        record_audit(
            db,
            actor=dash.prefix,
            role=dash.role.value,
            action=action,
            target=target,
            status=200,
            client=client_address(request, settings.trusted_proxy_hops),
            request_id=getattr(request.state, "request_id", None),
            key_id=dash.key_id,
        )
    outbox.hand_off()
    return queued


async def _commander(request: Request) -> sessions.DashSession | Response:
    dash = await anyio.to_thread.run_sync(lambda: access.signed_in(request, need=Role.COMMANDER))
    if isinstance(dash, Response):
        return dash
    if not sessions.csrf_ok(dash, (await access.form(request)).get("csrf_token")):
        return access.csrf_refused(request, dash)
    return dash


@router.post("/broadcasts/{broadcast_id}/retry-failed")
async def retry(request: Request, broadcast_id: int) -> Response:
    dash = await _commander(request)
    if isinstance(dash, Response):
        return dash
    settings = settings_of(request)

    def work(db: Session, outbox: Outbox) -> int:
        return queue_sends(db, settings, retry_failed(db, broadcast_id, utcnow()), outbox)

    try:
        queued = await anyio.to_thread.run_sync(
            _act, request, dash, "broadcast.retry_failed", f"broadcast {broadcast_id}", work
        )
    except NotFound:
        return problem(settings, dash, 404, "Not found", f"There is no broadcast {broadcast_id}.")
    return RedirectResponse(
        f"/dashboard/broadcasts/{broadcast_id}?retried={queued}", status_code=303, headers=HEADERS
    )


@router.post("/deliveries/{delivery_id}/resend")
async def resend_one(request: Request, delivery_id: int) -> Response:
    dash = await _commander(request)
    if isinstance(dash, Response):
        return dash
    settings = settings_of(request)

    def work(db: Session, outbox: Outbox) -> int:
        if not resend(db, delivery_id, utcnow()):
            raise Conflict(f"delivery {delivery_id} is being sent already")
        return queue_sends(db, settings, [delivery_id], outbox)

    try:
        await anyio.to_thread.run_sync(
            _act, request, dash, "delivery.resend", f"delivery {delivery_id}", work
        )
    except NotFound:
        return problem(settings, dash, 404, "Not found", f"There is no delivery {delivery_id}.")
    except Conflict as exc:
        return problem(settings, dash, 409, "Not sent again", exc.message)
    return RedirectResponse(f"/dashboard/deliveries/{delivery_id}?resent=1", status_code=303, headers=HEADERS)
