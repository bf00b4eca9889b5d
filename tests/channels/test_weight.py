"""X weighted length (by twitter-text) and word-safe truncation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twitter_text import parse_tweet

from channels.social.weight import MAX_WEIGHT, is_valid, strip_invalid, truncate_to_weight, weighted_length


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("hello", 5),
        ("https://status.example.com/" + "x" * 200, 23),  # any URL counts 23
        ("see https://status.example.com", 4 + 23),
        ("日本語", 6),  # CJK counts two
        ("😀", 2),  # so does an emoji
        ("👨‍👩‍👧", 2),  # a whole ZWJ sequence is one emoji
    ],
)
def test_weighted_length(text: str, weight: int) -> None:
    assert weighted_length(text) == weight


def test_validity() -> None:
    assert is_valid("a" * 280)
    assert not is_valid("a" * 281)
    assert not is_valid("")
    assert not is_valid("bad\ufeffchar")
    assert strip_invalid("bad\ufeffchar\u202e") == "badchar"


words = st.lists(
    st.one_of(
        st.sampled_from(["outage", "日本語", "😀", "https://status.example.com/x", "a"]), st.text(min_size=1)
    ),
    min_size=1,
    max_size=120,
).map(" ".join)


@given(words, st.integers(min_value=1, max_value=MAX_WEIGHT))
def test_truncation_fits_and_never_cuts_a_word_silently(text: str, limit: int) -> None:
    out = truncate_to_weight(text, limit)
    assert parse_tweet(out).weightedLength <= limit
    if out == text:
        return
    if out == "":
        assert weighted_length("…") > limit  # not even the ellipsis fits
        return
    assert out.endswith("…"), out
    kept = out[: -len("…")]
    assert text.startswith(kept)
    rest = text[len(kept) :]
    # the cut is at whitespace (after trimming trailing punctuation) or inside the first word only
    assert re.match(r"[\s,;:\-–—]", rest[:1]) or not re.search(r"\s", kept.strip()), (kept, rest[:10])


def test_truncation_prefers_word_boundaries() -> None:
    assert truncate_to_weight("The database cluster is degraded", 20) == "The database…"
    assert truncate_to_weight("Supercalifragilistic", 10) == "Supercal…"  # the ellipsis weighs 2
