"""Structured JSON logs with personal data masked: emails and phone numbers never reach a log line.

Masking happens in the formatter, on the fully formatted message, so no call site can forget it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
# E.164, tolerating the separators people type ("+1 415 555 0123").
_PHONE = re.compile(r"(?<![\w+])\+(\d(?:[ .\-]?\d){7,14})(?!\d)")
# Extra fields a record may carry into the JSON line (set with `extra=`).
FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "api_key",
    "request_id",
    "provider",
    "channel",
    "broadcast_id",
    "delivery_id",
    "outcome",
    "code",
    "provider_message_id",
)


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(1))
    return f"+{digits[:4]}******{digits[-2:]}"


def mask(text: str) -> str:
    """'jane@example.com' -> 'j***@example.com'; '+14155550123' -> '+1415******23'."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(_phone, text)


class MaskingJsonFormatter(logging.Formatter):
    """One JSON object per line; message, arguments, extras and tracebacks all masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = mask(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


_MARK = "_dispatcher_handler"


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Routes every logger through one masking JSON handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(MaskingJsonFormatter())
    setattr(handler, _MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
