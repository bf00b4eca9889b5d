"""`outage-dispatcher maintenance ...`: schedule, move, cancel and list maintenance through the API.

A typer sub-app; dispatcher/cli.py adds it with `app.add_typer(maintenance_app, name="maintenance")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml

maintenance_app = typer.Typer(
    no_args_is_help=True, help="Schedule, move and cancel maintenance (through the API)."
)

Url = Annotated[str, typer.Option("--url", envvar="DISPATCHER_URL", help="the API")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="DISPATCHER_API_KEY", show_default=False)]
When = Annotated[str | None, typer.Option(help="ISO 8601 with a time-zone offset, e.g. 2026-12-01T02:00Z")]


def _call(method: str, url: str, path: str, api_key: str | None, body: Any = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach {url}: {exc}", err=True)
        raise typer.Exit(2) from exc
    data = response.json() if response.content else {}
    if response.status_code >= 400:
        typer.echo(json.dumps(data, indent=2), err=True)
        raise typer.Exit(1)
    return data


def _show(data: dict[str, Any]) -> None:
    window = f"{data['starts_at']} -> {data['ends_at']}"
    typer.echo(f"maintenance {data['id']}: {data['title']} [{data['status']}] {window}")
    for notice in data.get("notices", []):
        late = " (late)" if notice.get("late") else ""
        typer.echo(f"  {notice['due_at']}  {notice['event']:<24} {notice['state']}{late}")


@maintenance_app.command("schedule")
def schedule(
    file: Annotated[Path | None, typer.Argument(help="a JSON or YAML canonical message")] = None,
    title: Annotated[str | None, typer.Option()] = None,
    starts_at: When = None,
    ends_at: When = None,
    impact: Annotated[str | None, typer.Option(help="none / minor / major / critical")] = None,
    summary: Annotated[str | None, typer.Option()] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Schedule maintenance from FILE, or from the options (which also override FILE's fields)."""
    body: dict[str, Any] = yaml.safe_load(file.read_text()) if file else {}
    options = {
        "title": title,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "impact": impact,
        "summary": summary,
    }
    body.update({k: v for k, v in options.items() if v is not None})
    body.setdefault("kind", "maintenance")
    _show(_call("POST", url, "/v1/maintenances", api_key, body))


@maintenance_app.command("reschedule")
def reschedule(
    maintenance_id: int,
    starts_at: When = None,
    ends_at: When = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Move the window; pending notices are recomputed and a reschedule notice is sent."""
    body = {k: v for k, v in {"starts_at": starts_at, "ends_at": ends_at}.items() if v is not None}
    _show(_call("PATCH", url, f"/v1/maintenances/{maintenance_id}", api_key, body))


@maintenance_app.command("cancel")
def cancel(maintenance_id: int, url: Url = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """Cancel: pending notices are withdrawn and a cancellation is sent."""
    _show(_call("POST", url, f"/v1/maintenances/{maintenance_id}/cancel", api_key))


@maintenance_app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
) -> None:
    """Maintenance windows with their notices."""
    path = "/v1/maintenances" + (f"?status={status}" if status else "")
    for item in _call("GET", url, path, api_key)["items"]:
        _show(item)
