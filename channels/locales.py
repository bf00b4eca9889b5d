"""Which language a reader gets: the shipped locales and the fallback chain, shared by the channels
(which catalog to read) and the service (which commander translation, which variant).

Pure. Tags are BCP 47 as subscribers give them (`de-AT`, `pt-BR`, `ja`); case and `_` are
forgiven (`pt_br` is `pt-BR`). The chain of `de-AT` is `de-AT` → `de` → the default locale, so a
reader always gets the closest language we have, and an unknown one gets the default.
"""

from __future__ import annotations

import re
from collections.abc import Collection

DEFAULT_LOCALE = "en"

# The languages the fixed wording is translated into (templates/locales/<gettext dir>/).
SHIPPED_LOCALES: tuple[str, ...] = ("en", "de", "fr", "es", "pt-BR", "ja")

_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


def normalize(tag: str | None) -> str | None:
    """`pt_br` → `pt-BR`, `DE-at` → `de-AT`, `zh-hant-tw` → `zh-Hant-TW`; None for what is not a
    language tag at all (empty, `--`, `english please`)."""
    if not tag or not _TAG.match(tag.strip()):
        return None
    first, *rest = re.split(r"[-_]", tag.strip())
    parts = [first.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():
            parts.append(part.title())  # a script: Hant
        elif len(part) in (2, 3):
            parts.append(part.upper())  # a region: AT, 419
        else:
            parts.append(part.lower())  # a variant
    return "-".join(parts)


def chain(tag: str | None, default: str = DEFAULT_LOCALE) -> tuple[str, ...]:
    """The tags to try, most specific first, ending with the default: `de-AT` → (de-AT, de, en)."""
    out: list[str] = []
    normal = normalize(tag)
    if normal:
        parts = normal.split("-")
        out = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    base = normalize(default) or DEFAULT_LOCALE
    return (*[t for t in out if t != base], base)


def resolve(tag: str | None, available: Collection[str], default: str = DEFAULT_LOCALE) -> str:
    """The first tag of `tag`'s chain that is in `available` (compared normalized), else another
    region of the same language, else the default: `resolve("de-AT", SHIPPED_LOCALES)` is `de`,
    `resolve("pt-PT", ...)` is `pt-BR`, `resolve("xx", ...)` is `en`."""
    have = sorted(n for n in (normalize(a) for a in available) if n)
    for candidate in chain(tag, default)[:-1]:
        if candidate in have:
            return candidate
    language = (normalize(tag) or "").split("-")[0]
    for candidate in have:  # `pt` has no catalog of its own but reads `pt-BR` better than English
        if candidate.split("-")[0] == language:
            return candidate
    return normalize(default) or DEFAULT_LOCALE


def is_known(tag: str | None, available: Collection[str] = SHIPPED_LOCALES) -> bool:
    """Whether `tag` reaches one of `available` before the default: False for a locale we have
    nothing for, which the service logs (once) before falling back."""
    normal = normalize(tag)
    if normal is None:
        return False
    have = {normalize(a) for a in available}
    parts = normal.split("-")
    return any("-".join(parts[:n]) in have for n in range(len(parts), 0, -1))


def gettext_dir(tag: str) -> str:
    """The catalog directory name gettext and Babel use: `pt-BR` → `pt_BR`."""
    return tag.replace("-", "_")
