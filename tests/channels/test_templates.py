"""Templates: the packaged set renders for every channel and notice, overrides work and are checked,
and every rendering matches its reviewed golden file (UPDATE_GOLDEN=1 rewrites them)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.base import ChannelName, RenderContext
from channels.chat.condense import condense_chat
from channels.email.condense import condense_email
from channels.locales import SHIPPED_LOCALES
from channels.rendering import (
    SAMPLE_EVENTS,
    TemplateError,
    Templates,
    details_html,
    eta_text,
    format_time,
    format_window,
    truncate_to_fit,
)
from channels.sms.condense import condense_sms
from channels.social.condense import condense_social
from channels.webhook.condense import condense_webhook
from dispatcher.domain.message import EventKind, OutageMessage
from tests.channels.samples import sample_message

GOLDEN = Path(__file__).parent / "golden"
POSTED = datetime(2025, 11, 22, 14, 5, tzinfo=UTC)


def test_packaged_templates_pass_check() -> None:
    Templates().check()


def test_check_names_a_broken_override(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "incident_resolved.txt.j2").write_text("{% if f.title %}unclosed")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).check()
    assert "sms/incident_resolved.txt.j2" in caught.value.message
    assert caught.value.code == "template_error"


def test_check_catches_an_unknown_fact_in_an_override(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "maintenance_cancelled.subject.txt.j2").write_text("Cancelled: {{ f.titel }}")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).check()
    assert "email/maintenance_cancelled.subject.txt.j2" in caught.value.message
    assert "titel" in caught.value.message


def test_check_catches_a_template_that_fails_only_without_optional_facts(tmp_path: Path) -> None:
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "default.mrkdwn.j2").write_text("{{ f.title }} {{ f.components[0] }}")
    with pytest.raises(TemplateError, match=r"chat/default\.mrkdwn\.j2"):
        Templates(tmp_path).check()


def test_an_override_replaces_one_kind_only(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "incident_resolved.txt.j2").write_text("All good again: {{ f.title }} {{ f.posted }}")
    templates = Templates(tmp_path)
    templates.check()
    resolved = sample_message(EventKind.INCIDENT_RESOLVED)
    ctx = RenderContext(event=EventKind.INCIDENT_RESOLVED)
    assert (
        condense_sms(resolved, ctx, templates).text
        == "All good again: Elevated API error rates 22 Nov 14:05 UTC"
    )
    opened = sample_message(EventKind.INCIDENT_OPENED)
    ctx = RenderContext(event=EventKind.INCIDENT_OPENED)
    assert condense_sms(opened, ctx, templates).text == condense_sms(opened, ctx).text


def test_an_override_that_renders_too_long_is_still_condensed(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "default.txt.j2").write_text("{{ 'Very important notice. ' * 20 }}{{ f.title }}")
    sms = condense_sms(
        sample_message(EventKind.INCIDENT_OPENED),
        RenderContext(event=EventKind.INCIDENT_OPENED),
        Templates(tmp_path),
    )
    assert sms.segments == 1 and len(sms.text) <= 160
    assert sms.text.endswith("...")


def test_html_templates_autoescape_and_text_templates_do_not(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "default.html.j2").write_text("<p>{{ f.title }}</p>")
    (tmp_path / "email" / "default.txt.j2").write_text("{{ f.title }}")
    message = OutageMessage(title="<b>x</b> & y", posted_at=POSTED)
    email = condense_email(message, RenderContext(event=EventKind.INCIDENT_OPENED), Templates(tmp_path))
    assert email.html == "<p>&lt;b&gt;x&lt;/b&gt; &amp; y</p>\n"
    assert email.text == "<b>x</b> & y\n"


# ---------------------------------------------------------------------------------------------------
# helpers


@pytest.mark.parametrize(
    ("zone", "short", "long"),
    [
        ("UTC", "22 Nov 14:05 UTC", "Sat 22 Nov 2025 14:05 UTC"),
        ("Europe/Paris", "22 Nov 15:05 CET", "Sat 22 Nov 2025 15:05 CET"),
        ("America/New_York", "22 Nov 09:05 EST", "Sat 22 Nov 2025 09:05 EST"),
        ("Asia/Dubai", "22 Nov 18:05 UTC+04", "Sat 22 Nov 2025 18:05 UTC+04"),
        ("Asia/Kolkata", "22 Nov 19:35 IST", "Sat 22 Nov 2025 19:35 IST"),
        ("America/St_Johns", "22 Nov 10:35 NST", "Sat 22 Nov 2025 10:35 NST"),
        ("Etc/GMT+3", "22 Nov 11:05 UTC-03", "Sat 22 Nov 2025 11:05 UTC-03"),
        ("Not/AZone", "22 Nov 14:05 UTC", "Sat 22 Nov 2025 14:05 UTC"),  # falls back, zone still shown
    ],
)
def test_format_time_always_shows_the_zone(zone: str, short: str, long: str) -> None:
    assert format_time(POSTED, zone) == short
    assert format_time(POSTED, zone, long=True) == long


def test_format_window() -> None:
    start, same_day, next_day = (
        POSTED,
        datetime(2025, 11, 22, 16, 0, tzinfo=UTC),
        datetime(2025, 11, 23, 1, tzinfo=UTC),
    )
    assert format_window(start, same_day) == "22 Nov 14:05–16:00 UTC"
    assert format_window(start, next_day) == "22 Nov 14:05 UTC – 23 Nov 01:00 UTC"
    assert format_window(start, None) == "from 22 Nov 14:05 UTC"
    assert format_window(None, None) is None


@pytest.mark.parametrize(
    ("locale", "short", "long"),
    [
        ("en", "22 Nov 15:05 CET", "Sat 22 Nov 2025 15:05 CET"),
        ("de", "22. Nov., 15:05 CET", "Sa., 22. Nov. 2025, 15:05 CET"),
        ("de-AT", "22. Nov., 15:05 CET", "Sa., 22. Nov. 2025, 15:05 CET"),  # reads German
        ("fr", "22 nov., 15:05 CET", "sam. 22 nov. 2025, 15:05 CET"),
        ("es", "22 nov, 15:05 CET", "sáb, 22 nov 2025, 15:05 CET"),
        ("pt-BR", "22 de nov. 15:05 CET", "sáb., 22 de nov. de 2025 15:05 CET"),
        ("ja", "11月22日 15:05 CET", "2025年11月22日(土) 15:05 CET"),
        ("xx", "22 Nov 15:05 CET", "Sat 22 Nov 2025 15:05 CET"),  # unknown: English
    ],
)
def test_format_time_per_locale_keeps_the_same_zone(locale: str, short: str, long: str) -> None:
    assert format_time(POSTED, "Europe/Paris", locale=locale) == short
    assert format_time(POSTED, "Europe/Paris", long=True, locale=locale) == long


@pytest.mark.parametrize("locale", [*SHIPPED_LOCALES, "de-AT", "pt-PT", "xx"])
def test_a_reader_in_tokyo_sees_jst_and_new_york_sees_its_own_daylight_time(locale: str) -> None:
    july = datetime(2026, 7, 14, 12, 0, tzinfo=UTC)
    assert format_time(POSTED, "Asia/Tokyo", locale=locale).endswith("23:05 JST")
    assert format_time(POSTED, "America/New_York", locale=locale).endswith("09:05 EST")
    assert format_time(july, "America/New_York", locale=locale).endswith("08:00 EDT")
    assert format_time(POSTED, "Asia/Kolkata", long=True, locale=locale).endswith("19:35 IST")
    assert format_time(POSTED, "Asia/Dubai", locale=locale).endswith("18:05 UTC+04")


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_a_subscriber_in_tokyo_reads_jst_on_every_channel(locale: str) -> None:
    message = sample_message(EventKind.INCIDENT_UPDATED)
    ctx = RenderContext(event=EventKind.INCIDENT_UPDATED, locale=locale, timezone="Asia/Tokyo")
    for condense in (condense_email, condense_chat, condense_sms, condense_social, condense_webhook):
        text = condense(message, ctx).text
        assert "23:05 JST" in text, (condense.__name__, text)
        assert "CET" not in text and "UTC" not in text


def test_format_window_per_locale() -> None:
    start, end = datetime(2025, 11, 23, 2, tzinfo=UTC), datetime(2025, 11, 23, 4, tzinfo=UTC)
    assert format_window(start, end, "Europe/Paris", locale="de") == "23. Nov., 03:00–05:00 CET"
    assert format_window(start, end, "Asia/Tokyo", locale="ja") == "11月23日 11:00–13:00 JST"
    assert format_window(start, None, "Europe/Paris", locale="de") == "ab 23. Nov., 03:00 CET"
    assert format_window(start, None, "Asia/Tokyo", locale="ja") == "11月23日 11:00 JST から"
    # across midnight in the reader's zone: both ends in full, each with its zone
    assert (
        format_window(start, end, "America/Sao_Paulo", locale="pt-BR")
        == "22 de nov. 23:00 UTC-03 – 23 de nov. 01:00 UTC-03"
    )


@pytest.mark.parametrize(
    ("locale", "unconfirmed", "confirmed"),
    [
        (
            "de",
            "Voraussichtlich wieder verfügbar: 22. Nov., 17:00 CET (Schätzung, nicht bestätigt)",
            "Wiederherstellung bis 22. Nov., 17:00 CET (bestätigt)",
        ),
        (
            "fr",
            "Retour estimé : 22 nov., 17:00 CET (estimation, non confirmée)",
            "Rétablissement : 22 nov., 17:00 CET (confirmé)",
        ),
        ("ja", "復旧見込み: 11月22日 17:00 CET（推定・未確定）", "11月22日 17:00 CET までに復旧（確定）"),
    ],
)
def test_eta_wording_per_locale(locale: str, unconfirmed: str, confirmed: str) -> None:
    eta = datetime(2025, 11, 22, 16, 0, tzinfo=UTC)
    assert (
        eta_text(OutageMessage(title="x", eta=eta), "Europe/Paris", short=True, locale=locale) == unconfirmed
    )
    assert (
        eta_text(
            OutageMessage(title="x", eta=eta, eta_confirmed=True), "Europe/Paris", short=True, locale=locale
        )
        == confirmed
    )


def test_templates_build_one_environment_per_shipped_locale() -> None:
    templates = Templates()
    assert templates.environment("de-AT") is templates.environment("de")
    assert templates.environment("xx") is templates.environment("en") is templates.env
    assert templates.environment("de") is not templates.environment("fr")


def test_an_override_may_use_the_catalog_or_plain_text(tmp_path: Path) -> None:
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "incident_resolved.txt.j2").write_text('{{ _("Resolved") }}! {{ f.title }}')
    (tmp_path / "sms" / "incident_opened.txt.j2").write_text("Wir schauen nach: {{ f.title }}")
    templates = Templates(tmp_path)
    templates.check()
    resolved = sample_message(EventKind.INCIDENT_RESOLVED)
    ctx = RenderContext(event=EventKind.INCIDENT_RESOLVED, locale="de")
    assert condense_sms(resolved, ctx, templates).text == "Behoben! Elevated API error rates"
    ctx = RenderContext(event=EventKind.INCIDENT_RESOLVED, locale="ja")
    assert condense_sms(resolved, ctx, templates).text == "解決済み! Elevated API error rates"
    opened = sample_message(EventKind.INCIDENT_OPENED)
    ctx = RenderContext(event=EventKind.INCIDENT_OPENED, locale="fr")
    assert condense_sms(opened, ctx, templates).text == "Wir schauen nach: Elevated API error rates"


def test_check_renders_every_shipped_locale(tmp_path: Path) -> None:
    """An override that breaks only in one language (a catalog placeholder it does not pass) fails
    `check()`, not the first Japanese send."""
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "incident_opened.txt.j2").write_text(
        '{% if f.locale == "ja" %}{{ f.nope }}{% endif %}{{ f.title }}'
    )
    with pytest.raises(TemplateError, match="nope"):
        Templates(tmp_path).check()


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_japanese_sms_is_ucs2_and_within_budget(budget: int) -> None:
    message = sample_message(EventKind.INCIDENT_OPENED)
    ctx = RenderContext(
        event=EventKind.INCIDENT_OPENED, locale="ja", timezone="Asia/Tokyo", sms_segment_budget=budget
    )
    sms = condense_sms(message, ctx)
    assert sms.encoding == "UCS-2" and sms.segments <= budget
    assert sms.text.startswith("調査中 (11月22日 23:05 JST): ")
    assert len(sms.text) <= (70 if budget == 1 else 67 * budget)


def test_eta_wording() -> None:
    eta = datetime(2025, 11, 22, 16, 0, tzinfo=UTC)
    unconfirmed = OutageMessage(title="x", eta=eta)
    confirmed = OutageMessage(title="x", eta=eta, eta_confirmed=True)
    assert (
        eta_text(unconfirmed)
        == "We expect service to be restored by 22 Nov 16:00 UTC (estimate, not confirmed)."
    )
    assert eta_text(unconfirmed, short=True) == "Est. back 22 Nov 16:00 UTC (estimate, not confirmed)"
    assert eta_text(confirmed) == "Service will be restored by 22 Nov 16:00 UTC."
    assert eta_text(confirmed, short=True) == "Back by 22 Nov 16:00 UTC (confirmed)"
    assert eta_text(OutageMessage(title="x", eta=eta, status="resolved")) is None
    assert eta_text(OutageMessage(title="x")) is None


def test_details_markdown_subset_is_escaped() -> None:
    html = details_html("First <b>para</b>\nline two\n\n- one & two\n- <i>three</i>\n\n1. a\n2. b")
    assert html == (
        "<p>First &lt;b&gt;para&lt;/b&gt;<br>\nline two</p>\n"
        "<ul><li>one &amp; two</li><li>&lt;i&gt;three&lt;/i&gt;</li></ul>\n"
        "<ol><li>a</li><li>b</li></ol>"
    )


@given(st.text(max_size=300), st.integers(min_value=0, max_value=300))
def test_truncate_to_fit_respects_the_predicate(text: str, room: int) -> None:
    out = truncate_to_fit(text, lambda t: len(t) <= room)
    if room == 0:
        assert out is None or out == text == ""
        return
    assert out is not None and len(out) <= room
    assert out == text or (out.endswith("…") and text.startswith(out[:-1]))


# ---------------------------------------------------------------------------------------------------
# golden files: one per channel, notice and shipped locale, reviewed by eye when written

# Each locale's goldens are read in a zone its readers live in: German/French/Spanish in Paris, Brazil
# (tzdata has no letters for São Paulo: the offset is printed), Japan.
GOLDEN_ZONES = {
    "en": "Europe/Paris",
    "de": "Europe/Paris",
    "fr": "Europe/Paris",
    "es": "Europe/Paris",
    "pt-BR": "America/Sao_Paulo",
    "ja": "Asia/Tokyo",
}


def golden_path(channel: ChannelName, event: EventKind, locale: str) -> Path:
    """English keeps the original names (`sms/incident_opened.txt`); others add the locale
    (`sms/incident_opened.de.txt`, `sms/incident_opened.pt-BR.txt`)."""
    suffix = "" if locale == "en" else f".{locale}"
    return GOLDEN / channel.value / f"{event.value}{suffix}.txt"


def golden_render(channel: ChannelName, event: EventKind, locale: str = "en") -> str:
    message = sample_message(event)
    ctx = RenderContext(event=event, locale=locale, timezone=GOLDEN_ZONES[locale], sms_segment_budget=2)
    if channel is ChannelName.EMAIL:
        email = condense_email(message, ctx)
        return f"Subject: {email.subject}\n\n===== text =====\n{email.text}\n===== html =====\n{email.html}"
    if channel is ChannelName.CHAT:
        chat = condense_chat(message, ctx)
        return json.dumps({"text": chat.text, "blocks": chat.blocks}, indent=2, ensure_ascii=False) + "\n"
    if channel is ChannelName.SMS:
        sms = condense_sms(message, ctx)
        return f"{sms.text}\n===== {sms.encoding}, {sms.segments} segment(s) =====\n"
    if channel is ChannelName.SOCIAL:
        post = condense_social(message, ctx)
        return f"{post.text}\n===== weight {post.weight} =====\n"
    hook = condense_webhook(message, ctx)
    return json.dumps(hook.payload, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
@pytest.mark.parametrize("event", list(EventKind), ids=lambda e: e.value)
@pytest.mark.parametrize("channel", list(ChannelName), ids=lambda c: c.value)
def test_golden(channel: ChannelName, event: EventKind, locale: str) -> None:
    path = golden_path(channel, event, locale)
    rendered = golden_render(channel, event, locale)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; write it with UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text(encoding="utf-8")


def test_every_sample_event_has_a_golden_per_channel_and_locale() -> None:
    """The goldens cover `SAMPLE_EVENTS` (the channels' own list), not only the service's enum."""
    assert {e.value for e in EventKind} == set(SAMPLE_EVENTS)
    for channel in ChannelName:
        for locale in SHIPPED_LOCALES:
            for event in SAMPLE_EVENTS:
                assert golden_path(channel, EventKind(event), locale).exists()


def test_an_edited_override_is_compiled_again(tmp_path: Path) -> None:
    """The compiled templates are shared between environments and objects, keyed by the file and
    checked against its source: an operator's edit is what the next render shows."""
    (tmp_path / "sms").mkdir()
    override = tmp_path / "sms" / "incident_opened.txt.j2"
    override.write_text("First: {{ f.title }}")
    message = sample_message(EventKind.INCIDENT_OPENED)
    ctx = RenderContext(event=EventKind.INCIDENT_OPENED, locale="de")
    assert condense_sms(message, ctx, Templates(tmp_path)).text == "First: Elevated API error rates"
    override.write_text("Second, longer: {{ f.title }}")
    assert condense_sms(message, ctx, Templates(tmp_path)).text == "Second, longer: Elevated API error rates"


def test_an_override_is_checked_every_time(tmp_path: Path) -> None:
    """Only the packaged set is checked once per object; an override can change under it."""
    (tmp_path / "chat").mkdir()
    override = tmp_path / "chat" / "default.mrkdwn.j2"
    override.write_text("{{ f.title }}")
    templates = Templates(tmp_path)
    templates.check()
    override.write_text("{{ f.titel }}")
    os.utime(override, ns=(0, override.stat().st_mtime_ns + 10**9))  # an edit, a second later
    with pytest.raises(TemplateError, match="titel"):
        templates.check()
