"""Who gets which message on which channel: the pure half of planning a broadcast.

Works on plain values (not ORM rows or pydantic models) because it runs once per subscriber for
audiences of 100,000 and more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from channels.base import ChannelName

PERSONAL_CHANNELS = (ChannelName.EMAIL, ChannelName.CHAT, ChannelName.SMS, ChannelName.WEBHOOK)
PUBLIC_ADDRESS = "public"  # the social post's one "recipient"


@dataclass(frozen=True)
class Target:
    channel: ChannelName
    address: str


def addresses_of(subscriber: Any) -> dict[ChannelName, str | None]:
    """A subscriber's address per personal channel, from anything with the stored attribute names
    (an ORM row or a plain result row)."""
    return {
        ChannelName.EMAIL: subscriber.email,
        ChannelName.SMS: subscriber.phone,
        ChannelName.CHAT: subscriber.slack_channel,
        ChannelName.WEBHOOK: subscriber.webhook_url,
    }


def normalise_address(channel: ChannelName, address: str) -> str:
    """The key de-duplication uses: emails compare case-insensitively, the rest as given."""
    return address.strip().lower() if channel is ChannelName.EMAIL else address.strip()


def in_scope(
    wanted_components: Sequence[str],
    wanted_regions: Sequence[str],
    components: Sequence[str],
    regions: Sequence[str],
) -> bool:
    """A subscriber scoped to components/regions hears only about those; an empty scope, or a
    message that names no scope (it affects everything), always matches."""
    if wanted_components and components and not set(wanted_components) & set(components):
        return False
    return not (wanted_regions and regions and not set(wanted_regions) & set(regions))


def preference(
    channels: Sequence[str], opt_outs: Iterable[str], addresses: Mapping[ChannelName, str | None]
) -> list[ChannelName]:
    """Channels to receive on, best first: the stated order, else every channel with an address."""
    blocked = set(opt_outs)
    stated = [ChannelName(c) for c in channels]
    chosen = stated or [c for c in PERSONAL_CHANNELS if addresses.get(c)]
    return [c for c in chosen if c.value not in blocked and addresses.get(c)]


def failover_order(
    channels: Sequence[str], opt_outs: Iterable[str], addresses: Mapping[ChannelName, str | None]
) -> list[ChannelName]:
    """Where to try next when a channel fails: preferences first, then any other reachable channel."""
    blocked = set(opt_outs)
    first = preference(channels, opt_outs, addresses)
    rest = [c for c in PERSONAL_CHANNELS if c not in first and addresses.get(c) and c.value not in blocked]
    return first + rest


def targets(
    channels: Sequence[str],
    opt_outs: Iterable[str],
    addresses: Mapping[ChannelName, str | None],
    sending_on: Iterable[ChannelName],
) -> list[Target]:
    """The deliveries one subscriber gets for a broadcast that goes out on `sending_on`."""
    allowed = set(sending_on)
    return [
        Target(c, normalise_address(c, addresses[c] or ""))
        for c in preference(channels, opt_outs, addresses)
        if c in allowed
    ]


def broadcast_targets(
    channels: Sequence[str],
    opt_outs: Iterable[str],
    addresses: Mapping[ChannelName, str | None],
    sending_on: Iterable[ChannelName],
    *,
    wanted_components: Sequence[str] = (),
    wanted_regions: Sequence[str] = (),
    components: Sequence[str] = (),
    regions: Sequence[str] = (),
) -> list[Target]:
    """A subscriber's deliveries for one broadcast: none if the message is outside the scope they
    asked for (`wanted_*`), else their preferences less opt-outs on the channels it goes out on.
    The one rule planning and its preview both apply, so the preview counts what is planned."""
    if not in_scope(wanted_components, wanted_regions, components, regions):
        return []
    return targets(channels, opt_outs, addresses, sending_on)


def public_targets(sending_on: Iterable[ChannelName], *, internal: bool = False) -> list[Target]:
    """The public tier's one delivery: a social post, if the broadcast goes out on social; never
    for an internal (`public: false`) update, whatever its channels say."""
    if internal:
        return []
    return [Target(ChannelName.SOCIAL, PUBLIC_ADDRESS)] if ChannelName.SOCIAL in set(sending_on) else []


def internal_channels(sending_on: Iterable[ChannelName]) -> list[ChannelName]:
    """The channels an internal (`public: false`) update goes out on: social is public, so never it."""
    return [c for c in sending_on if c is not ChannelName.SOCIAL]


def next_channel(
    failed: ChannelName,
    channels: Sequence[str],
    opt_outs: Iterable[str],
    addresses: Mapping[ChannelName, str | None],
    enabled: Iterable[ChannelName],
) -> Target | None:
    """The failover target after `failed`, or None when there is nowhere else to go."""
    usable = set(enabled)
    order = [c for c in failover_order(channels, opt_outs, addresses) if c in usable]
    after = order[order.index(failed) + 1 :] if failed in order else order
    for channel in after:
        if channel is not failed:
            return Target(channel, normalise_address(channel, addresses[channel] or ""))
    return None


def tier_of(list_tiers: Iterable[int]) -> int:
    """A subscriber in several lists is reached at the earliest of their tiers."""
    return min(list_tiers)
