"""API keys: random, shown once, stored only as a SHA-256 hash (they are high-entropy, so a
plain hash cannot be brute-forced the way a password could)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatcher.domain.errors import ConfigurationError
from dispatcher.store.models import ApiKey


class Role(StrEnum):
    COMMANDER = "commander"  # broadcast and read
    VIEWER = "viewer"  # read only
    ADMIN = "admin"  # subscribers and keys


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, role: Role, label: str | None = None, key: str | None = None) -> str:
    """Stores a key's hash and returns the key itself, which is never stored."""
    key = key or "od_" + secrets.token_urlsafe(32)
    session.add(ApiKey(role=role.value, key_hash=hash_key(key), prefix=key[:8], label=label))
    return key


def issue_key(session: Session, role: Role, label: str | None = None) -> tuple[int, str]:
    """A new random key and its id (the handle for logs and `keys revoke`)."""
    key = create_key(session, role, label)
    session.flush()
    key_id = session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(key)))
    assert key_id is not None
    return key_id, key


def key_active(session: Session, key_id: int) -> bool:
    """Whether the key with this id still exists unrevoked (open streams re-check it)."""
    return (
        session.scalar(select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))) is not None
    )


def find_key(session: Session, key: str) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    return row if row is not None and row.revoked_at is None else None


def revoke_key(session: Session, key_id: int) -> bool:
    """Revokes exactly the key with this id (a display prefix can be shared by several keys);
    returns whether an active key was revoked."""
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
    if row is None:
        return False
    row.revoked_at = datetime.now(UTC)
    return True


MIN_BOOTSTRAP_KEY_CHARS = 32  # a hand-chosen key must be at least as hard to guess as 190 random bits


def parse_bootstrap(spec: str) -> list[tuple[Role, str]]:
    """`DISPATCHER_API_KEYS="commander:k1,viewer:k2"` -> [(Role, key)]; errors name the setting and
    the entry's position and role, never the key's characters."""
    pairs: list[tuple[Role, str]] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        role, sep, key = item.partition(":")
        if not sep or not key:
            raise ConfigurationError(
                "DISPATCHER_API_KEYS entries must be role:key", fields=["DISPATCHER_API_KEYS"]
            )
        try:
            parsed = Role(role.strip())
        except ValueError:
            raise ConfigurationError(
                f"DISPATCHER_API_KEYS: unknown role '{role}' (commander, viewer, admin)",
                fields=["DISPATCHER_API_KEYS"],
            ) from None
        if len(key.strip()) < MIN_BOOTSTRAP_KEY_CHARS:
            raise ConfigurationError(
                f"DISPATCHER_API_KEYS: the {parsed.value} key (entry {len(pairs) + 1}) has "
                f"{len(key.strip())} characters; keys need at least {MIN_BOOTSTRAP_KEY_CHARS}",
                fields=["DISPATCHER_API_KEYS"],
            )
        pairs.append((parsed, key.strip()))
    return pairs


def bootstrap_keys(session: Session, spec: str) -> int:
    """Adds the keys from the environment that are not stored yet; idempotent across restarts."""
    added = 0
    for role, key in parse_bootstrap(spec):
        if session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(key))) is None:
            create_key(session, role, label="bootstrap", key=key)
            added += 1
    return added
