"""Small pure helpers the read queries share: times as ISO strings, filter values checked by name."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from dispatcher.domain.errors import ValidationFailed

E = TypeVar("E", bound=StrEnum)
MAX_LIMIT = 1000


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def one_of(value: Any, choices: type[E], field: str) -> E | None:
    """`value` as a member of `choices` (None stays None); a 422 naming `field` otherwise."""
    if value is None:
        return None
    try:
        return choices(value)
    except ValueError:
        allowed = ", ".join(c.value for c in choices)
        raise ValidationFailed(f"{field} must be one of: {allowed}", fields=[field]) from None


def page_limit(limit: int, field: str = "limit") -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"{field} must be between 1 and {MAX_LIMIT}", fields=[field])
    return limit
