"""`outage-dispatcher maintenance ...`: schedule, move, cancel and list maintenance through the API.

A typer sub-app; dispatcher/cli/commands.py adds it with `app.add_typer(maintenance_app, name="maintenance")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dispatcher.cli import client
from dispatcher.cli import format as fmt

maintenance_app = typer.Typer(
    no_args_is_help=True, help="Schedule, move and cancel maintenance (through the API)."
)

Url = Annotated[str, typer.Option("--url", envvar="DISPATCHER_URL", help="the API")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="DISPATCHER_API_KEY", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON body instead")]
When = Annotated[str | None, typer.Option(help="ISO 8601 with a time-zone offset, e.g. 2026-12-01T02:00Z")]


def _call(method: str, url: str, path: str, api_key: str | None, body: Any = None) -> dict[str, Any]:
    """One API call; an error is one line on stderr naming the field, exit 1 (dispatcher/cli/client.py)."""
    return client.call(url, api_key, method, path, body)  # type: ignore[no-any-return]


def _show(data: dict[str, Any], verb: str | None, as_json: bool) -> None:
    client.show(data, fmt.maintenance_lines(data, verb), as_json)


@maintenance_app.command("schedule")
def schedule(
    file: Annotated[Path | None, typer.Argument(help="a JSON or YAML canonical message")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    starts_at: When = None,
    ends_at: When = None,
    impact: Annotated[str | None, typer.Option(help="none / minor / major / critical")] = None,
    summary: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Schedule maintenance from FILE, or from the options (which also override FILE's fields)."""
    body: dict[str, Any] = client.load_file(file) if file else {}
    options = {
        "title": title,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "impact": impact,
        "summary": summary,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    body.setdefault("kind", "maintenance")
    _show(_call("POST", url, "/v1/maintenances", api_key, body), "scheduled", as_json)


@maintenance_app.command("reschedule")
def reschedule(
    maintenance_id: int,
    starts_at: When = None,
    ends_at: When = None,
    as_json: Json = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Move the window; pending notices are recomputed and a reschedule notice is sent."""
    body = {k: v for k, v in {"starts_at": starts_at, "ends_at": ends_at}.items() if v is not None}
    _show(_call("PATCH", url, f"/v1/maintenances/{maintenance_id}", api_key, body), "rescheduled", as_json)


@maintenance_app.command("cancel")
def cancel(
    maintenance_id: int, as_json: Json = False, url: Url = "http://127.0.0.1:8000", api_key: ApiKey = None
) -> None:
    """Cancel: pending notices are withdrawn and a cancellation is sent."""
    _show(_call("POST", url, f"/v1/maintenances/{maintenance_id}/cancel", api_key), "cancelled", as_json)


@maintenance_app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    as_json: Json = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Maintenance windows with their notices."""
    path = "/v1/maintenances" + (f"?status={status}" if status else "")
    data = _call("GET", url, path, api_key)
    if client.json_wanted(as_json):
        client.emit(data)
        return
    if not data["items"]:
        typer.echo("No maintenance" + (f" with status {status}" if status else "") + ".")
    for item in data["items"]:
        typer.echo("\n".join(fmt.maintenance_lines(item)))
