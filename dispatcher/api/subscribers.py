"""Subscribers: put one, read, list, delete, and import many from JSON or CSV with per-row errors."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.base import ChannelName
from channels.webhook import safe_url
from config import Settings
from dispatcher.api.deps import MANAGE, Caller, get_db, get_settings
from dispatcher.api.errors import error_body, field_path
from dispatcher.api.idempotency import Outcome, run_once
from dispatcher.api.schemas import ERRORS
from dispatcher.domain.errors import MalformedJson, NotFound, ValidationFailed
from dispatcher.domain.subscribers import SubscriberIn
from dispatcher.reads.paging import decode_cursor, encode_cursor
from dispatcher.store.db import Database
from dispatcher.store.models import Subscriber
from dispatcher.store.subscribers import import_many, remove, upsert

router = APIRouter(prefix="/v1/subscribers", tags=["subscribers"], responses=ERRORS)

ExternalId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@+-]+$")]
CSV_COLUMNS = (
    "external_id",
    "name",
    "org",
    "lists",
    "email",
    "phone",
    "slack_channel",
    "webhook_url",
    "channels",
    "components",
    "regions",
    "opt_outs",
    "locale",
    "timezone",
)
CSV_LISTS = {"lists", "channels", "components", "regions", "opt_outs"}
MAX_ROWS = 10_000


class SubscriberBody(SubscriberIn):
    """A subscriber as PUT: `external_id` comes from the path (if repeated here it must match)."""

    external_id: str | None = None  # type: ignore[assignment]


def subscriber_json(row: Subscriber) -> dict[str, Any]:
    return {
        "external_id": row.external_id,
        "name": row.name,
        "org": row.org,
        "lists": sorted(lst.name for lst in row.lists),
        "email": row.email,
        "phone": row.phone,
        "slack_channel": row.slack_channel,
        "webhook_url": row.webhook_url,
        "channels": row.channels,
        "components": row.components,
        "regions": row.regions,
        "opt_outs": row.opt_outs,
        "locale": row.locale,
        "timezone": row.timezone,
        "quiet_hours": row.quiet_hours,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


@router.put("/{external_id}", summary="Create (201) or replace (200) a subscriber")
def put_subscriber(
    external_id: ExternalId,
    body: SubscriberBody,
    _: Caller = Depends(MANAGE),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    if body.external_id is not None and body.external_id != external_id:
        raise ValidationFailed(
            "external_id in the body differs from the one in the path", fields=["external_id"]
        )
    item = SubscriberIn.model_validate(
        {**body.model_dump(exclude_unset=True, exclude={"external_id"}), "external_id": external_id}
    )
    unsafe = safe_url.problem(item.address(ChannelName.WEBHOOK), settings)  # no posts to ourselves
    if unsafe:
        raise ValidationFailed(f"webhook_url: {unsafe}", fields=["webhook_url"])
    with database.session() as session:
        row, created = upsert(session, settings, item)
        session.refresh(row)
        data = subscriber_json(row)
    return JSONResponse(data, status_code=201 if created else 200)


@router.get("/{external_id}", summary="One subscriber")
def get_subscriber(
    external_id: ExternalId, _: Caller = Depends(MANAGE), database: Database = Depends(get_db)
) -> dict[str, Any]:
    with database.session() as session:
        row = session.scalar(select(Subscriber).where(Subscriber.external_id == external_id))
        if row is None:
            raise NotFound(f"subscriber {external_id} not found", fields=["external_id"])
        return subscriber_json(row)


@router.get("", summary="Subscribers, cursor-paged")
def list_subscribers(
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    _: Caller = Depends(MANAGE),
    database: Database = Depends(get_db),
) -> dict[str, Any]:
    after = decode_cursor(cursor, "d") if cursor else 0
    with database.session() as session:
        rows = list(
            session.scalars(
                select(Subscriber).where(Subscriber.id > after).order_by(Subscriber.id).limit(limit + 1)
            )
        )
        page = rows[:limit]
        return {
            "subscribers": [subscriber_json(r) for r in page],
            "next_cursor": encode_cursor("d", page[-1].id) if len(rows) > limit else None,
        }


@router.delete("/{external_id}", status_code=204, summary="Delete a subscriber")
def delete_subscriber(
    external_id: ExternalId, _: Caller = Depends(MANAGE), database: Database = Depends(get_db)
) -> Response:
    with database.session() as session:
        if not remove(session, external_id):
            raise NotFound(f"subscriber {external_id} not found", fields=["external_id"])
    return Response(status_code=204)


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"subscribers": {"type": "array", "items": {"type": "object"}}},
                    "required": ["subscribers"],
                    "additionalProperties": False,
                }
            },
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


@router.post("/import", summary="Import subscribers from JSON or CSV", openapi_extra=IMPORT_BODY)
async def import_subscribers(
    request: Request,
    atomic: bool = False,
    caller: Caller = Depends(MANAGE),
    settings: Settings = Depends(get_settings),
    database: Database = Depends(get_db),
) -> JSONResponse:
    """Valid rows are imported and bad ones reported (row number, field, message); with
    `?atomic=true` any bad row imports nothing."""
    rows, payload = await _read_rows(request)
    items, errors = validate_rows(rows, settings)
    if errors and atomic:
        message = f"{len(errors)} error(s) in {len({e['row'] for e in errors})} row(s); nothing imported"
        fields = list(dict.fromkeys(e["field"] for e in errors if e["field"]))
        return JSONResponse(error_body("validation_error", message, fields, rows=errors), status_code=422)

    def create(session: Session) -> Outcome:
        imported = import_many(session, settings, items) if items else 0
        return (
            200,
            {"imported": imported, "rejected": len({e["row"] for e in errors}), "errors": errors},
            None,
        )

    import anyio.to_thread

    return await anyio.to_thread.run_sync(lambda: run_once(request, database, caller, payload, create))


async def _read_rows(request: Request) -> tuple[list[dict[str, Any]], Any]:
    """The submitted rows, and what identifies the request for idempotency."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValidationFailed("send the CSV as a multipart field named `file`", fields=["file"])
        raw = await upload.read()
        return parse_csv(raw), raw
    raw = await request.body()
    if kind in ("text/csv", "application/csv"):
        return parse_csv(raw), raw
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    if isinstance(data, dict) and set(data) - {"subscribers"}:
        unknown = sorted(set(data) - {"subscribers"})
        raise ValidationFailed(
            f'unknown field(s) {", ".join(unknown)}: send {{"subscribers": [...]}} (each subscriber '
            "names its own lists) or a CSV file",
            fields=unknown,
        )
    if not isinstance(data, dict) or not isinstance(data.get("subscribers"), list):
        raise ValidationFailed('send {"subscribers": [...]} or a CSV file', fields=["subscribers"])
    rows = data["subscribers"]
    if len(rows) > MAX_ROWS:
        raise ValidationFailed(f"at most {MAX_ROWS} subscribers per import", fields=["subscribers"])
    return rows, data


