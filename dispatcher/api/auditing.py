"""Every write through the API, in the audit log: an ASGI middleware that records one entry per
non-GET request under /v1/ made with a valid key (provider webhooks, signed by the provider, and the
preview, which writes nothing, excluded), refusals included: a key's 403 or 422 is worth seeing.

A request whose key is missing, unknown or revoked writes no row: anyone on the network could send
those by the thousand, and a table that strangers can fill is no audit. Its refusal is in the access
log, with its request id and client address.

The entry is written when the answer's status is known, before the answer goes out (so a client
that has its answer finds the entry), in its own short transaction, so it never joins or undoes the
request's own; an audit write that fails is logged and the answer goes out unchanged. It names the
key by display prefix and id with its role, never the key, and the route's parameters as the
target, never the body (bodies may hold addresses).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings
from dispatcher.auth import find_key
from dispatcher.store.audit import record_audit
from dispatcher.store.db import get_database

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNAUDITED_PREFIXES = ("/v1/webhooks/",)  # signed by providers, not made with a key
READ_ONLY_POSTS = frozenset({"/v1/preview"})  # a POST for its body's size; it writes nothing

# (method, route template) -> the action's readable name; any other route is "METHOD template".
ACTIONS: dict[tuple[str, str], str] = {
    ("POST", "/v1/incidents"): "incident.open",
    ("POST", "/v1/incidents/{incident_id}/updates"): "incident.update",
    ("POST", "/v1/maintenances"): "maintenance.schedule",
    ("PATCH", "/v1/maintenances/{maintenance_id}"): "maintenance.move",
    ("POST", "/v1/maintenances/{maintenance_id}/cancel"): "maintenance.cancel",
    ("PUT", "/v1/subscribers/{external_id}"): "subscriber.put",
    ("DELETE", "/v1/subscribers/{external_id}"): "subscriber.delete",
    ("POST", "/v1/subscribers/import"): "subscribers.import",
    ("POST", "/v1/subscribers/{external_id}/token"): "subscriber.rotate_token",
    ("DELETE", "/v1/suppressions/{suppression_id}"): "suppression.remove",
    ("POST", "/v1/broadcasts/{broadcast_id}/retry-failed"): "broadcast.retry_failed",
    ("POST", "/v1/deliveries/{delivery_id}/resend"): "delivery.resend",
    ("POST", "/v1/deliveries/{delivery_id}/reveal"): "delivery.reveal_address",  # as the dashboard's
}


def audited(scope: Scope) -> bool:
    """Whether this request is a write made with a key under /v1/."""
    path: str = scope["path"]
    if scope["method"] in SAFE_METHODS or not path.startswith("/v1/"):
        return False
    if path.startswith(UNAUDITED_PREFIXES) or path in READ_ONLY_POSTS:
        return False
    return any(name.lower() == b"authorization" for name, _ in scope["headers"])


def action_of(method: str, template: str | None, path: str) -> str:
    """`POST /v1/incidents` -> `incident.open`; an unnamed route is method + template, and a path
    that matched no route is method + path (clipped by the store)."""
    if template is None:
        return f"{method} {path}"
    return ACTIONS.get((method, template), f"{method} {template}")


NOUNS = {"external_id": "subscriber"}  # a route parameter whose name does not say what it names


def target_of(path_params: dict[str, Any]) -> str | None:
    """{"incident_id": 12} -> "incident 12"; several parameters joined with ", "."""
    parts = [f"{NOUNS.get(name, name.removesuffix('_id'))} {value}" for name, value in path_params.items()]
    return ", ".join(parts) or None


_TEMPLATES = [(method, template, compile_path(template)[0]) for method, template in ACTIONS]


def route_of(scope: Scope) -> tuple[str | None, dict[str, Any]]:
    """The route template and parameters the router matched; for a request refused before routing
    (a 413 from the body limit), the named route it would have matched, if any."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", None), dict(scope.get("path_params") or {})
    for method, template, pattern in _TEMPLATES:
        found = pattern.match(scope["path"])
        if method == scope["method"] and found:
            return template, found.groupdict()
    return None, {}


def client_of(scope: Scope, trusted_hops: int) -> str | None:
    """The client's address by the rule the public pages' limits use (public/pages.py
    `client_address`): behind `DISPATCHER_TRUSTED_PROXY_HOPS` proxies of our own, the address the
    outermost of them saw in X-Forwarded-For, counted from the right; else the peer."""
    peer = scope["client"][0] if scope.get("client") else None
    if trusted_hops <= 0:
        return peer
    forwarded = [
        part.strip()
        for name, value in scope["headers"]
        if name.lower() == b"x-forwarded-for"
        for part in value.decode("latin-1").split(",")
        if part.strip()
    ]
    return forwarded[-trusted_hops] if len(forwarded) >= trusted_hops else peer


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class AuditTrail:
    """Records the entry at `http.response.start` (or a 500 if the app raised before answering)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not audited(scope):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        written = False

        async def capture(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                written = True
                await run_in_threadpool(self._write, scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Exception:  # not a cancellation (the client went away): there is no answer to record
            if not written:
                written = True
                await run_in_threadpool(self._write, scope, 500)
            raise

    def _write(self, scope: Scope, status: int) -> None:
        """One short transaction; never raises (the answer must go out as the request made it)."""
        try:
            state = scope.get("state", {})
            caller = state.get("caller")
            template, params = route_of(scope)
            # urgent: an operator's write goes before a flood's (the answer waits for this entry)
            with get_database(self.settings).session(urgent=True) as session:
                if caller is None:  # refused before the key was checked (413, 400): look it up
                    token = _bearer(scope)
                    row = find_key(session, token) if token else None
                    if row is None:  # no valid key: the access log has it, the table does not
                        return
                    actor, role, key_id = row.prefix, row.role, row.id
                else:
                    actor, role, key_id = caller.prefix, caller.role.value, caller.key_id
                record_audit(
                    session,
                    actor=actor,
                    role=role,
                    key_id=key_id,
                    action=action_of(scope["method"], template, scope["path"]),
                    target=target_of(params) if template else None,
                    status=status,
                    client=client_of(scope, self.settings.trusted_proxy_hops),
                    request_id=state.get("request_id"),
                )
        except Exception:
            log.warning(
                "could not write the audit entry for %s %s", scope["method"], scope["path"], exc_info=True
            )
