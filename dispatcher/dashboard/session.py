"""Dashboard sign-in sessions: an API key is exchanged once for a random token, kept by the browser
in an HttpOnly cookie; Redis maps the token's hash to the key's id and role, with a TTL.

The key itself is never stored nor sent back; a session dies with its key (checked on every
request), at its TTL, or at sign-out. Each session carries its own CSRF token for POST forms.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from hmac import compare_digest

import redis
from sqlalchemy.orm import Session

from config import Settings
from dispatcher.auth import Role, find_key, key_active
from dispatcher.store.redis_client import get_redis, key

COOKIE = "od_dash"
COOKIE_PATH = "/dashboard"


@dataclass(frozen=True)
class DashSession:
    token: str
    key_id: int
    role: Role
    prefix: str  # the key's display prefix (od_AbCdE): how audit entries name the actor
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def _name(settings: Settings, token: str) -> str:
    """The Redis key of a session: the token's hash, so a Redis dump holds no usable cookie."""
    return key("dash", "session", hashlib.sha256(token.encode()).hexdigest(), settings=settings)


def sign_in(session: Session, settings: Settings, api_key: str) -> DashSession | None:
    """A new session for an active key of any role, or None for a wrong or revoked one."""
    row = find_key(session, api_key.strip()) if api_key.strip() else None
    if row is None:
        return None
    made = DashSession(
        token=secrets.token_urlsafe(32),
        key_id=row.id,
        role=Role(row.role),
        prefix=row.prefix,
        csrf=secrets.token_urlsafe(24),
    )
    record = {"key_id": made.key_id, "role": made.role.value, "prefix": made.prefix, "csrf": made.csrf}
    get_redis(settings).set(
        _name(settings, made.token), json.dumps(record), ex=settings.dashboard_session_ttl_s
    )
    return made


def load(session: Session, settings: Settings, token: str | None) -> DashSession | None:
    """The live session behind a cookie: None when there is none, it expired, or its key was revoked
    (then it is removed at once)."""
    if not token or len(token) > 200:
        return None
    try:
        raw = get_redis(settings).get(_name(settings, token))
    except redis.RedisError:
        return None  # fail closed: no Redis, no dashboard
    if raw is None:
        return None
    record = json.loads(raw)
    if not key_active(session, int(record["key_id"])):
        sign_out(settings, token)
        return None
    return DashSession(token, int(record["key_id"]), Role(record["role"]), record["prefix"], record["csrf"])


def still_valid(settings: Settings, token: str) -> bool:
    """Whether the session still exists (an open stream checks this and the key, once per beat)."""
    try:
        return bool(get_redis(settings).exists(_name(settings, token)))
    except redis.RedisError:
        return False


def sign_out(settings: Settings, token: str) -> None:
    get_redis(settings).delete(_name(settings, token))


def csrf_ok(dash: DashSession, sent: str | None) -> bool:
    return bool(sent) and compare_digest(dash.csrf.encode(), (sent or "").encode())
