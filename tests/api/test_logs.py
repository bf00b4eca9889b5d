"""Masking: personal data never reaches a log line, whichever way it is logged."""

from __future__ import annotations

import io
import json
import logging

from dispatcher.logs import MaskingJsonFormatter, configure, mask


def test_mask() -> None:
    assert mask("to jane.doe@example.com") == "to j***@example.com"
    assert mask("sms +14155550123 sent") == "sms +1415******23 sent"
    assert mask("call +1 415 555 0123") == "call +1415******23"
    assert mask("broadcast 12345678 tier 2") == "broadcast 12345678 tier 2"


def test_formatter_masks_message_args_and_tracebacks() -> None:
    stream = io.StringIO()
    configure("INFO", stream)
    logger = logging.getLogger("test.masking")
    logger.info("sending to %s and %s", "ann@example.com", "+14155550101", extra={"path": "/x"})
    try:
        raise ValueError("bad address bob@example.org")
    except ValueError:
        logger.exception("failed for %s", "+447700900123")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "ann@example.com" not in text and "+14155550101" not in text and "bob@example.org" not in text
    assert "+447700900123" not in text
    assert lines[0]["message"] == "sending to a***@example.com and +1415******01" and lines[0]["path"] == "/x"
    assert isinstance(logging.getLogger().handlers[-1].formatter, MaskingJsonFormatter)
    configure("INFO")
