"""SMS: the shortest variant (status, title, impact, next update, link), within the segment budget.

Pure. The template renders the full text; this module makes it fit by dropping facts in
`SMS_DROP_ORDER`, then shortening the title, then dropping the link, so a template that renders too
long is condensed, never sent over-length.
"""

from __future__ import annotations

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
    shows_prevention,
)
from channels.sms.segments import fits_segments, measure, transliterate

# First dropped first. Status, the posted time and the title stay; the title is shortened (with an
# ellipsis) before the link goes.
SMS_DROP_ORDER: tuple[str, ...] = (
    "prevention",
    "eta_short",
    "scope",
    "next_update",
    "impact_label",
    "window",
)


@dataclass(frozen=True, kw_only=True)
class SmsVariant(Variant):
    channel: ChannelName = ChannelName.SMS
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", ChannelName(self.channel))
        if self.channel is not ChannelName.SMS:
            raise ValueError(f"an SmsVariant's channel is sms, not {self.channel}")


def _tidy(text: str) -> str:
    """Transliterated to GSM-7 where possible, one fact per line, no blank lines."""
    lines = (line.strip() for line in transliterate(text).splitlines())
    return "\n".join(line for line in lines if line)


def condense_sms(message: Notice, ctx: RenderContext, templates: Templates | None = None) -> SmsVariant:
    templates = templates or default_templates()
    budget = max(1, ctx.sms_segment_budget)
    facts = build_facts(message, ctx, escape_text=collapse_whitespace)
    if not shows_prevention(message):
        facts["prevention"] = None

    def render(f: Facts) -> str:
        return _tidy(templates.render(ChannelName.SMS, ctx.event, "txt", f, ctx.locale))

    # "..." rather than "…": the cut text is not transliterated again, and "…" would force UCS-2.
    text = condense_to_fit(facts, render, lambda t: fits_segments(t, budget), SMS_DROP_ORDER, ellipsis="...")
    length = measure(text)
    return SmsVariant(text=text, encoding=length.encoding, segments=length.segments)
