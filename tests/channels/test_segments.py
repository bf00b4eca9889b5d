"""GSM-7 / UCS-2 segment counting and transliteration."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.sms.segments import GSM7_BASIC, GSM7_EXTENSION, is_gsm7, measure, transliterate


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count two
        ("€" * 81, "GSM-7", 162, 2),
        ("a" + "€" * 76 + "b", "GSM-7", 154, 1),
        ("a" * 152 + "€" + "a" * 8, "GSM-7", 162, 2),
        # the escape pair never straddles two segments: 152 | 2 + 151 | 1, where naive says 306/153 = 2
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
        ("é" * 160, "GSM-7", 160, 1),  # é is in the basic set
        ("á" * 70, "UCS-2", 70, 1),
        ("á" * 71, "UCS-2", 71, 2),
        ("😀" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 code units
        ("😀" * 36, "UCS-2", 72, 2),
        ("日" * 134, "UCS-2", 134, 2),
        ("日" * 135, "UCS-2", 135, 3),
    ],
)
def test_measure(text: str, encoding: str, units: int, segments: int) -> None:
    length = measure(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_a_surrogate_pair_is_not_split_across_segments() -> None:
    # 66 units then an emoji: a naive count says ceil(68/67) = 2, and so do we, but the emoji
    # must start segment two, so 66 + 2 + 66 units need three segments, not two.
    assert measure("á" * 66 + "😀" + "á" * 66).segments == 3


@pytest.mark.parametrize(
    ("raw", "gsm"),
    [
        ("‘single’ “double”", "'single' \"double\""),
        ("a – b — c", "a - b - c"),
        ("wait…", "wait..."),
        ("non\u00a0breaking\u202fspace", "non breaking space"),
        ("• item", "* item"),
        ("café façade naïve ã", "café facade naive a"),
        ("Ｆｕｌｌ－ｗｉｄｔｈ", "Full-width"),
        ("zero\u200bwidth", "zerowidth"),
        ("tab\there", "tab here"),
    ],
)
def test_transliterate_common_typography(raw: str, gsm: str) -> None:
    assert transliterate(raw) == gsm
    assert is_gsm7(transliterate(raw))


def test_transliterate_keeps_what_has_no_gsm_spelling() -> None:
    assert transliterate("🔥 日本") == "🔥 日本"
    assert measure(transliterate("“🔥”")).encoding == "UCS-2"


@given(st.text())
def test_transliterate_keeps_gsm_text_as_is_and_never_adds_non_gsm(text: str) -> None:
    out = transliterate(text)
    assert transliterate(out) == out
    if is_gsm7(text):
        assert out == text
    non_gsm_in = {c for c in text if c not in GSM7_BASIC and c not in GSM7_EXTENSION}
    non_gsm_out = {c for c in out if c not in GSM7_BASIC and c not in GSM7_EXTENSION}
    assert non_gsm_out <= non_gsm_in


@given(st.text(max_size=800))
def test_never_fewer_segments_than_a_naive_count(text: str) -> None:
    length = measure(text)
    if length.encoding == "GSM-7":
        naive_units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        single, multi = 160, 153
    else:
        naive_units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    naive = 0 if naive_units == 0 else 1 if naive_units <= single else math.ceil(naive_units / multi)
    assert length.units == naive_units
    assert naive <= length.segments <= naive + max(1, naive)
