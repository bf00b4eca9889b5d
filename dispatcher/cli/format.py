"""What the CLI prints for a person under stress: the ids, counts and next command, nothing else.

Pure functions from the API's JSON bodies to lines of text (and rich tables), so the wording is
tested without a server; `--json` bypasses all of this and prints the body as it came.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

# Delivery states by what they mean to a commander (dispatcher/domain/states.py DeliveryState).
WAITING = ("pending", "sending")
ACCEPTED = ("sent", "delivered")
FAILED = ("failed", "bounced", "undelivered")
SKIPPED = ("suppressed",)


def n(value: int | None) -> str:
    """100050 -> '100,050'."""
    return f"{value or 0:,}"


def when(value: str | None) -> str:
    """'2026-12-02T14:53:12.519753+00:00' -> '2026-12-02 14:53:12 UTC' (in UTC; '' for None)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{n(count)} {word if count == 1 else many or word + 's'}"


def listed(items: Iterable[str]) -> str:
    return ", ".join(items) or "no channel"


def planned_total(progress: Mapping[str, Any]) -> int:
    return sum(int(t["planned"]) for t in progress["tiers"])


def first_tier(progress: Mapping[str, Any]) -> str:
    tiers = [t["tier"] for t in progress["tiers"]]
    return f"; tier {min(tiers)} first" if len(tiers) > 1 else ""


def broadcast_line(progress: Mapping[str, Any]) -> str:
    """'Broadcast #31: 100,050 deliveries on email, sms, chat; tier 0 first.' Until planning has
    finished the total is not known: it says how far planning has got instead of guessing."""
    channels, total = listed(progress["channels"]), planned_total(progress)
    if progress["state"] == "queued":
        what = f"queued, not planned yet, on {channels}"
    elif progress["planned_at"] is None:
        what = f"planning, {n(total)} planned so far, on {channels}"
    else:
        what = f"{plural(total, 'delivery', 'deliveries')} on {channels}"
    return f"Broadcast #{progress['id']}: {what}{first_tier(progress)}."


def watch_hint(broadcast_id: int) -> str:
    return f"Watch: outage-dispatcher broadcast watch {broadcast_id}"


def _scope(incident: Mapping[str, Any]) -> str:
    message = incident.get("message") or {}
    parts = [incident.get("impact"), *(message.get("components") or []), *(message.get("regions") or [])]
    return ", ".join(str(p) for p in parts if p)


def _sending(body: Mapping[str, Any], progress: Mapping[str, Any] | None) -> list[str]:
    """The broadcast's lines, or why there is none (a silent, `notify: false`, update)."""
    update = body.get("update") or {}
    if progress is None:
        return ["Not sent (notify: false): shown on the status page only, no broadcast"]
    internal = [] if update.get("public", True) else ["Internal (public: false): never on the status page"]
    return [*internal, broadcast_line(progress), watch_hint(progress["id"])]


def incident_opened(body: Mapping[str, Any], progress: Mapping[str, Any] | None) -> list[str]:
    """POST /v1/incidents' body (and the broadcast as read just after) for a person."""
    incident = body["incident"]
    return [
        f"Incident #{incident['id']} opened ({_scope(incident)}): {incident['title']}",
        *_sending(body, progress),
    ]


def incident_updated(body: Mapping[str, Any], progress: Mapping[str, Any] | None) -> list[str]:
    incident = body["incident"]
    return [
        f"Incident #{incident['id']} updated: {incident['status']} ({_scope(incident)}): {incident['title']}",
        *_sending(body, progress),
    ]


def preview_lines(body: Mapping[str, Any]) -> list[str]:
    """POST /v1/preview: who would get it, per tier and channel, and the gist of each variant."""
    audience = body["audience"]
    lines = [
        f"Preview ({body['event']}), nothing sent: {plural(audience['total'], 'delivery', 'deliveries')} "
        f"on {listed(body['channels'])}"
    ]
    for tier in audience["tiers"]:
        per = ", ".join(f"{ch} {n(k)}" for ch, k in tier["channels"].items()) or "nobody"
        public = " (public)" if tier.get("public") else ""
        lines.append(f"  tier {tier['tier']}{public}: {n(tier['total'])}  {per}")
    readers = audience.get("readers")
    if readers and readers["combinations"]:
        lines.append(
            f"  readers: {plural(len(readers['combinations']), 'locale and zone', 'locales and zones')}, "
            f"{plural(readers['variants_per_channel'], 'variant')} per channel"
        )
    shown = body.get("rendered_for")
    if shown:
        lines.append(f"  as read in {shown['locale']}, {shown['timezone']}:")
    for channel in body["channels"]:
        variant = body["variants"].get(channel) or {}
        gist = variant.get("subject") or (variant.get("text") or "").strip().splitlines()[0:1]
        gist = gist if isinstance(gist, str) else (gist[0] if gist else "")
        segments = f" [{plural(variant['segments'], 'segment')}]" if variant.get("segments") else ""
        lines.append(f"  {channel:<8} {gist[:100]}{segments}")
    return lines


def import_lines(body: Mapping[str, Any]) -> list[str]:
    """POST /v1/subscribers/import: counts, then every bad row by number and field."""
    lines = [
        f"Imported {plural(body['imported'], 'subscriber')}; {plural(body['rejected'], 'row')} rejected."
    ]
    for error in body.get("errors", []):
        lines.append(f"  row {error['row']}: {error['field'] or '-'}: {error['message']}")
    return lines


