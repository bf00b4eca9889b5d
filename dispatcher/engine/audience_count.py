"""What planning a broadcast would write, counted per (tier, channel), sending and writing nothing.

The preview's answer must be the broadcast's plan, so this walks the audience exactly as
plan_pages does: tier by tier in ascending order, a page of each tier's subscribers at a time
(subscribers_in_tier, planning_columns), each row's deliveries by the planner's own targets_of, a
(channel, address) counted only at the first tier that reaches it (planning's ON CONFLICT DO
NOTHING, earlier tiers first), and the public tier's social post.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy.orm import Session

from channels.base import ChannelName
from dispatcher.domain import audience
from dispatcher.engine.planner import planning_columns, subscribers_in_tier, targets_of


def count_planned(
    session: Session,
    tiers: Sequence[int],
    public_tier: int | None,
    sending_on: Sequence[ChannelName],
    components: Sequence[str],
    regions: Sequence[str],
    readers: Counter[tuple[str, str]] | None = None,
) -> Counter[tuple[int, ChannelName]]:
    """The delivery rows planning would write for a message going out on `sending_on`, scoped to
    `components`/`regions`, over `tiers` of which `public_tier` is the public one. Only reads.
    With `readers`, also counts there the subscribers reached per (locale, timezone) as stored."""
    columns = planning_columns(bool(components or regions))
    planned: set[tuple[ChannelName, str]] = set()
    counts: Counter[tuple[int, ChannelName]] = Counter()

    def plan(tier: int, targets: list[audience.Target]) -> None:
        for target in targets:
            key = (target.channel, target.address)
            if key not in planned:  # an earlier tier has it: planning's insert skips it here
                planned.add(key)
                counts[(tier, target.channel)] += 1

    for tier in sorted(tiers):
        if tier == public_tier:
            plan(tier, audience.public_targets(sending_on))
            continue
        after: int | None = 0
        while after is not None:
            page, after = subscribers_in_tier(session, tier, after, columns, components, regions)
            for sub in page:
                before = len(planned)
                plan(tier, targets_of(sub, sending_on, components, regions))
                if readers is not None and len(planned) > before:
                    readers[(sub.locale, sub.timezone)] += 1
    return counts
