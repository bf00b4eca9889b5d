"""The fixed wording's translations: one gettext catalog per shipped locale, compiled when first read.

The `.po` files under `templates/locales/<dir>/LC_MESSAGES/` are the only form committed: each is read
with Babel and compiled to `.mo` in memory, so a translator's edit can never disagree with a stale
compiled file. Pure apart from reading the packaged files; cached per locale for the process.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from io import BytesIO

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from channels.locales import SHIPPED_LOCALES, gettext_dir, resolve

DOMAIN = "messages"


def locales_dir() -> Traversable:
    """`templates/locales/` inside the installed package (found by name: no import of `templates`)."""
    return files("templates") / "locales"


def catalog_path(locale: str) -> Traversable:
    """The `.po` file of one shipped locale (`pt-BR` → `pt_BR/LC_MESSAGES/messages.po`)."""
    return locales_dir() / gettext_dir(locale) / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=1024)
def shipped_locale(tag: str | None) -> str:
    """The shipped locale a reader's tag reads: `de-AT` → `de`, `pt-PT` → `pt-BR`, `xx` → `en`.
    Cached: every formatted time asks, and the tags a service sees are few."""
    return resolve(tag, SHIPPED_LOCALES)


@lru_cache(maxsize=1024)
def babel_locale(tag: str | None) -> str:
    """The identifier Babel's date formatting takes for the reader's tag (`pt_BR`)."""
    return gettext_dir(shipped_locale(tag))


@lru_cache(maxsize=len(SHIPPED_LOCALES))
def _compiled(locale: str) -> Translations:
    with catalog_path(locale).open("rb") as po:
        catalog = read_po(po, locale=gettext_dir(locale), domain=DOMAIN)
    mo = BytesIO()
    write_mo(mo, catalog, use_fuzzy=False)  # a fuzzy entry is a guess: English rather than a guess
    mo.seek(0)
    return Translations(mo, domain=DOMAIN)


def translations(tag: str | None) -> Translations:
    """The catalog for a reader's locale tag, resolved to the closest shipped locale first."""
    return _compiled(shipped_locale(tag))


def N_(message: str) -> str:  # the gettext convention: pybabel extracts `N_(...)` by default
    """Marks a msgid for extraction where it is defined; it is translated where it is shown."""
    return message
