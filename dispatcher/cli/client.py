"""The CLI's side of the HTTP API: message files in; one call out; errors as one line on stderr.

What a command prints is dispatcher/cli/format.py's (people) or the API's body as it came (`--json`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml

# The global `--json` (`outage-dispatcher --json ...`), set by commands.py's root callback, which
# runs before every command, so each invocation starts from what it was given (typer offers no
# public way to read the parent command's options from inside a subcommand).
_json_everywhere = False


def json_everywhere(flag: bool) -> None:
    global _json_everywhere
    _json_everywhere = flag


def bad_input(field: str, message: str) -> typer.Exit:
    """A mistake on the command line, as one line naming the option or argument; exit 2 (as a
    usage error). Raise what it returns: `raise bad_input("--api-key", "...")`."""
    typer.echo(f"error: {field}: {message}", err=True)
    return typer.Exit(2)


def load_file(path: Path) -> dict[str, Any]:
    """A message in YAML or JSON (JSON is YAML, but a JSON error message reads better)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise bad_input("FILE", f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise bad_input("FILE", f"{path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise bad_input("FILE", f"{path}: expected a mapping of message fields")
    return data


def message_body(path: Path | None, **options: Any) -> dict[str, Any]:
    body = load_file(path) if path is not None else {}
    for name, value in options.items():
        if value is not None and value != []:
            body[name] = value
    # YAML turns unquoted timestamps into datetimes; the API wants them as text.
    return json.loads(json.dumps(body, default=lambda v: v.isoformat()))


def json_wanted(flag: bool = False) -> bool:
    """`--json` given to the command itself or before it (`outage-dispatcher --json ...`)."""
    return flag or _json_everywhere


def headers(api_key: str | None, idempotency_key: str | None = None) -> dict[str, str]:
    if not api_key:
        raise bad_input("--api-key", "no API key: set DISPATCHER_API_KEY or pass --api-key")
    found = {"Authorization": f"Bearer {api_key}"}
    if idempotency_key:
        found["Idempotency-Key"] = idempotency_key
    return found


def error_line(status: int, body: Any) -> str:
    """One line a person can act on: the API's message (which names the field), its code and status,
    and the fields when the message does not already name them."""
    try:
        error = body["error"]
        message, code = str(error["message"]), str(error["code"])
        fields = [str(f) for f in error.get("fields") or [] if f and str(f) not in message]
    except (KeyError, TypeError):
        return f"error: HTTP {status}: {str(body)[:300]}"
    named = f" [{', '.join(fields)}]" if fields else ""
    return f"error: {message}{named} ({code}, HTTP {status})"


def fail(status: int, body: Any) -> None:
    """Prints the error (and each bad import row) on stderr and exits 1; with `--json` the API's
    error body goes to stdout as well, for scripts."""
    typer.echo(error_line(status, body), err=True)
    rows = body.get("error", {}).get("rows", []) if isinstance(body, dict) else []
    for row in rows:
        typer.echo(f"  row {row['row']}: {row['field'] or '-'}: {row['message']}", err=True)
    if json_wanted():
        emit(body)
    raise typer.Exit(1)


def call(
    url: str,
    api_key: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    params: dict[str, Any] | None = None,
    csv_file: Path | None = None,
    idempotency_key: str | None = None,
) -> Any:
    """One API call, its JSON body returned; an error response is reported (`fail`) and exits 1."""
    sent = headers(api_key, idempotency_key)
    query = {k: v for k, v in (params or {}).items() if v is not None}
    target = url.rstrip("/") + path
    try:
        if csv_file is not None:
            with csv_file.open("rb") as handle:
                files = {"file": (csv_file.name, handle, "text/csv")}
                response = httpx.request(method, target, headers=sent, params=query, files=files, timeout=60)
        else:
            response = httpx.request(method, target, headers=sent, params=query, json=body, timeout=30)
    except OSError as exc:  # the file (httpx's own failures are HTTPErrors, below)
        raise bad_input("FILE", f"{csv_file}: {exc.strerror}") from None
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach the API at {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        data = response.json() if response.content else None
    except ValueError:
        data = response.text
    if response.is_error:
        fail(response.status_code, data)
    return data


def emit(data: Any) -> None:
    """The API's body, exactly, as indented JSON."""
    typer.echo(json.dumps(data, indent=2))


def show(data: Any, lines: list[str], as_json: bool = False) -> None:
    """The API's body with `--json`, else the lines written for a person."""
    if json_wanted(as_json):
        emit(data)
    else:
        typer.echo("\n".join(lines))
