"""The CLI's side of the HTTP API: message files in, JSON or a live progress display out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml


def load_file(path: Path) -> dict[str, Any]:
    """A message in YAML or JSON (JSON is YAML, but a JSON error message reads better)."""
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="FILE") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of message fields", param_hint="FILE")
    return data


def message_body(path: Path | None, **options: Any) -> dict[str, Any]:
    body = load_file(path) if path is not None else {}
    for name, value in options.items():
        if value is not None and value != []:
            body[name] = value
    # YAML turns unquoted timestamps into datetimes; the API wants them as text.
    return json.loads(json.dumps(body, default=lambda v: v.isoformat()))


def _headers(api_key: str | None, idempotency_key: str | None = None) -> dict[str, str]:
    if not api_key:
        raise typer.BadParameter("set DISPATCHER_API_KEY or pass --api-key", param_hint="--api-key")
    headers = {"Authorization": f"Bearer {api_key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def call(
    url: str,
    api_key: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    csv_file: Path | None = None,
    idempotency_key: str | None = None,
) -> Any:
    """One API call; an error response is printed (code and message) and exits 1."""
    headers = _headers(api_key, idempotency_key)
    try:
        if csv_file is not None:
            with csv_file.open("rb") as handle:
                response = httpx.request(
                    method,
                    url.rstrip("/") + path,
                    headers=headers,
                    files={"file": (csv_file.name, handle, "text/csv")},
                    timeout=60,
                )
        else:
            response = httpx.request(method, url.rstrip("/") + path, headers=headers, json=body, timeout=30)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the API at {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    if response.is_error:
        try:
            error = response.json()["error"]
            typer.echo(f"error {response.status_code} {error['code']}: {error['message']}", err=True)
            for row in error.get("rows", []):
                typer.echo(f"  row {row['row']}: {row['field']}: {row['message']}", err=True)
        except (ValueError, KeyError, TypeError):
            typer.echo(f"error {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return response.json() if response.content else None


def emit(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def progress_lines(progress: dict[str, Any]) -> list[str]:
    """Plain text: one line for the broadcast, one per tier and channel with counts by state."""
    totals = " ".join(f"{k}={v}" for k, v in progress["totals"].items() if v)
    lines = [f"broadcast {progress['id']} {progress['state']}  {totals or 'nothing planned yet'}"]
    for tier in progress["tiers"]:
        lines.append(
            f"  tier {tier['tier']} {tier['state']} planned={tier['planned']} gate={tier['gate'] or '-'}"
        )
        for channel, states in sorted(tier["channels"].items()):
            counts = " ".join(f"{k}={v}" for k, v in sorted(states.items()))
            lines.append(f"    {channel:<8} {counts}")
    return lines


def watch(url: str, api_key: str | None, broadcast_id: int) -> None:
    """Follows the SSE stream and prints each change until the `completed` event."""
    headers = {**_headers(api_key), "Accept": "text/event-stream"}
    path = f"{url.rstrip('/')}/v1/broadcasts/{broadcast_id}/events"
    event = ""
    try:
        with httpx.stream("GET", path, headers=headers, timeout=httpx.Timeout(30, read=60)) as response:
            if response.is_error:
                response.read()
                typer.echo(f"error {response.status_code}: {response.text}", err=True)
                raise typer.Exit(1)
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    typer.echo("\n".join(progress_lines(json.loads(line.partition(":")[2]))))
                    sys.stdout.flush()
                    if event == "completed":
                        return
    except httpx.HTTPError as exc:
        typer.echo(f"stream from {url} broke off: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("stream ended before the broadcast completed", err=True)
    raise typer.Exit(1)
