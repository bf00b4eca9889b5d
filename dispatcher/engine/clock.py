"""The engine's clock: every timestamp it writes is an aware UTC instant from here."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
