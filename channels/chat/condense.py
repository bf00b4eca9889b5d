"""Chat: a short Slack post (status, title, one line of impact and scope, next update, link) as
Block Kit sections with an escaped plain fallback.

Pure. User text is escaped for Slack mrkdwn (`&`, `<`, `>`), which defuses `<!channel>`, `<@U123>`,
`<#C1>` and `<url|label>` links, and every `@` that starts a name gets a zero-width joiner so
neither `@here` nor `@someone` can notify anyone even with link_names on. A last pass over the
rendered text does the same to anything an override template wrote, except our own status link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from channels.base import ChannelName, RenderContext, Variant
from channels.notice import Notice
from channels.rendering import (
    Templates,
    build_facts,
    collapse_whitespace,
    default_templates,
    shows_prevention,
    truncate_to_fit,
)

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000

_MENTION = re.compile(r"([@＠])(?=[\w.\-])")
_OUR_LINK = re.compile(r"(<https?://[^<>\s|]+\|[^<>]*>)")


@dataclass(frozen=True, kw_only=True)
class ChatVariant(Variant):
    channel: ChannelName = ChannelName.CHAT
    blocks: list[dict[str, Any]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", ChannelName(self.channel))
        if self.channel is not ChannelName.CHAT:
            raise ValueError(f"a ChatVariant's channel is chat, not {self.channel}")


def slack_escape(text: str) -> str:
    """The three characters Slack asks to be escaped in any text it parses."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralise_mentions(text: str) -> str:
    """'@here' -> '@\u200dhere': reads the same, notifies nobody."""
    return _MENTION.sub("\\1\u200d", text)


def _user_text(value: str) -> str:
    return neutralise_mentions(slack_escape(collapse_whitespace(value)))


def _url(value: str) -> str:
    return slack_escape(value).replace("|", "%7C")


def _defuse(text: str) -> str:
    """Final pass: only our own `<https://...|label>` link may stay markup."""
    pieces = _OUR_LINK.split(text)
    for i in range(0, len(pieces), 2):  # even indexes are outside our links
        pieces[i] = neutralise_mentions(pieces[i].replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(pieces)


def _clip(text: str, limit: int) -> str:
    return truncate_to_fit(text, lambda t: len(t) <= limit) or ""


def condense_chat(message: Notice, ctx: RenderContext, templates: Templates | None = None) -> ChatVariant:
    templates = templates or default_templates()
    facts = build_facts(message, ctx, escape_text=_user_text, escape_url=_url)
    if not shows_prevention(message):
        facts["prevention"] = None
    mrkdwn = templates.render(ChannelName.CHAT, ctx.event, "mrkdwn", facts, ctx.locale)
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", mrkdwn) if p.strip()]
    sections = [_clip(_defuse(p), MAX_SECTION_CHARS) for p in paragraphs][:MAX_BLOCKS]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": section}} for section in sections
    ]
    return ChatVariant(text="\n".join(sections), blocks=blocks)
