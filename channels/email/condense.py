"""Email: the whole message, as HTML with a plain-text alternative carrying the same content.

Pure. User text is escaped twice over: the HTML part's facts arrive as escaped `Markup` and `.html.j2`
is autoescaped (for what an override template adds). `details`
markdown is reduced to escaped paragraphs and lists. Both parts end with the literal
`%unsubscribe_url%`, which the adapter substitutes per recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from channels.base import ChannelName, RenderContext, Variant
from channels.notice import Notice
from channels.rendering import Templates, build_facts, collapse_whitespace, default_templates, html_facts

UNSUBSCRIBE_PLACEHOLDER = "%unsubscribe_url%"


@dataclass(frozen=True, kw_only=True)
class EmailVariant(Variant):
    channel: ChannelName = ChannelName.EMAIL
    subject: str
    html: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", ChannelName(self.channel))
        if self.channel is not ChannelName.EMAIL:
            raise ValueError(f"an EmailVariant's channel is email, not {self.channel}")


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def condense_email(message: Notice, ctx: RenderContext, templates: Templates | None = None) -> EmailVariant:
    templates = templates or default_templates()
    facts = build_facts(message, ctx, long_times=True)
    locale = ctx.locale
    subject = templates.render(ChannelName.EMAIL, ctx.event, "subject.txt", facts, locale)
    subject = collapse_whitespace(subject)
    html = templates.render(ChannelName.EMAIL, ctx.event, "html", html_facts(message, ctx), locale)
    text = _tidy_text(templates.render(ChannelName.EMAIL, ctx.event, "txt", facts, locale))
    html = html.strip() + "\n"
    return EmailVariant(subject=subject, html=html, text=text)
