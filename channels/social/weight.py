"""X (Twitter) weighted length: 280 at most, a URL counts 23, CJK and emoji count 2.

Counted by twitter-text's own parser (the `twitter-text-parser` package), the same rules X applies
server-side, rather than by a re-implementation of them. Pure: no I/O.
"""

from __future__ import annotations

import re

from twitter_text import parse_tweet

from channels.rendering import truncate_to_fit

MAX_WEIGHT = 280
URL_WEIGHT = 23

# Characters twitter-text rejects outright (the post would be refused, whatever its length).
_INVALID = re.compile("[\ufffe\ufeff\uffff\u202a-\u202e]")


def weighted_length(text: str) -> int:
    return int(parse_tweet(text).weightedLength)


def is_valid(text: str, limit: int = MAX_WEIGHT) -> bool:
    """Within `limit` and free of characters X refuses; an empty post is not valid."""
    result = parse_tweet(text)
    return bool(text.strip()) and not _INVALID.search(text) and result.weightedLength <= limit


def strip_invalid(text: str) -> str:
    return _INVALID.sub("", text)


def truncate_to_weight(text: str, limit: int = MAX_WEIGHT, ellipsis: str = "…") -> str:
    """`text` cut to weigh at most `limit`, at a word boundary with an ellipsis; a word is only ever
    cut inside when it alone is too long, and then also with the ellipsis."""
    result = truncate_to_fit(text, lambda candidate: weighted_length(candidate) <= limit, ellipsis)
    return result if result is not None else ""
