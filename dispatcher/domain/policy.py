"""Which kinds of notice go to which channel. Pure.

The default follows established status pages: texts are precious, so SMS only when an incident
opens, when it resolves and when its impact rises; email, chat and webhooks for every update; the
public post when an incident opens and resolves; maintenance SMS at its start only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from channels.base import ChannelName
from dispatcher.domain.message import EventKind, Impact

EVERY_EVENT = frozenset(EventKind)
_INCIDENT_EDGES = frozenset({EventKind.INCIDENT_OPENED, EventKind.INCIDENT_RESOLVED})

DEFAULT_POLICY: dict[ChannelName, frozenset[EventKind]] = {
    ChannelName.EMAIL: EVERY_EVENT,
    ChannelName.CHAT: EVERY_EVENT,
    ChannelName.WEBHOOK: EVERY_EVENT,
    ChannelName.SMS: _INCIDENT_EDGES | {EventKind.MAINTENANCE_STARTED},
    ChannelName.SOCIAL: _INCIDENT_EDGES,
}


def channels_for(
    event: EventKind,
    *,
    enabled: Iterable[ChannelName],
    impact_rose: bool = False,
    override: Iterable[ChannelName] | None = None,
    policy: Mapping[ChannelName, Iterable[EventKind]] | None = None,
) -> list[ChannelName]:
    """The channels this notice goes to. A commander's explicit override wins over the policy;
    `policy` (the `channel_policy` setting) replaces the default for the channels it names."""
    enabled = list(enabled)
    if override is not None:
        chosen = set(override)
        return [c for c in enabled if c in chosen]
    effective = {**DEFAULT_POLICY, **{c: frozenset(kinds) for c, kinds in (policy or {}).items()}}
    picked = [c for c in enabled if event in effective[c]]
    if impact_rose and event is EventKind.INCIDENT_UPDATED and ChannelName.SMS in enabled:
        picked.append(ChannelName.SMS)
    return picked


def impact_rose(before: Impact, after: Impact) -> bool:
    return after.rank > before.rank
