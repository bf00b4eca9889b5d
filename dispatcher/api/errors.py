"""Every failure as `{"error": {"code", "message", "fields"}}`, with field paths like
`support_contacts.0.email`, so clients can point at the input at fault."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException

from channels.rendering import TemplateError
from dispatcher.domain.errors import DispatcherError, Unavailable

log = logging.getLogger(__name__)
_SKIP = {"body", "query", "path", "header"}


def error_body(code: str, message: str, fields: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": list(fields), **extra}}


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'support_contacts', 0, 'email') -> 'support_contacts.0.email'. Skips pydantic's
    union/validator tags (e.g. 'function-after[...]') that are not part of the input's shape."""
    parts = [str(p) for i, p in enumerate(loc) if not (i == 0 and p in _SKIP)]
    return ".".join(p for p in parts if not (p.endswith("]") and "[" in p and not p[0].isdigit()))


def describe(errors: Sequence[Any]) -> tuple[str, list[str]]:
    """A readable message naming each field, and the field paths."""
    fields: list[str] = []
    messages: list[str] = []
    for err in errors:
        path = field_path(err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        fields.append(path)
        messages.append(f"{path}: {msg}" if path else msg)
    return "; ".join(messages) or "invalid request", [f for f in dict.fromkeys(fields) if f]


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    message, fields = describe(errors)
    return JSONResponse(error_body("validation_error", message, fields), status_code=422)


async def _dispatcher(request: Request, exc: DispatcherError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
    return JSONResponse(
        error_body(exc.code, exc.message, exc.fields), status_code=exc.http_status, headers=headers
    )


async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
    # The database did not answer, or stayed locked past its busy timeout: the transaction was
    # rolled back, so nothing was done and the client may send the same request again.
    log.warning(
        "database unavailable on %s %s: %s", request.method, request.url.path, type(exc.orig).__name__
    )
    return await _dispatcher(request, Unavailable("the database is not answering now; try again shortly"))


async def _template(request: Request, exc: TemplateError) -> JSONResponse:
    # The service's fault, not the caller's: a 500, as when it was one of our own errors.
    return JSONResponse(error_body(exc.code, exc.message, exc.fields), status_code=500)


async def _request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") in ("json_invalid", "json_type")]
    if bad_json:
        detail = bad_json[0].get("ctx", {}).get("error") or bad_json[0].get("msg")
        return JSONResponse(
            error_body("malformed_json", f"the body is not valid JSON: {detail}"), status_code=400
        )
    return validation_response(errors)


async def _model(request: Request, exc: ValidationError) -> JSONResponse:
    return validation_response(exc.errors())


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error; it has been logged"), status_code=500)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    code = codes.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def install(app: Starlette) -> None:
    """The JSON error bodies for any of our apps (the API's FastAPI app, the callbacks' Starlette one)."""
    for kind, handler in (
        (DispatcherError, _dispatcher),
        (OperationalError, _database),
        (InterfaceError, _database),
        (TemplateError, _template),
        (RequestValidationError, _request),
        (ValidationError, _model),
        (Exception, _unexpected),
        (StarletteHTTPException, _http),
    ):
        app.add_exception_handler(kind, handler)  # type: ignore[arg-type]
