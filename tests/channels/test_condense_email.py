"""Email: the whole message, escaped; the text part says what the HTML says."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser

from hypothesis import given, settings

from channels.base import RenderContext
from channels.email.condense import EmailVariant, condense_email
from dispatcher.domain.message import EventKind, OutageMessage
from tests.channels.samples import sample_message
from tests.channels.strategies import message_and_context

ALLOWED_TAGS = {
    "html", "head", "meta", "title", "body", "div", "h1", "h2", "p", "table", "tr", "td",
    "ul", "ol", "li", "a", "br", "hr",
}  # fmt: skip
ALLOWED_ATTRS = {"lang", "charset", "name", "content", "style", "role", "href"}
LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


class Collect(HTMLParser):
    """Every start tag with its attributes, and the text a reader sees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def parse(html: str) -> Collect:
    parser = Collect()
    parser.feed(html)
    parser.close()
    return parser


def norm(text: str) -> str:
    return " ".join(text.split())


def user_texts(message: OutageMessage) -> list[str]:
    values = [message.title, *message.components, *message.regions, *message.workarounds]
    values += [v for v in (message.summary, message.cause, message.data_safety, message.compensation) if v]
    values += [v for v in (message.prevention,) if v]
    for contact in message.support_contacts:
        values += [contact.label, *(v for v in (contact.email, contact.phone) if v)]
    if message.details:
        values += [LIST_MARKER.sub("", line) for line in message.details.splitlines() if line.strip()]
    return [norm(v) for v in values if norm(v)]


SUBJECT_LIMIT = 998


@settings(max_examples=150, deadline=None)
@given(message_and_context())
def test_html_holds_no_user_markup_and_both_parts_carry_everything(
    case: tuple[OutageMessage, RenderContext],
) -> None:
    message, ctx = case
    email = condense_email(message, ctx)
    parsed = parse(email.html)
    for tag, attrs in parsed.tags:
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs:
            assert name in ALLOWED_ATTRS, (tag, name)
            if name == "href":
                assert value is not None
                placeholders = ("%unsubscribe_url%", "%manage_url%")
                assert value.startswith(("https://", "http://", "mailto:")) or value in placeholders
    seen_html = norm(" ".join(parsed.data))
    seen_text = norm(email.text)
    for value in user_texts(message):
        assert value in seen_html, value
        assert value in seen_text, value
    assert "%unsubscribe_url%" in email.html and "%unsubscribe_url%" in email.text
    assert "\n" not in email.subject and norm(message.title) in email.subject
    assert len(email.subject) <= SUBJECT_LIMIT  # RFC 5322's line limit, in every language


def test_user_markup_is_escaped() -> None:
    message = OutageMessage(
        title="<script>alert(1)</script>",
        summary='<b onclick="steal()">bold</b>',
        details="<img src=x onerror=alert(1)>\n\n- <a href='javascript:x'>link</a>",
        components=["<i>API</i>"],
        cause="<https://evil.example|click> <u>cause</u>",
        posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC),
    )
    email = condense_email(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    for raw in ("<script", "<b onclick", "<img", "<a href='javascript", "<i>", "<https:", "<u>"):
        assert raw not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "&lt;b onclick=&#34;steal()&#34;&gt;bold&lt;/b&gt;" in email.html
    assert "<li>&lt;a href=&#39;javascript:x&#39;&gt;link&lt;/a&gt;</li>" in email.html
    assert "<script>alert(1)</script>" in email.text  # plain text is not HTML: shown as typed


def test_sample_carries_the_whole_message() -> None:
    message = sample_message(EventKind.INCIDENT_OPENED)
    email = condense_email(message, RenderContext(event=EventKind.INCIDENT_OPENED, timezone="Europe/Paris"))
    assert email.subject == "[Investigating] Elevated API error rates"
    for part in (email.html, email.text):
        assert "Posted Sat 22 Nov 2025 15:05 CET" in part
        assert "(estimate, not confirmed)" in part
        assert "Retry failed requests after a few seconds." in part
        assert "support@example.com" in part
        assert "https://status.example.com/incidents/42" in part
    assert "<ul><li>retries mostly succeed</li><li>reads are fine</li></ul>" in email.html


def test_unknown_cause_is_said_honestly() -> None:
    message = OutageMessage(title="API down", posted_at=datetime(2025, 11, 22, 14, 5, tzinfo=UTC))
    email = condense_email(message, RenderContext(event=EventKind.INCIDENT_OPENED))
    assert "Not known yet" in email.text and "Not known yet" in email.html


def test_variant_round_trips() -> None:
    email = condense_email(
        sample_message(EventKind.INCIDENT_OPENED), RenderContext(event=EventKind.INCIDENT_OPENED)
    )
    assert EmailVariant(**email.to_json()) == email
