"""The channels' sample notices as the service's own message, for tests that compare with its enums."""

from __future__ import annotations

from channels.rendering import sample_fields
from dispatcher.domain.message import EventKind, OutageMessage


def sample_message(event: EventKind, *, full: bool = True) -> OutageMessage:
    """`channels.rendering.sample_fields(event)`, validated into an OutageMessage."""
    return OutageMessage.model_validate(sample_fields(event, full=full))
