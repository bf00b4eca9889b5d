"""Opaque cursors for keyset paging by row id: `next_cursor` hands back where a page ended.

A cursor names its kind (`d` deliveries, `i` incidents, `b` broadcasts, ...), so one list's cursor is
refused by another list rather than silently skipping rows there.
"""

from __future__ import annotations

import base64
import binascii

from dispatcher.domain.errors import ValidationFailed

MAX_ID = 2**63 - 1


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, field: str = "cursor") -> int:
    """The row id a cursor of `kind` stands for; a 422 naming `field` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, value = raw.partition(":")
        if found != kind or not value.isdigit() or int(value) > MAX_ID:
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(f"{field} is not one this API returned", fields=[field]) from None


def next_cursor(kind: str, ids: list[int], limit: int) -> str | None:
    """Given the ids of a page fetched with `limit + 1` rows, the cursor after its last row, or
    None when there is no further page."""
    return encode_cursor(kind, ids[limit - 1]) if len(ids) > limit else None
