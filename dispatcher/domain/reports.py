"""Which provider status reports move which deliveries: the rule, pure, for one report or a batch.

A report names a delivery, but that is only a claim (engine/status_reports.py). It moves its row only
if the row is on the report's channel, was accepted (sent, with a recorded provider id), the ids
match (`same_message`), and only ever forward (states.RANK). A batch is judged as if its reports came
one by one, in order, so applying it in bulk ends where applying it one report at a time would: each
report's verdict, and each delivery's chain of moves (nearly always one), applied in rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple

from dispatcher.domain.states import RANK, DeliveryState


class Verdict(StrEnum):
    """What became of a provider's status report. Only `applied` changes anything."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"  # a duplicate, or older than what the row already says
    NOT_RECORDED = "not_recorded"  # the row is `sending`: its provider id is not recorded yet
    # ignored, and counted by reason:
    UNKNOWN_DELIVERY = "unknown_delivery"
    WRONG_CHANNEL = "wrong_channel"
    NOT_SENT = "not_sent"
    ID_MISMATCH = "id_mismatch"


IGNORED = frozenset({Verdict.UNKNOWN_DELIVERY, Verdict.WRONG_CHANNEL, Verdict.NOT_SENT, Verdict.ID_MISMATCH})


class Row(NamedTuple):
    """What the rule needs of a delivery row."""

    state: DeliveryState
    channel: str
    provider_message_id: str | None
    broadcast_id: int


class Claim(NamedTuple):
    """What one report claims: a delivery (None when the report names none of ours), the channel of
    the provider that sent it (None for a provider we do not know), a state and the provider's id."""

    delivery_id: int | None
    channel: str | None
    state: DeliveryState
    provider_message_id: str | None


class Move(NamedTuple):
    """One row's move, and the index of the report (in the batch) that makes it."""

    delivery_id: int
    expect: DeliveryState
    to: DeliveryState
    report: int


SameMessage = Callable[[str, str, str], bool]  # (channel, recorded id, reported id)


def judge(row: Row | None, claim: Claim, same_message: SameMessage) -> Verdict:
    """One report against the row as it stands."""
    if row is None or claim.channel is None:
        return Verdict.UNKNOWN_DELIVERY
    if row.channel != claim.channel:
        return Verdict.WRONG_CHANNEL
    if row.state is DeliveryState.SENDING:
        return Verdict.NOT_RECORDED
    recorded = row.provider_message_id
    if row.state is DeliveryState.PENDING or not recorded:  # never accepted, as far as we know
        return Verdict.NOT_SENT
    if not claim.provider_message_id or not same_message(row.channel, recorded, claim.provider_message_id):
        return Verdict.ID_MISMATCH
    if RANK[row.state] >= RANK[claim.state]:
        return Verdict.UNCHANGED
    return Verdict.APPLIED


def plan(
    rows: Mapping[int, Row], claims: Sequence[Claim], same_message: SameMessage
) -> tuple[list[Verdict], list[list[Move]]]:
    """Each claim's verdict, and the moves in rounds: round k holds every delivery's k-th move, so
    rows move through the same states (and histories) as one report at a time would take them."""
    current = dict(rows)
    verdicts: list[Verdict] = []
    chains: dict[int, list[Move]] = {}
    for index, claim in enumerate(claims):
        row = current.get(claim.delivery_id) if claim.delivery_id is not None else None
        verdict = judge(row, claim, same_message)
        verdicts.append(verdict)
        if verdict is Verdict.APPLIED and row is not None and claim.delivery_id is not None:
            chains.setdefault(claim.delivery_id, []).append(
                Move(claim.delivery_id, row.state, claim.state, index)
            )
            current[claim.delivery_id] = row._replace(state=claim.state)
    depth = max((len(chain) for chain in chains.values()), default=0)
    rounds = [[chain[k] for chain in chains.values() if len(chain) > k] for k in range(depth)]
    return verdicts, rounds
