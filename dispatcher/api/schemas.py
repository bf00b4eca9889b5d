"""Request bodies that wrap the domain models (which stay free of HTTP concerns)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, create_model

from channels.base import ChannelName
from dispatcher.domain.message import OutageMessage, Publication

# Row ids are 64-bit in the database: anything larger is a 422, not an overflow.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ChannelList = Annotated[list[ChannelName], Field(max_length=5)]
TierList = Annotated[list[Annotated[int, Field(ge=0, le=1000)]], Field(min_length=1, max_length=20)]
PUBLISHING = frozenset(Publication.model_fields)  # how an update is published, not what it says


class IncidentIn(OutageMessage):
    """A canonical outage message, plus an optional list of channels overriding the policy."""

    channels: ChannelList | None = None
    notify: bool = True  # false: shown on the status page, sent to nobody
    public: bool = True  # an incident opens in public (public: false is for updates)
    tiers: TierList | None = None

    def message(self) -> OutageMessage:
        return OutageMessage.model_validate(
            {
                name: getattr(self, name)
                for name in OutageMessage.model_fields
                if name in self.model_fields_set
            }
        )

    def publication(self) -> Publication:
        return Publication(notify=self.notify, public=self.public, tiers=self.tiers)


def _optional(annotation: Any, metadata: list[Any]) -> Any:
    return Annotated[annotation, *metadata] | None if metadata else annotation | None


_update_fields: dict[str, Any] = {
    name: (_optional(f.annotation, list(f.metadata)), None)
    for name, f in OutageMessage.model_fields.items()
    if name != "posted_at"
}
_UpdateBase = create_model(  # type: ignore[call-overload]
    "UpdateFields",
    __config__=ConfigDict(extra="forbid", str_strip_whitespace=True),
    **_update_fields,
)


class UpdateIn(_UpdateBase):  # type: ignore[misc, valid-type]
    """Changes to the incident's current message (only the fields sent), and how to broadcast them."""

    reopen: bool = False
    channels: ChannelList | None = None
    notify: bool = True  # false: shown on the status page, the feeds and the JSON, sent to nobody
    public: bool = True  # false: internal, sent to `tiers` only, never shown anywhere public
    tiers: TierList | None = None  # with public: false; default the first tier (the admins)

    def changes(self) -> dict[str, Any]:
        sent = self.model_fields_set - {"reopen", "channels", *PUBLISHING}
        return self.model_dump(mode="json", include=sent)

    def publication(self) -> Publication:
        return Publication(notify=self.notify, public=self.public, tiers=self.tiers)


class PreviewIn(IncidentIn):
    """A message to preview as if it were posted now."""


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[str] = []


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422)
}
