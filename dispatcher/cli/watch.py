"""`broadcast watch`: the SSE stream GET /v1/broadcasts/{id}/events as live progress bars.

On a terminal: a rich display per tier and per channel, redrawn on every event. Anywhere else (a
pipe, a CI log): plain lines, no control codes. With `--json`: each event's body, one JSON per line.
Every mode ends with the completed summary (dispatcher/cli/format.py `completed_lines`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dispatcher.cli import client
from dispatcher.cli import format as fmt


def _bar(done: int, total: int) -> ProgressBar:
    return ProgressBar(
        total=max(total, 1),
        completed=done if total else 0,
        width=30,
        complete_style="cyan",
        finished_style="green",
    )


def progress_view(progress: Mapping[str, Any]) -> RenderableType:
    """One frame: the broadcast's state, a bar per tier and per tier x channel, then per channel."""
    head = Text(f"Broadcast #{progress['id']}  {progress['state']}", style="bold")
    tiers = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
    for column in ("tier", "channel", "progress", "done", "accepted", "failed", "state"):
        tiers.add_column(column, justify="right" if column in ("done", "accepted", "failed") else "left")
    for tier in progress["tiers"]:
        per = {ch: fmt.counts(states) for ch, states in sorted(tier["channels"].items())}
        done = sum(c["done"] for c in per.values())
        planned = max(int(tier["planned"]), sum(c["total"] for c in per.values()))
        gate = f" ({tier['gate']})" if tier.get("gate") else ""
        tiers.add_row(
            f"tier {tier['tier']}",
            "",
            _bar(done, planned),
            f"{fmt.n(done)}/{fmt.n(planned)}",
            fmt.n(sum(c["accepted"] for c in per.values())),
            fmt.n(sum(c["failed"] for c in per.values())),
            f"{tier['state']}{gate}",
        )
        for channel, c in per.items():
            failed = Text(fmt.n(c["failed"]), style="red" if c["failed"] else "")
            tiers.add_row(
                "",
                channel,
                _bar(c["done"], c["total"]),
                f"{fmt.n(c['done'])}/{fmt.n(c['total'])}",
                fmt.n(c["accepted"]),
                failed,
                "",
            )
    channels = Table(box=None, pad_edge=False, show_header=True, header_style="dim", title_justify="left")
    for column in ("all tiers", "progress", "done", "accepted", "delivered", "failed"):
        channels.add_column(column, justify="left" if column in ("all tiers", "progress") else "right")
    for channel, c in fmt.by_channel(progress).items():
        channels.add_row(
            channel,
            _bar(c["done"], c["total"]),
            f"{fmt.n(c['done'])}/{fmt.n(c['total'])}",
            fmt.n(c["accepted"]),
            fmt.n(c["delivered"]),
            fmt.n(c["failed"]),
        )
    return Group(head, tiers, Text(""), channels)


def events(url: str, api_key: str | None, broadcast_id: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data) from the SSE stream, until the server ends it."""
    sent = {**client.headers(api_key), "Accept": "text/event-stream"}
    path = f"{url.rstrip('/')}/v1/broadcasts/{broadcast_id}/events"
    name = ""
    try:
        with httpx.stream("GET", path, headers=sent, timeout=httpx.Timeout(30, read=120)) as response:
            if response.is_error:
                response.read()
                try:
                    body: Any = response.json()
                except ValueError:
                    body = response.text
                client.fail(response.status_code, body)
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    yield name, json.loads(line.partition(":")[2])
    except httpx.HTTPError as exc:
        typer.echo(f"error: the stream from {url} broke off: {exc}", err=True)
        raise typer.Exit(2) from None


def watch(url: str, api_key: str | None, broadcast_id: int, *, as_json: bool = False) -> dict[str, Any]:
    """Follows the broadcast until its `completed` event, which it returns."""
    console = Console()
    stream = events(url, api_key, broadcast_id)
    live = Live(console=console, refresh_per_second=8, auto_refresh=False) if console.is_terminal else None
    final: dict[str, Any] | None = None
    shown: list[str] = []  # the plain lines printed last
    try:
        if live is not None and not as_json:
            live.start()
        for name, data in stream:
            if name == "error":
                typer.echo(client.error_line(401, data), err=True)
                raise typer.Exit(1)
            if as_json:
                typer.echo(json.dumps(data))
            elif live is not None:
                live.update(progress_view(data), refresh=True)
            else:
                lines = fmt.progress_plain(data)
                typer.echo("\n".join(fmt.changed_lines(shown, lines)))
                shown = lines
            if name == "completed":
                final = data
                break
    finally:
        if live is not None and live.is_started:
            live.stop()
    if final is None:
        typer.echo("error: the stream ended before the broadcast completed", err=True)
        raise typer.Exit(1)
    if not as_json:
        typer.echo("\n".join(fmt.completed_lines(final)))
    return final
