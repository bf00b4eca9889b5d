"""Opaque cursors for keyset paging: `kind:value`, base64url, so a client cannot page by guessing
and a cursor from one list is refused by another."""

from __future__ import annotations

import base64
import binascii

from dispatcher.domain.errors import ValidationFailed

MAX_ID = 2**63 - 1


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, field: str = "cursor") -> int:
    """The value a cursor of `kind` carries; a 422 naming `field` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, value = raw.partition(":")
        if found != kind or not value.isdigit() or int(value) > MAX_ID:
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(f"{field} is not one this API returned", fields=[field]) from None
