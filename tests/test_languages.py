"""Which language and zone each reader gets, without servers: the variant key (one rendering per
language x zone x credit, never per recipient), the commander's translations field by field, and
their validation naming the path."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from channels.locales import SHIPPED_LOCALES
from dispatcher.domain.message import TRANSLATABLE, OutageMessage
from dispatcher.domain.variant_key import VariantKey, available_locales, known_zone, reader_key
from dispatcher.engine import variants

LANGUAGES = available_locales(SHIPPED_LOCALES, ())


def test_keys_written_before_zones_counted_read_the_same() -> None:
    assert VariantKey.parse("en") == VariantKey("en", "UTC", False)
    assert VariantKey.parse("en+compensation") == VariantKey("en", "UTC", True)
    assert str(VariantKey(compensated=True)) == "en+compensation"
    assert str(VariantKey("en")) == "en"


@given(
    st.sampled_from([*SHIPPED_LOCALES, "de-AT", "zh-Hant-TW"]),
    st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York", "Etc/GMT+5", "America/Argentina/Buenos_Aires"]),
    st.booleans(),
)
def test_a_key_survives_its_text(locale: str, zone: str, compensated: bool) -> None:
    key = VariantKey(locale, zone, compensated)
    assert VariantKey.parse(str(key)) == key
    assert len(str(key)) <= 100  # the columns' width (migration 0013)


@pytest.mark.parametrize(
    ("tag", "zone", "expected"),
    [
        ("de-AT", "Europe/Vienna", "de@Europe/Vienna"),
        ("de", None, "de"),
        ("pt-PT", "UTC", "pt-BR"),  # the same language in another region reads better than English
        ("xx", "Asia/Tokyo", "en@Asia/Tokyo"),  # no wording: the default language, still their zone
        ("ja", "Not/AZone", "ja"),  # a zone nobody can render is UTC, not a variant of its own
        ("ja", "Etc/UTC", "ja"),
    ],
)
def test_a_reader_gets_the_closest_language_and_their_zone(tag: str, zone: str | None, expected: str) -> None:
    assert str(reader_key(tag, zone, LANGUAGES, "en")) == expected


def test_the_default_locale_is_a_setting_and_commander_languages_count() -> None:
    assert str(reader_key("xx", None, LANGUAGES, "de")) == "de"
    with_nl = available_locales(SHIPPED_LOCALES, ["nl"])
    assert str(reader_key("nl-BE", None, with_nl, "en")) == "nl"  # the commander wrote Dutch
    assert str(reader_key("nl-BE", None, LANGUAGES, "en")) == "en"
    assert known_zone("Asia/Kolkata") == "Asia/Kolkata" and known_zone("") == "UTC"


def message(**extra: object) -> OutageMessage:
    return OutageMessage.model_validate(
        {"title": "Checkout is failing", "summary": "Payments fail with 502.", **extra}
    )


def test_a_reader_gets_the_closest_translation_field_by_field() -> None:
    m = message(
        translations={
            "de": {"title": "Der Checkout schlägt fehl", "summary": "Zahlungen scheitern mit 502."},
            "de_at": {"summary": "Zahlungen scheitern (AT)."},
            "ja": {"title": "決済が失敗しています"},
        }
    )
    assert set(m.translations) == {"de", "de-AT", "ja"}  # tags normalized
    at = m.localized("de-AT")
    assert (at.title, at.summary) == ("Der Checkout schlägt fehl", "Zahlungen scheitern (AT).")
    ch = m.localized("de-CH")
    assert (ch.title, ch.summary) == ("Der Checkout schlägt fehl", "Zahlungen scheitern mit 502.")
    ja = m.localized("ja")
    assert (ja.title, ja.summary) == ("決済が失敗しています", "Payments fail with 502.")  # no ja summary
    assert m.localized("fr") == m.model_copy(update={"translations": {}})
    assert at.translations == {}  # a variant's message carries no other language


def test_every_translatable_field_can_be_translated() -> None:
    full = {name: ["x"] if name == "workarounds" else f"{name} (de)" for name in TRANSLATABLE}
    got = message(translations={"de": full}).localized("de")
    assert {name: getattr(got, name) for name in TRANSLATABLE} == full


def test_an_update_never_keeps_a_translation_of_what_it_changed() -> None:
    m = message(translations={"de": {"title": "Der Checkout schlägt fehl", "summary": "Zahlungen."}})
    changed = m.merged({"title": "Checkout recovering"})
    assert changed.translations["de"].title is None  # stale: the original says something else now
    assert changed.translations["de"].summary == "Zahlungen."  # the summary did not change
    assert changed.localized("de").title == "Checkout recovering"
    retranslated = m.merged(
        {"title": "Checkout recovering", "translations": {"de": {"title": "Erholt sich"}}}
    )
    assert retranslated.localized("de").title == "Erholt sich"
    same = m.merged({"title": "Checkout is failing"})  # sent again unchanged: still translated
    assert same.localized("de").title == "Der Checkout schlägt fehl"


@pytest.mark.parametrize(
    ("translations", "path"),
    [
        ({"de": {"title": " "}}, ("translations", "de", "title")),
        ({"de": {"title": "x" * 201}}, ("translations", "de", "title")),
        ({"de": {"subject": "x"}}, ("translations", "de", "subject")),
        ({"ja": {"summary": "a\x00b"}}, ("translations", "ja", "summary")),
        ({"not a tag": {"title": "x"}}, ("translations", "not a tag", "[key]")),
    ],
)
def test_every_translation_is_validated_and_the_error_names_its_path(
    translations: dict[str, object], path: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        message(translations=translations)
    assert [tuple(str(p) for p in e["loc"]) for e in caught.value.errors()] == [path]


def test_a_compensation_tier_reads_the_credit_in_its_language() -> None:
    m = message(
        compensation="You will be credited.", translations={"de": {"compensation": "Gutschrift folgt."}}
    )
    policy = {"compensation": "You will be credited."}
    assert variants.variant_message(policy, m, VariantKey("de", compensated=True)).compensation == (
        "Gutschrift folgt."
    )
    assert variants.variant_message(policy, m, VariantKey("de")).compensation is None
    assert variants.variant_message({}, m, VariantKey("fr")).compensation == "You will be credited."


def test_an_unknown_locale_is_logged_once_not_per_recipient(caplog: pytest.LogCaptureFixture) -> None:
    variants._judged.discard("tlh")
    with caplog.at_level(logging.WARNING, logger=variants.__name__):
        for _ in range(500):
            variants.note_unknown_locale("tlh", "en")
        variants.note_unknown_locale("de-AT", "de")  # known: German
    assert [r.getMessage() for r in caplog.records] == ["no wording for locale 'tlh': its readers get en"]
