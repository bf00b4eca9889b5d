"""Renders the tables of BENCHMARKS.md from benchmarks/results/*.json (figures are never typed by hand).

.venv/bin/python -m benchmarks.report > /tmp/tables.md
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.stack import RESULTS


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def mw(s: dict[str, Any]) -> str:
    return f"{s['median']} / {s['worst']}"


def header(d: dict[str, Any]) -> str:
    m = d["machine"]
    return (
        f"_{d['date']}; {m['cpus']} × {m['cpu_model']}, {m['memory_gb']} GB, Python {m['python']}; "
        f"load average at the end {m['load_average']}; `{d['command']}`_\n"
    )


def fanout(d: dict[str, Any]) -> str:
    s = d["summary"]
    rows = [
        ("API call (POST /v1/incidents), ms", mw(s["api_ms"])),
        ("API answer → first admin accepted, ms", mw(s["first_admin_ms"])),
        ("API answer → all admins accepted, ms", mw(s["all_admins_ms"])),
        ("API answer → all tiers accepted, s", mw(s["all_tiers_accepted_s"])),
        ("API answer → broadcast completed, s", mw(s["complete_s"])),
        ("deliveries/s (median / lowest)", mw(s["deliveries_per_s"])),
        ("sandbox share of our CPU", mw(d["sandbox_cpu_share"])),
    ]
    out = [
        f"### Big broadcast: {d['subscribers']:,} subscribers, {d['workers']} workers, "
        f"{len(d['runs'])} runs\n"
    ]
    out.append(header(d))
    out.append("| measure | median / worst |\n| --- | --- |")
    out += [f"| {a} | {b} |" for a, b in rows]
    r = d["runs"][0]
    out.append(
        f"\nProvider calls per run: {r['provider_calls']}; deliveries {r['deliveries']}, "
        f"failed {r['failed']}."
    )
    out.append(f"Peak memory (VmHWM of the largest process of each component, MB): {d['peak_rss_mb']}.")
    return "\n".join(out) + "\n"


def compare(d: dict[str, Any]) -> str:
    s, n, ratio = d["summary"], d["naive"]["summary"], d["ratio_naive_over_dispatcher"]
    out = [f"### Against the usual way: {d['subscribers']:,} subscribers, {len(d['runs'])} runs each\n"]
    out.append(header(d))
    out.append("| measure (median) | dispatcher | naive | naive ÷ dispatcher |\n| --- | --- | --- | --- |")
    out.append(
        f"| first admin, ms | {s['first_admin_ms']['median']} | {n['first_admin_ms']['median']} "
        f"| {ratio['first_admin']} |"
    )
    out.append(
        f"| all admins, ms | {s['all_admins_ms']['median']} | {n['all_admins_ms']['median']} "
        f"| {ratio['all_admins']} |"
    )
    out.append(
        f"| everything, s | {s['complete_s']['median']} | {n['complete_s']['median']} | {ratio['complete']} |"
    )
    for c, v in ratio["per_channel"].items():
        out.append(
            f"| {c}: last accepted, s (first) | {v['dispatcher_last_s']} ({v['dispatcher_first_s']}) "
            f"| {v['naive_last_s']} ({v['naive_first_s']}) | {v['ratio_total']} |"
        )
    calls_d = d["runs"][0]["provider_calls"]
    calls_n = d["naive"]["runs"][0]["provider_calls"]
    out.append(f"\nProvider calls: dispatcher {calls_d}, naive {calls_n}.")
    return "\n".join(out) + "\n"


def limits(d: dict[str, Any]) -> str:
    out = ["### At the providers' limits\n", header(d)]
    out.append(
        "| headroom | SMS: 3,000 done, s | bound, s | over bound | max/1 s seen (limit 100) | 429s "
        "| chat: 300 posts, s | first→last post, s | bound, s | max/1 s any channel (limit 1) | 429s |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in d["rows"]:
        s, c = r["sms"], r.get("chat")  # --chat 0: SMS only
        chat = (
            f"{c['complete_s']} | {c['first_to_last_post_s']} | {c['bound_s']} "
            f"| {c['max_per_1s_any_channel']} | {c['sandbox_429s']}"
            if c
            else "– | – | – | – | –"
        )
        out.append(
            f"| {r['headroom']} | {s['complete_s']} | {s['bound_s']} | {s['over_bound_pct']}% "
            f"| {s['max_per_1s']} | {s['sandbox_429s']} | {chat} |"
        )
    arrivals = [
        (r["headroom"], r["sms"]["arrivals"])
        for r in d["rows"]
        if r["sms"].get("arrivals", {}).get("stamped")
    ]
    if arrivals:
        out.append(
            "\nArrivals at the sandbox (ms; slot = the rate-limit slot the request was given, sent = when it"
            " went on the wire):\n"
        )
        out.append(
            "| headroom | first arrival after the answer, s | slot→sent p50 / p99 / max "
            "| sent→arrival p50 / p99 / max | slot→arrival p50 / p99 / max | unused slot time, s |"
        )
        out.append("| --- | --- | --- | --- | --- | --- |")
        for h, a in arrivals:
            cells = [
                " / ".join(str(a[k][q]) for q in ("p50", "p99", "max"))
                for k in ("slot_to_sent_ms", "sent_to_arrival_ms", "slot_to_arrival_ms")
            ]
            out.append(f"| {h} | {a['first_arrival_s']} | {' | '.join(cells)} | {a['unused_slot_time_s']} |")
    return "\n".join(out) + "\n"


def scaling(d: dict[str, Any]) -> str:
    out = ["### Scaling\n", header(d)]
    out.append(
        "| subscribers | workers | complete, s | first admin, ms | deliveries/s "
        "| peak MB per worker process |"
    )
    out.append("| --- | --- | --- | --- | --- | --- |")
    for r in d["rows"]:
        workers = {k: v for k, v in r["peak_rss_mb"].items() if k.startswith("worker")}
        out.append(
            f"| {r['subscribers']:,} | {r['workers']} | {mw(r['complete_s'])} | {mw(r['first_admin_ms'])} "
            f"| {r['deliveries_per_s']['median']} | {workers} |"
        )
    return "\n".join(out) + "\n"


def drills(d: dict[str, Any]) -> str:
    out = [f"### Fault drills ({d['size']} size)\n", header(d)]
    out.append(
        "| drill | recipients | lost | duplicates at the sandbox | extra sends counted | uncounted copies "
        "| counted, not received | rows sent 3+ times | in flight at the fault | failed | complete, s |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in d["results"]:
        if r["drill"] == "hostile":
            continue
        in_flight = r.get("in_flight", sum(k["in_flight"] for k in r.get("kills", [])) or "—")
        out.append(
            f"| {r['drill']} | {r['recipients']} | {r['lost']} | {r['duplicates']} "
            f"| {r.get('extra_sends_counted', '—')} | {r.get('uncounted_copies', '—')} "
            f"| {r.get('counted_not_received', '—')} | {r.get('rows_sent_3_times', '—')} | {in_flight} "
            f"| {r['failed']} | {r['complete_s']} |"
        )
    for r in d["results"]:
        if r["drill"] == "hostile":
            out.append(
                f"\nHostile requests: {r['requests']} sent in {r['elapsed_s']} s; statuses {r['statuses']}; "
                f"5xx {r['server_errors_5xx']}; 2xx {r['accepted_2xx']}; "
                f"rows changed {r['rows_changed'] or 'none'}; "
                f"healthz after {r['healthz_after']}, readyz after {r['readyz_after']}."
            )
        if r["drill"] == "sms_down":
            out.append(
                f"\nSMS down {r['outage_s']} s: all {r['admins']} admins reached by email after "
                f"{r['admins_reached_by_email_s']} s; customer SMS sent {r['customer_sms_sent']}, failed "
                f"{r['customer_sms_failed']}; completed {r['completed_after_return_s']} s after Twilio "
                "returned."
            )
    return "\n".join(out) + "\n"


def backtoback(d: dict[str, Any]) -> str:
    s = d["summary"]
    out = [
        f"### Back to back at the default limits: {d['subscribers']:,} subscribers, {d['workers']} "
        f"worker(s), incident B {d['gap_s']} s after A, {len(d['runs'])} runs\n"
    ]
    out.append(header(d))
    out.append("| measure (from B's API answer) | median / worst |\n| --- | --- |")
    rows = [
        ("B's first tier released (planned and queued), ms", "b_tier0_started_ms"),
        ("B's first admin accepted, ms", "b_first_admin_ms"),
        ("all B's admin emails accepted, ms", "b_all_admin_emails_ms"),
        ("all B's admins accepted (SMS behind A's admin SMS at 1/s), s", "b_all_admins_s"),
        ("A's first admin (from A's answer), ms", "a_first_admin_ms"),
    ]
    out += [f"| {label} | {mw(s[k])} |" for label, k in rows if k in s]
    return "\n".join(out) + "\n"


def plan_reads(plan: str) -> str:
    """What an EXPLAIN read on `deliveries`: the index (or scan) names and any rows it threw away."""
    import re

    reads = re.findall(
        r"(Seq Scan on deliveries|(?:Index|Index Only) Scan using \w+|Bitmap Index Scan on \w+)", plan
    )
    thrown = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    names = ", ".join(dict.fromkeys(r.split()[-1] if "using" in r or " on " in r else r for r in reads))
    return names + (f"; {sum(thrown):,} rows read and thrown away" if sum(thrown) > 100 else "")


def dashboard(d: dict[str, Any]) -> str:
    out = [
        f"### Dashboard reads: a {d['deliveries']:,}-delivery broadcast after {d.get('older', 1)} older "
        f"of {d['beside']:,}, {d['runs']} requests per case" + "\n"
    ]
    out.append(header(d))
    out.append("| request (viewer key, first page) | median / worst, ms | page | EXPLAIN: read with |")
    out.append("| --- | --- | --- | --- |")
    for name, r in d["results"].items():
        page = r["page"]
        if "bytes" in page:
            shown = f"HTML {page['bytes']:,} bytes, {page['receipt_rows']} receipt rows" + (
                ", shows 21211" if page["has_21211"] else ""
            )
        elif "rows" in page:
            codes = f", codes {', '.join(page['codes'])}" if page["codes"] else ""
            shown = f"{page['rows']} row{'' if page['rows'] == 1 else 's'}{codes}"
        else:
            shown = "counts: " + ", ".join(f"{k} {v:,}" for k, v in page["totals"].items())
        out.append(f"| `{name}` | {mw(r['ms'])} | {shown} | {plan_reads(d['plans'].get(name, '')) or '-'} |")
    return "\n".join(out) + "\n"


def statuspage(d: dict[str, Any], note: str = "") -> str:
    out = [
        f"#### The status page under load, mid-broadcast{note}: {d['subscribers']:,} subscribers, "
        f"{d['workers']} workers, wrk {d['connections']} connections for {d['duration_s']} s\n"
    ]
    out.append(header(d))
    out.append(
        "| load | requests/s | p50 / p99, ms | non-2xx | first admin, ms | all admins, ms "
        "| all tiers accepted, s |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in d["summary"].items():
        b = s["broadcast"]
        figures = "— | — | —"
        if "load" in s:
            load = {k: v["median"] for k, v in s["load"].items()}
            figures = (
                f"{load['requests_per_s']} | {load['p50_ms']} / {load['p99_ms']} "
                f"| {s['non_2xx_3xx'] + s['socket_errors']}"
            )
        label = "none" if name == "no load" else f"`GET {name}`, mid-broadcast"
        out.append(
            f"| {label} | {figures} | {mw(b['first_admin_ms'])} | {mw(b['all_admins_ms'])} "
            f"| {mw(b['all_tiers_accepted_s'])} |"
        )
        idle = s.get("idle")
        if idle:
            out.append(
                f"| `GET {name}`, idle service | {idle['requests_per_s']} "
                f"| {idle['p50_ms']} / {idle['p99_ms']} "
                f"| {idle['non_2xx_3xx'] + idle['socket_errors']} | — | — | — |"
            )
    return "\n".join(out) + "\n"


def main() -> None:
    parts = []
    for name, render in (
        ("fanout-postgresql-100000.json", fanout),
        ("fanout-postgresql-100000-mg.json", fanout),
        ("backtoback-postgresql-100000-w2.json", backtoback),
        ("backtoback-postgresql-100000-w1.json", backtoback),
        ("backtoback-postgresql-5000-w2.json", backtoback),
        ("backtoback-postgresql-5000-w1.json", backtoback),
        ("fanout-postgresql-5000-mg.json", fanout),
        ("compare-postgresql-10000.json", compare),
        ("limits-postgresql.json", limits),
        ("scaling-postgresql.json", scaling),
        ("drills.json", drills),
        ("drills-small.json", drills),
        ("dashboard-postgresql-100000.json", dashboard),
        ("dashboard-postgresql-100000-after-9.json", dashboard),
        ("dashboard-postgresql-100000-after-9-trial-index.json", dashboard),
        ("statuspage-postgresql-100000-before-freeze.json", lambda d: statuspage(d, ", before gc.freeze")),
        (
            "statuspage-postgresql-100000-redis-limit.json",
            lambda d: statuspage(d, ", with the limit's round trip"),
        ),
        ("statuspage-postgresql-100000.json", statuspage),
    ):
        data = load(name)
        if data is not None:
            parts.append(render(data))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
