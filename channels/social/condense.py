"""Social: one public post per broadcast, at most 280 weighted characters.

Public-safe by construction: support contacts, compensation, data-safety notes, details, cause and
summary never reach the template's facts, so no template (override or not) can print them. @handles
in user text are broken with a zero-width joiner so a post cannot mention anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from channels.base import ChannelName, RenderContext, Variant
from channels.notice import Notice
from channels.rendering import (
    Facts,
    Templates,
    build_facts,
    collapse_whitespace,
    condense_to_fit,
    default_templates,
)
from channels.social.weight import MAX_WEIGHT, strip_invalid, weighted_length

# First dropped first; then the title is shortened, then the link goes.
SOCIAL_DROP_ORDER: tuple[str, ...] = ("eta_short", "next_update", "scope", "impact_label", "window")

# Facts that never appear in a public post.
PRIVATE_FACTS: tuple[str, ...] = (
    "summary",
    "details",
    "details_html",
    "cause",
    "data_safety",
    "compensation",
    "prevention",
)

_HANDLE = re.compile(r"([@＠])(?=[A-Za-z0-9_])")


@dataclass(frozen=True, kw_only=True)
class SocialVariant(Variant):
    channel: ChannelName = ChannelName.SOCIAL
    weight: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", ChannelName(self.channel))
        if self.channel is not ChannelName.SOCIAL:
            raise ValueError(f"a SocialVariant's channel is social, not {self.channel}")


def neutralise_handles(text: str) -> str:
    """'@acme' -> '@\u200dacme': still readable, no longer a mention."""
    return _HANDLE.sub("\\1\u200d", text)


def _public_text(value: str) -> str:
    return neutralise_handles(strip_invalid(collapse_whitespace(value)))


def _tidy(text: str) -> str:
    lines = (line.strip() for line in strip_invalid(text).splitlines())
    return "\n".join(line for line in lines if line)


def condense_social(message: Notice, ctx: RenderContext, templates: Templates | None = None) -> SocialVariant:
    templates = templates or default_templates()
    facts = build_facts(message, ctx, escape_text=_public_text)
    for key in PRIVATE_FACTS:
        facts[key] = None
    facts["workarounds"] = []
    facts["contacts"] = []

    def render(f: Facts) -> str:
        return _tidy(templates.render(ChannelName.SOCIAL, ctx.event, "txt", f, ctx.locale))

    text = condense_to_fit(facts, render, lambda t: weighted_length(t) <= MAX_WEIGHT, SOCIAL_DROP_ORDER)
    return SocialVariant(text=text, weight=weighted_length(text))
