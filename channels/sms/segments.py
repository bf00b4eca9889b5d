"""SMS length in segments, and transliteration that keeps text in GSM-7 where it can.

One character outside GSM 03.38 switches the whole message to UCS-2, cutting a segment from 160 to
70 characters; a curly quote pasted from a document should not do that, so common typography is
transliterated first. Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Sent as ESC + char: each costs two septets.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {"GSM-7": 160, "UCS-2": 70}
MULTIPART = {"GSM-7": 153, "UCS-2": 67}  # the rest of the 140 bytes carries the concatenation header

_TRANSLITERATIONS: dict[str, str] = {
    "‘": "'",
    "’": "'",
    "‚": "'",
    "‛": "'",
    "′": "'",
    "‹": "'",
    "›": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "‟": '"',
    "″": '"',
    "«": '"',
    "»": '"',
    "‐": "-",
    "‑": "-",
    "‒": "-",
    "–": "-",
    "—": "-",
    "―": "-",
    "−": "-",
    "…": "...",
    "•": "*",
    "·": ".",
    "×": "x",
    "÷": "/",
    "⁄": "/",
    "™": "TM",
    "©": "(c)",
    "®": "(R)",
    "°": " deg",
    "\t": " ",
    "\u00a0": " ",
    "\u2007": " ",
    "\u202f": " ",
    "\u3000": " ",
    "\u200b": "",
    "\u2060": "",
    "\ufeff": "",
    "\u00ad": "",
}


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _gsm_or_none(ch: str) -> str | None:
    """A GSM-7 spelling of one character, or None when there is none."""
    if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
        return ch
    if ch in _TRANSLITERATIONS:
        return _TRANSLITERATIONS[ch]
    if unicodedata.category(ch) == "Zs":
        return " "
    if unicodedata.category(ch) == "Cc":
        return ""  # control characters other than \n and \r have no place in an SMS
    decomposed = unicodedata.normalize("NFKD", ch)
    if decomposed == ch:
        return None
    # accents dropped (á -> a), compatibility forms unfolded (ﬁ -> fi, full-width A -> A)
    out = []
    for part in decomposed:
        if unicodedata.combining(part):
            continue
        spelled = _TRANSLITERATIONS.get(part, part)
        if not is_gsm7(spelled):
            return None
        out.append(spelled)
    return "".join(out) or None


def transliterate(text: str) -> str:
    """Replace characters that have a faithful GSM-7 spelling; leave the rest (emoji, CJK...) as is.

    Text that still holds a non-GSM character goes out as UCS-2 anyway, but it is still shorter."""
    out: list[str] = []
    for ch in text:
        spelled = _gsm_or_none(ch)
        out.append(ch if spelled is None else spelled)
    return "".join(out)


@dataclass(frozen=True)
class SmsLength:
    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def _costs(text: str, encoding: Encoding) -> list[int]:
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def measure(text: str) -> SmsLength:
    """Encoding, length and segment count, as a carrier counts them.

    Multipart segments are filled without splitting an escape sequence or a surrogate pair across
    two segments (phones show a broken character otherwise), so this can be one more than a naive
    `ceil(units / 153)`, never fewer."""
    encoding = encoding_of(text)
    costs = _costs(text, encoding)
    units = sum(costs)
    if units == 0:
        return SmsLength(encoding, 0, 0)
    if units <= SINGLE[encoding]:
        return SmsLength(encoding, units, 1)
    per_segment = MULTIPART[encoding]
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_segment:
            segments, used = segments + 1, 0
        used += cost
    return SmsLength(encoding, units, segments)


def segment_count(text: str) -> int:
    return measure(text).segments


def fits_segments(text: str, budget: int) -> bool:
    return measure(text).segments <= budget