def parse_csv(raw: bytes) -> list[dict[str, Any]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("the CSV must be UTF-8", fields=["file"]) from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _csv_rows(reader)
    except csv.Error as exc:  # a stray carriage return, a cell past the size limit: the file is at fault
        reason = str(exc).split(" - ")[0]  # not Python's hint about opening files
        raise ValidationFailed(
            f"the CSV cannot be read at line {reader.line_num + 1}: {reason} (quote cells that hold "
            "line breaks, commas or quotes)",
            fields=["file"],
        ) from None


def _csv_rows(reader: csv.DictReader[str]) -> list[dict[str, Any]]:
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if "external_id" not in header or unknown:
        detail = f"unknown column(s): {', '.join(unknown)}" if unknown else "missing column external_id"
        raise ValidationFailed(f"CSV header: {detail}; columns are {','.join(CSV_COLUMNS)}", fields=["file"])
    rows: list[dict[str, Any]] = []
    for record in reader:
        row: dict[str, Any] = {}
        for key, value in record.items():
            if key is None or value is None or not value.strip():
                continue  # extra cells, or an empty cell: the field's default
            key = key.strip()
            row[key] = (
                [v.strip() for v in value.split(";") if v.strip()] if key in CSV_LISTS else value.strip()
            )
        rows.append(row)
        if len(rows) > MAX_ROWS:
            raise ValidationFailed(f"at most {MAX_ROWS} subscribers per import", fields=["file"])
    return rows


def validate_rows(
    rows: list[Any], settings: Settings | None = None
) -> tuple[list[SubscriberIn], list[dict[str, Any]]]:
    """Rows are numbered from 1 in the order given (for CSV: the data rows after the header)."""
    items: list[SubscriberIn] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        try:
            item = SubscriberIn.model_validate(row)
        except ValidationError as exc:
            for err in exc.errors():
                message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
                errors.append({"row": number, "field": field_path(err["loc"]) or None, "message": message})
            continue
        if item.external_id in seen:
            errors.append({"row": number, "field": "external_id", "message": "repeats an earlier row"})
            continue
        unsafe = safe_url.problem(item.address(ChannelName.WEBHOOK), settings) if settings else None
        if unsafe:
            errors.append({"row": number, "field": "webhook_url", "message": unsafe})
            continue
        seen.add(item.external_id)
        items.append(item)
    return items, errors
