"""Which rendering of a broadcast a reader gets: their language, their time zone, and whether their
tier's resolved notice carries a credit. Every delivery names its variant by this key, and each
key present in an audience is rendered once per channel (never once per recipient).

Pure. The key is stored as text (`deliveries.locale`, `broadcast_variants.locale`): the locale
alone for UTC readers (`de`), `@zone` otherwise (`de@Europe/Berlin`), and a `+compensation` suffix
for the compensation tiers, so the keys written before time zones counted (`en`,
`en+compensation`) still read the same.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from channels import locales

UTC_ZONE = "UTC"
_COMPENSATION = "+compensation"


@dataclass(frozen=True, order=True)
class VariantKey:
    locale: str = locales.DEFAULT_LOCALE
    timezone: str = UTC_ZONE
    compensated: bool = False

    def __str__(self) -> str:
        zone = "" if self.timezone == UTC_ZONE else f"@{self.timezone}"
        return f"{self.locale}{zone}{_COMPENSATION if self.compensated else ''}"

    @classmethod
    def parse(cls, text: str) -> VariantKey:
        compensated = text.endswith(_COMPENSATION)
        if compensated:
            text = text[: -len(_COMPENSATION)]
        locale, _, zone = text.partition("@")
        return cls(locale or locales.DEFAULT_LOCALE, zone or UTC_ZONE, compensated)

    def without_credit(self) -> VariantKey:
        return VariantKey(self.locale, self.timezone)


def is_zone(name: str) -> bool:
    """Whether tzdata knows `name` (`Asia/Tokyo`, `UTC`)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@lru_cache(maxsize=1024)
def known_zone(name: str | None) -> str:
    """`name` if tzdata knows it, else UTC: a zone nobody can render must not split the audience into
    variants that all read UTC anyway."""
    if not name or not is_zone(name):
        return UTC_ZONE
    return UTC_ZONE if name in ("Etc/UTC", "UTC", "Etc/Zulu", "Zulu", "Universal") else name


@lru_cache(maxsize=4096)
def reader_key(
    locale: str | None,
    timezone: str | None,
    available: tuple[str, ...],
    default_locale: str,
    compensated: bool = False,
) -> VariantKey:
    """The key of a reader with this locale and zone, for a broadcast whose wording exists in
    `available` (the shipped catalogs and the commander's translations): the closest of those
    (`de-AT` → `de`), else the default locale."""
    return VariantKey(locales.resolve(locale, available, default_locale), known_zone(timezone), compensated)


def available_locales(shipped: Collection[str], translations: Collection[str]) -> tuple[str, ...]:
    """The languages a broadcast can be read in, sorted so the tuple caches well."""
    return tuple(sorted({*shipped, *translations}))
