"""Every state a broadcast, a tier and a delivery can be in, and which delivery states are final.

Pure: the engine moves rows between these with conditional UPDATEs; dashboards and the API read
the same values back.
"""

from __future__ import annotations

from enum import StrEnum


class BroadcastState(StrEnum):
    """queued (recorded, its first task not yet run) -> planning -> sending -> completed."""

    QUEUED = "queued"
    PLANNING = "planning"
    SENDING = "sending"
    COMPLETED = "completed"


class TierState(StrEnum):
    """planning (pages being written) -> planned -> sending (started on a channel) -> done (its gate
    open on every channel, `gate` saying how)."""

    PLANNING = "planning"
    PLANNED = "planned"
    SENDING = "sending"
    DONE = "done"


class DeliveryState(StrEnum):
    """A delivery: pending -> sending -> sent -> delivered, or failed / bounced / undelivered /
    suppressed. The database keeps the value; every move is a conditional UPDATE (engine/transitions.py)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    UNDELIVERED = "undelivered"
    SUPPRESSED = "suppressed"


UNACCEPTED = frozenset({DeliveryState.PENDING, DeliveryState.SENDING})
FINAL = frozenset(
    {
        DeliveryState.DELIVERED,
        DeliveryState.FAILED,
        DeliveryState.BOUNCED,
        DeliveryState.UNDELIVERED,
        DeliveryState.SUPPRESSED,
    }
)
# Provider events only move a row forward. A bounce can follow "delivered" (mail servers bounce late).
RANK = {
    DeliveryState.PENDING: 0,
    DeliveryState.SENDING: 1,
    DeliveryState.SENT: 2,
    DeliveryState.DELIVERED: 3,
    DeliveryState.UNDELIVERED: 3,
    DeliveryState.FAILED: 3,
    DeliveryState.SUPPRESSED: 3,
    DeliveryState.BOUNCED: 4,
}
