"""What a channel condenses: the input the condensers and templates read, and nothing else.

A channel defines the input it renders and the result it returns, the way an apprise plugin knows
nothing of its caller; the service maps its canonical message onto it. That mapping is structural:
the service's message has these attributes (its vocabulary values are `StrEnum` members, which are
`str`), so it is a `Notice` as it is, and no channel module needs to import the service.

Vocabulary values are plain strings:
- `kind`: "incident" or "maintenance";
- `lifecycle_status`: "investigating", "identified", "monitoring", "resolved" (incidents) or
  "scheduled", "in_progress", "completed", "cancelled" (maintenance);
- `impact`: "none", "minor", "major" or "critical".
Times are timezone-aware (rendered in the reader's zone). A URL is anything whose `str()` is the
address (a `str`, or a validated URL object).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol


class Contact(Protocol):
    """One way to reach support; at least one of email, phone and url is set."""

    @property
    def label(self) -> str: ...

    @property
    def email(self) -> str | None: ...

    @property
    def phone(self) -> str | None: ...

    @property
    def url(self) -> object | None: ...


class Notice(Protocol):
    """The outage notice a channel renders: read-only, already validated by whoever built it."""

    @property
    def title(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def lifecycle_status(self) -> str: ...

    @property
    def is_final(self) -> bool:
        """True once the status is one after which nothing more happens (resolved, completed,
        cancelled): no ETA or next update is worded then."""
        ...

    @property
    def impact(self) -> str: ...

    @property
    def components(self) -> Sequence[str]: ...

    @property
    def regions(self) -> Sequence[str]: ...

    @property
    def summary(self) -> str | None: ...

    @property
    def details(self) -> str | None: ...

    @property
    def cause(self) -> str | None: ...

    @property
    def workarounds(self) -> Sequence[str]: ...

    @property
    def eta(self) -> datetime | None: ...

    @property
    def eta_confirmed(self) -> bool: ...

    @property
    def next_update_at(self) -> datetime | None: ...

    @property
    def data_safety(self) -> str | None: ...

    @property
    def compensation(self) -> str | None: ...

    @property
    def prevention(self) -> str | None: ...

    @property
    def status_page_url(self) -> object | None: ...

    @property
    def support_contacts(self) -> Sequence[Contact]: ...

    @property
    def starts_at(self) -> datetime | None: ...

    @property
    def ends_at(self) -> datetime | None: ...

    @property
    def posted_at(self) -> datetime | None: ...
