"""The accepted-over-time chart, drawn as inline SVG on the server (pure: series in, markup out),
so the page shows it without script and the live stream redraws it with the same code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 10, 26
BASE = HEIGHT - BOTTOM  # the x axis


@dataclass(frozen=True)
class Line:
    channel: str
    points: str  # the polyline's "x,y x,y ..." in the chart's coordinates
    total: int


def lines(series: dict[str, list[list[Any]]]) -> tuple[list[Line], int, int]:
    """Each channel's polyline, the tallest bucket and the bucket count, on a shared scale."""
    buckets = max((len(points) for points in series.values()), default=0)
    peak = max((int(n) for points in series.values() for _, n in points), default=0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out: list[Line] = []
    for channel in sorted(series):
        points = series[channel]
        step = plot_w / max(1, buckets - 1)
        coords = [
            f"{LEFT + i * step:.1f},{TOP + plot_h - (int(n) / peak * plot_h if peak else 0):.1f}"
            for i, (_, n) in enumerate(points)
        ]
        out.append(Line(channel, " ".join(coords), sum(int(n) for _, n in points)))
    return out, peak, buckets


def chart_svg(over_time: dict[str, Any]) -> Markup:
    """The chart for `reads.broadcasts.accepted_over_time`'s answer; every text is escaped."""
    series: dict[str, list[list[Any]]] = over_time.get("series") or {}
    drawn, peak, buckets = lines(series)
    label = "Accepted deliveries over time, per channel: " + (
        ", ".join(f"{line.channel} {line.total}" for line in drawn) or "none yet"
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{BASE}" x2="{WIDTH - RIGHT}" y2="{BASE}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{LEFT - 6}" y="{HEIGHT - BOTTOM}" text-anchor="end">0</text>',
    ]
    if buckets:
        first = _clock(next(iter(series.values()))[0][0]) if series else ""
        last = _clock(max(series.values(), key=len)[-1][0]) if series else ""
        parts.append(f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}">{escape(first)}</text>')
        parts.append(
            f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{escape(last)}</text>'
        )
    for i, line in enumerate(drawn):
        parts.append(
            f'<polyline class="series series-{i % 6}" data-channel="{escape(line.channel)}" '
            f'points="{line.points}"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def legend(over_time: dict[str, Any]) -> list[tuple[int, str, int]]:
    """(colour index, channel, accepted) per channel, in the chart's order, for the legend."""
    drawn, _, _ = lines(over_time.get("series") or {})
    return [(i % 6, line.channel, line.total) for i, line in enumerate(drawn)]


def _clock(value: Any) -> str:
    text = str(value)
    return text[11:19] if len(text) >= 19 else text
