"""The translation catalogs are complete: every msgid the sources use (re-extracted here with Babel and
the repository's own babel.cfg) is translated in every shipped locale, none fuzzy, placeholders intact,
and the committed messages.pot is what the sources say. Pure: reads files, starts nothing."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

from channels.catalogs import catalog_path, locales_dir, translations
from channels.locales import SHIPPED_LOCALES, gettext_dir
from channels.rendering import IMPACT_LABELS, STATUS_LABELS

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "templates" / "locales"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def extracted_msgids() -> set[str]:
    """What `pybabel extract -F babel.cfg .` finds, through Babel's Python API."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found: set[str] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map
    ):
        found.update([message] if isinstance(message, str) else [m for m in message if m])
    return found


MSGIDS = extracted_msgids()


def read_catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as po:
        return read_po(po, locale=locale)


def problems(catalog: Catalog, msgids: Iterable[str]) -> list[str]:
    """Why `catalog` is not ready for readers: a msgid missing, untranslated, fuzzy, or with other
    placeholders than its msgid (a translation that would raise or drop a time at render)."""
    out: list[str] = []
    for msgid in sorted(msgids):
        message = catalog.get(msgid)
        if message is None:
            out.append(f"missing: {msgid!r}")
            continue
        if not message.string:
            out.append(f"untranslated: {msgid!r}")
        if message.fuzzy:
            out.append(f"fuzzy: {msgid!r}")
        if message.string and sorted(PLACEHOLDER.findall(msgid)) != sorted(
            PLACEHOLDER.findall(str(message.string))
        ):
            out.append(f"placeholders differ: {msgid!r} -> {message.string!r}")
    return out


def catalog_path_for(locale: str) -> Path:
    return LOCALES / gettext_dir(locale) / "LC_MESSAGES" / "messages.po"


def test_extraction_sees_the_sources() -> None:
    """The check below is not vacuous: templates and Python both contribute msgids."""
    assert "We are investigating a problem." in MSGIDS  # templates/_wording.j2
    assert "Est. back %(when)s (estimate, not confirmed)" in MSGIDS  # channels/rendering.py
    assert set(STATUS_LABELS.values()) | set(IMPACT_LABELS.values()) <= MSGIDS  # N_() marks
    assert "Status page" in MSGIDS  # templates/chat


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_every_msgid_is_translated_in_every_shipped_locale(locale: str) -> None:
    catalog = read_catalog(catalog_path_for(locale), gettext_dir(locale))
    assert problems(catalog, MSGIDS) == []
    assert catalog_path(locale).is_file()


def test_the_committed_template_matches_the_sources() -> None:
    pot = read_catalog(LOCALES / "messages.pot")
    assert {m.id for m in pot if m.id} == MSGIDS, "re-run the pybabel extract in README 'Translations'"


def test_only_sources_are_committed_no_compiled_catalogs() -> None:
    assert not list(LOCALES.rglob("*.mo")), "the .po files are compiled at import; commit no .mo"
    shipped = {p.parent.parent.name for p in LOCALES.glob("*/LC_MESSAGES/messages.po")}
    assert shipped == {gettext_dir(loc) for loc in SHIPPED_LOCALES}
    assert locales_dir().is_dir()


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_translations_are_plain_text(locale: str) -> None:
    """A translation is printed as trusted wording in the HTML email: no markup, no entities."""
    catalog = read_catalog(catalog_path_for(locale), gettext_dir(locale))
    for message in catalog:
        if message.id:
            assert not re.search(r"[<>&]", str(message.string)), (locale, message.string)


# --------------------------------------------------------------------------------------------------
# the check catches what it must


def write_catalog(path: Path, entries: dict[str, tuple[str, bool]]) -> Path:
    catalog = Catalog(locale="de")
    for msgid, (msgstr, fuzzy) in entries.items():
        catalog.add(msgid, msgstr, flags=["fuzzy"] if fuzzy else [])
    with path.open("wb") as po:
        write_po(po, catalog)
    return path


def test_the_check_fails_on_a_fuzzy_entry(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path / "messages.po",
        {"Resolved": ("Behoben", False), "Identified": ("Identifiziert", True)},
    )
    assert problems(read_catalog(path, "de"), {"Resolved", "Identified"}) == ["fuzzy: 'Identified'"]


def test_the_check_fails_on_an_untranslated_or_missing_entry(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "messages.po", {"Resolved": ("", False)})
    assert problems(read_catalog(path, "de"), {"Resolved", "Monitoring"}) == [
        "missing: 'Monitoring'",
        "untranslated: 'Resolved'",
    ]


def test_the_check_fails_on_a_lost_placeholder(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "messages.po", {"Posted %(time)s": ("Veröffentlicht", False)})
    assert problems(read_catalog(path, "de"), {"Posted %(time)s"}) == [
        "placeholders differ: 'Posted %(time)s' -> 'Veröffentlicht'"
    ]


def test_a_fuzzy_entry_is_not_used_at_runtime(tmp_path: Path) -> None:
    """Compiling skips fuzzy entries (as channels.catalogs does): a guess falls back to English."""
    from io import BytesIO

    from babel.messages.mofile import write_mo
    from babel.support import Translations

    path = write_catalog(tmp_path / "messages.po", {"Identified": ("Identifiziert", True)})
    mo = BytesIO()
    write_mo(mo, read_catalog(path, "de"), use_fuzzy=False)
    mo.seek(0)
    assert Translations(mo).gettext("Identified") == "Identified"


# --------------------------------------------------------------------------------------------------
# what readers get


STATUSPAGE_TERMS = {
    "de": ("Untersuchung läuft", "Identifiziert", "Wird beobachtet", "Behoben"),
    "fr": ("Enquête en cours", "Identifié", "Surveillance", "Résolu"),
    "es": ("Investigando", "Identificado", "Supervisando", "Resuelto"),
    "pt-BR": ("Investigando", "Identificado", "Monitorando", "Resolvido"),
    "ja": ("調査中", "特定済み", "監視中", "解決済み"),
    "en": ("Investigating", "Identified", "Monitoring", "Resolved"),
}
NOT_CONFIRMED = {
    "en": "not confirmed",
    "de": "nicht bestätigt",
    "fr": "non confirmée",
    "es": "no confirmada",
    "pt-BR": "não confirmada",
    "ja": "未確定",
}


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_incident_statuses_use_the_established_terms(locale: str) -> None:
    gettext = translations(locale).gettext
    incident = ("investigating", "identified", "monitoring", "resolved")
    labels = tuple(gettext(STATUS_LABELS[status]) for status in incident)
    assert labels == STATUSPAGE_TERMS[locale]


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_an_estimate_says_so_in_every_language(locale: str) -> None:
    gettext = translations(locale).gettext
    for msgid in (
        "Est. back %(when)s (estimate, not confirmed)",
        "We expect service to be restored by %(when)s (estimate, not confirmed).",
    ):
        assert NOT_CONFIRMED[locale] in gettext(msgid), (locale, gettext(msgid))


@pytest.mark.parametrize(
    ("tag", "reads"),
    [("de-AT", "de"), ("pt-PT", "pt-BR"), ("pt_br", "pt-BR"), ("xx", "en"), (None, "en"), ("JA", "ja")],
)
def test_an_unshipped_tag_reads_the_closest_catalog(tag: str | None, reads: str) -> None:
    assert translations(tag).gettext("Investigating") == STATUSPAGE_TERMS[reads][0]
