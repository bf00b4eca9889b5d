"""Request dependencies: the settings, the database, the progress hub, and who is calling with which role."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config import Settings
from dispatcher.api.progress_hub import ProgressHub
from dispatcher.auth import Role, find_key
from dispatcher.domain.errors import Forbidden, Unauthorized
from dispatcher.store.db import Database, get_database

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def database_of(request: Request) -> Database:
    return get_database(settings_of(request))


def progress_hub_of(request: Request) -> ProgressHub:
    """The app's one progress reader per broadcast, which every live stream subscribes to."""
    hub: ProgressHub = request.app.state.progress_hub
    return hub


# The same three as dependencies (`Depends(get_db)`). They are `async def` because FastAPI runs a plain
# `def` dependency in its thread pool: two thread hops per request for two attribute reads, which
# was a third of a provider callback's CPU in the API (benchmarks/callbacks.py).
async def get_settings(request: Request) -> Settings:
    return settings_of(request)


async def get_db(request: Request) -> Database:
    return database_of(request)


async def get_progress_hub(request: Request) -> ProgressHub:
    return progress_hub_of(request)


@dataclass(frozen=True)
class Caller:
    key_id: int
    role: Role
    prefix: str


def require(*roles: Role) -> Callable[..., Caller]:
    """A dependency admitting keys with one of `roles`: 401 for no or a bad key, 403 for a wrong role."""

    def _check(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Caller:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        with database_of(request).session() as session:
            row = find_key(session, credentials.credentials)
            caller = Caller(row.id, Role(row.role), row.prefix) if row is not None else None
        if caller is None:
            raise Unauthorized("unknown or revoked API key")
        request.state.api_key = caller.key_id  # logs name the key by id, never by its characters
        request.state.caller = caller  # the audit log names its prefix and role, a 403 included
        if caller.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"a {caller.role.value} key may not do this (needs: {allowed})")
        return caller

    return _check


READ = require(Role.COMMANDER, Role.VIEWER, Role.ADMIN)
BROADCAST = require(Role.COMMANDER)
MANAGE = require(Role.ADMIN)