def maintenance_lines(data: Mapping[str, Any], verb: str | None = None) -> list[str]:
    head = f"Maintenance #{data['id']}{' ' + verb if verb else ''} [{data['status']}]: {data['title']}"
    lines = [head, f"  window {when(data['starts_at'])} -> {when(data['ends_at'])}"]
    for notice in data.get("notices", []):
        late = " (late)" if notice.get("late") else ""
        lines.append(f"  {when(notice['due_at'])}  {notice['event']:<24} {notice['state']}{late}")
    return lines


def counts(states: Mapping[str, int]) -> dict[str, int]:
    """A channel's counts by state, folded into what a commander asks: done, ok, failed, skipped."""
    total = sum(states.values())
    waiting = sum(states.get(s, 0) for s in WAITING)
    return {
        "total": total,
        "done": total - waiting,
        "accepted": sum(states.get(s, 0) for s in ACCEPTED),
        "delivered": states.get("delivered", 0),
        "failed": sum(states.get(s, 0) for s in FAILED),
        "suppressed": sum(states.get(s, 0) for s in SKIPPED),
    }


def by_channel(progress: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for tier in progress["tiers"]:
        for channel, states in tier["channels"].items():
            into = merged.setdefault(channel, {})
            for state, k in states.items():
                into[state] = into.get(state, 0) + k
    return {channel: counts(states) for channel, states in sorted(merged.items())}


def _outcome(c: Mapping[str, int]) -> str:
    parts = [f"{n(c['accepted'])} accepted ({n(c['delivered'])} delivered)", f"{n(c['failed'])} failed"]
    if c["suppressed"]:
        parts.append(f"{n(c['suppressed'])} suppressed")
    return ", ".join(parts)


def completed_lines(progress: Mapping[str, Any]) -> list[str]:
    """The last thing `broadcast watch` prints: the outcome, overall and by channel."""
    channels = by_channel(progress)
    total = counts({s: k for s, k in progress["totals"].items() if k})
    head = f"Broadcast #{progress['id']} completed: {plural(total['total'], 'delivery', 'deliveries')}"
    lines = [f"{head}, {_outcome(total)}."]
    for channel, c in channels.items():
        lines.append(f"  {channel:<8} {_outcome(c)}")
    if progress.get("extra_sends"):
        lines.append(f"  possible duplicates: {n(progress['extra_sends'])} extra sends")
    return lines


def progress_plain(progress: Mapping[str, Any]) -> list[str]:
    """Plain lines for a stream that is not a terminal: the broadcast, then a line per tier and one
    per tier and channel (done/total, counts by state), each readable on its own, so a watcher can
    print only the lines that changed (`changed_lines`)."""
    totals = " ".join(f"{k}={n(v)}" for k, v in progress["totals"].items() if v)
    lines = [f"broadcast {progress['id']} {progress['state']}  {totals or 'nothing planned yet'}"]
    for tier in progress["tiers"]:
        gate = tier["gate"] or "-"
        lines.append(f"  tier {tier['tier']} {tier['state']} planned={n(tier['planned'])} gate={gate}")
        for channel, states in sorted(tier["channels"].items()):
            c = counts(states)
            by_state = " ".join(f"{k}={n(v)}" for k, v in sorted(states.items()))
            lines.append(f"  tier {tier['tier']} {channel:<8} {n(c['done'])}/{n(c['total'])}  {by_state}")
    return lines


def changed_lines(before: list[str], now: list[str]) -> list[str]:
    """The broadcast's line, then only the lines of `now` that `before` did not have."""
    seen = set(before)
    return now[:1] + [line for line in now[1:] if line not in seen]


def receipt_problem(receipt: Mapping[str, Any]) -> str:
    """'21211 Invalid 'To' Phone Number: ...' for a row that did not arrive; '' otherwise."""
    if receipt["state"] not in (*FAILED, *SKIPPED) and not receipt.get("last_error"):
        return ""
    return " ".join(str(p) for p in (receipt.get("last_error_code"), receipt.get("last_error")) if p)


def receipts_table(body: Mapping[str, Any]) -> Table:
    """The receipts as a table: one row per delivery, the provider's code and message where it failed."""
    table = Table(title=f"Broadcast #{body['broadcast_id']}: {plural(len(body['receipts']), 'receipt')}")
    addresses = any(r.get("address") for r in body["receipts"])  # masked by the API for viewers
    columns = ("delivery", "subscriber", "address", "channel", "tier", "state", "sends", "provider says")
    for column in columns if addresses else tuple(c for c in columns if c != "address"):
        table.add_column(column, justify="right" if column in ("delivery", "tier", "sends") else "left")
    for r in body["receipts"]:
        duplicate = Text(str(r["sends"]), style="bold yellow" if r["sends"] > 1 else "")
        state = Text(r["state"], style="red" if r["state"] in FAILED else "")
        table.add_row(
            str(r["delivery_id"]),
            r.get("subscriber") or "-",
            *([r.get("address") or ""] if addresses else []),
            r["channel"],
            str(r["tier"]),
            state,
            duplicate,
            receipt_problem(r),
        )
    return table
