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
    out += flood(d)
    return "\n".join(out) + "\n"


def cost(c: dict[str, Any]) -> str:
    """A run's CPU-seconds: the service's processes per 1,000 deliveries and callbacks, the sandbox's."""
    per_callback = (
        f"{c['service_per_1000_callbacks']} per 1,000 callbacks (API alone {c['api_per_1000_callbacks']})"
        if c["callbacks"]
        else "no callbacks reached the service"
    )
    return (
        f"service CPU {c['service_cpu_s']} s (API {c['api_cpu_s']}, workers {c['workers_cpu_s']}, "
        f"beat {c['beat_cpu_s']}) for {c['deliveries']:,} deliveries and {c['callbacks']:,} callbacks: "
        f"{c['service_per_1000_deliveries']} s per 1,000 deliveries (workers alone "
        f"{c['workers_per_1000_deliveries']}), {per_callback}; sandbox {c['sandbox_cpu_s']} s "
        f"({c['sandbox_per_1000_deliveries']} per 1,000 deliveries)"
    )


def flood(d: dict[str, Any]) -> list[str]:
    """The callback flood of each run (issue 17): delivered, callbacks, probes, CPU."""
    out = []
    for i, r in enumerate(d["runs"], 1):
        if "cpu_cost" not in r:
            continue
        out.append(
            f"\nRun {i}, callbacks to the {'API' if r.get('callbacks_to') == 'api' else 'sandbox sink'}:"
        )
        if r.get("delivered") is not None:
            dl = r["delivered"]
            out.append(
                f"- all delivered {r['all_delivered_s']} s after the answer ({dl['delivered']:,} delivered, "
                f"{dl['waiting']} still waiting for a report)"
            )
        a = r.get("callbacks", {}).get("all")
        if a and r.get("callbacks_to") == "api":
            out.append(
                f"- callbacks ingested: {a['posts']:,} POSTs ({a['reports']:,} status reports in those "
                f"answered 2xx) in "
                f"{a['span_s']} s: {a['posts_per_s']} POSTs/s, {a['reports_per_s']} reports/s; "
                f"non-2xx {a['non_2xx']}, no answer {a['errors']}"
            )
            for provider in ("twilio", "sendgrid"):
                c = r["callbacks"].get(provider)
                if c:
                    out.append(
                        f"- {provider} webhook as the sandbox timed it: p50 {c['latency_ms']['p50']} ms, "
                        f"p99 {c['latency_ms']['p99']} ms, max {c['latency_ms']['max']} ms over "
                        f"{c['latency_ms']['n']:,} answers; queued in the sandbox before sent (lag) p50 "
                        f"{c['lag_ms']['p50']} ms, p99 {c['lag_ms']['p99']} ms; non-2xx {c['non_2xx']}, "
                        f"no answer {c['errors']}"
                    )
        probes = r.get("probes")
        if probes:
            q, pk = probes["quiet"], probes["peak"]
            out.append(
                f"- POST /v1/incidents ({q['n']} small incidents, admins only): quiet "
                f"p50 {q['api_p50_ms']} / "
                f"p99 {q['api_p99_ms']} ms, first admin {q['first_admin_ms']} ms"
                + (
                    f"; at the peak ({pk.get('callbacks_per_s_while_opening')} callbacks/s) "
                    f"p50 {pk['api_p50_ms']} / "
                    f"p99 {pk['api_p99_ms']} ms, the second incident's first admin {pk['first_admin_ms']} ms"
                    if pk
                    else ""
                )
            )
            for name, request in (("read", "GET /v1/broadcasts/{id}"), ("update", "POST .../updates")):
                if f"{name}_p50_ms" in q and pk and f"{name}_p50_ms" in pk:
                    out.append(
                        f"- {request}: quiet p50 {q[f'{name}_p50_ms']} / p99 {q[f'{name}_p99_ms']} ms; "
                        f"at the peak p50 {pk[f'{name}_p50_ms']} / p99 {pk[f'{name}_p99_ms']} ms"
                    )
        out.append(f"- CPU: {cost(r['cpu_cost'])}")
    return out


FLOOD_RUNS = (  # "before the inbox": 184b21c, reports applied in the webhook's request
    ("callbacks to the sink", "fanout-postgresql-5000-sink.json"),
    ("to the API, with the inbox", "fanout-postgresql-5000-api.json"),
    ("with the inbox, py-spy (GIL)", "fanout-postgresql-5000-api-pyspy.json"),
    ("sink, before the inbox", "fanout-postgresql-5000-sink-before-inbox.json"),
    ("to the API before the inbox", "fanout-postgresql-5000-api-before-inbox.json"),
    ("before the inbox, py-spy (GIL)", "fanout-postgresql-5000-api-pyspy-gil-before-inbox.json"),
    ("before the inbox, py-spy (wall)", "fanout-postgresql-5000-api-pyspy-wall-before-inbox.json"),
)


def flood_compare() -> str:
    """One run per column: the flood's figures side by side (issue 17)."""
    runs = [(label, d["runs"][0], d) for label, name in FLOOD_RUNS if (d := load(name)) is not None]
    if not runs:
        return ""

    def cb(r: dict[str, Any], provider: str, key: str) -> str:
        c = r["callbacks"].get(provider)
        return f"{c[key]['p50']:,.0f} / {c[key]['p99']:,.0f}" if c else "—"

    def probe(r: dict[str, Any], when: str, key: str) -> str:
        p = (r.get("probes") or {}).get(when)
        if not p:
            return "—"
        return (
            f"{p['api_p50_ms']:,.0f} / {p['api_p99_ms']:,.0f}"
            if key == "api"
            else f"{p['first_admin_ms']:,.0f}"
        )

    rows: list[tuple[str, Any]] = [
        ("all tiers accepted, s", lambda r: r["all_tiers_accepted_s"]),
        ("all emails and SMS delivered, s", lambda r: r.get("all_delivered_s") or "— (never reported)"),
        ("still waiting for a report", lambda r: r["delivered"]["waiting"] if r.get("delivered") else "—"),
        ("callback POSTs (SendGrid: batches)", lambda r: f"{r['callbacks']['all']['posts']:,}"),
        ("callback POSTs/s, first to last answer", lambda r: r["callbacks"]["all"]["posts_per_s"]),
        ("Twilio webhook p50 / p99, ms (sandbox's clock)", lambda r: cb(r, "twilio", "latency_ms")),
        ("SendGrid webhook p50 / p99, ms (answered only)", lambda r: cb(r, "sendgrid", "latency_ms")),
        ("callbacks' wait in the sandbox's queue p50 / p99, ms", lambda r: cb(r, "twilio", "lag_ms")),
        (
            "non-2xx answers / POSTs with no answer (10 s)",
            lambda r: f"{r['callbacks']['all']['non_2xx']} / {r['callbacks']['all']['errors']}",
        ),
        ("POST /v1/incidents p50 / p99, quiet, ms", lambda r: probe(r, "quiet", "api")),
        ("POST /v1/incidents p50 / p99, at the peak, ms", lambda r: probe(r, "peak", "api")),
        (
            "probe's first admin, quiet / at the peak, ms",
            lambda r: f"{probe(r, 'quiet', 'a')} / {probe(r, 'peak', 'a')}",
        ),
        ("service CPU-s per 1,000 deliveries", lambda r: r["cpu_cost"]["service_per_1000_deliveries"]),
        ("  of which workers", lambda r: r["cpu_cost"]["workers_per_1000_deliveries"]),
        ("service CPU-s per 1,000 callbacks", lambda r: r["cpu_cost"]["service_per_1000_callbacks"] or "—"),
        ("  of which the API", lambda r: r["cpu_cost"]["api_per_1000_callbacks"] or "—"),
        ("sandbox CPU-s per 1,000 deliveries", lambda r: r["cpu_cost"]["sandbox_per_1000_deliveries"]),
        ("other processes' CPU-s in the run (shared machine)", lambda r: r["other_processes_cpu_s"]),
    ]
    out = [
        "| 5,000 subscribers, 6,601 deliveries + 5 probes, 1 run each | "
        + " | ".join(label for label, _, _ in runs)
        + " |",
        "| --- |" + " --- |" * len(runs),
    ]
    for label, get in rows:
        out.append(f"| {label} | " + " | ".join(str(get(r)) for _, r, _ in runs) + " |")
    out.append("")
    out += [
        f"- {label}: `{d['command']}`, {d['date']}, load average at the end {d['machine']['load_average']}"
        for label, _, d in runs
    ]
    return "\n".join(out) + "\n"


def scaleout(d: dict[str, Any]) -> str:
    once, lim, split = d["exactly_once"], d["limits"], d["split"]
    out = [
        f"### Scale-out: two worker groups share one broadcast of {d['subscribers']:,} subscribers "
        f"({d['groups']['a']['concurrency']} pool child each)\n",
        header(d),
    ]
    out.append("| measure | value |\n| --- | --- |")
    rows = [
        ("all accepted / all delivered, s", f"{d['all_accepted_s']} / {d['all_delivered_s']}"),
        (
            "sent exactly once",
            f"expected {once['expected']:,}, received {once['received']:,}, duplicates {once['duplicates']}, "
            f"missing {once['missing']}, unexpected {once['unexpected']}, extra sends counted "
            f"{once['extra_sends_counted']}",
        ),
        (
            "split between the groups (rows recorded)",
            ", ".join(
                f"{g}: {n:,} ({split['share'][g]:.0%})" for g, n in split["rows_recorded_by_group"].items()
            ),
        ),
        (
            "highest calls in any 1 s (limit)",
            ", ".join(
                f"{k} {v}" + (f" ({lim['configured_per_s'][k]})" if k in lim["configured_per_s"] else "")
                for k, v in lim["max_seen_per_1s"].items()
            ),
        ),
        (
            "Redis commands per delivery",
            f"{d['redis']['calls_per_delivery']} ({d['redis']['calls']:,} in all)",
        ),
        (
            "PostgreSQL rows written per delivery",
            f"{d['postgresql']['rows_written_per_delivery']} (inserted {d['postgresql']['inserted']:,}, "
            f"updated {d['postgresql']['updated']:,}, deleted {d['postgresql']['deleted']:,})",
        ),
        (
            "deliveries/s at which each would be full",
            ", ".join(f"{k} {v}" for k, v in d["ceilings_deliveries_per_s"].items()),
        ),
    ]
    out += [f"| {a} | {b} |" for a, b in rows]
    out.append(f"\nTop Redis commands: {d['redis']['top_commands']}.")
    out.append(f"Rows written by table: {d['postgresql']['by_table']}.")
    out.append(f"CPU: {cost(d['cpu_cost'])}.")
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


def lane(d: dict[str, Any]) -> str:
    """Whether the run had the urgent lane beside its pool (results before it record nothing)."""
    if "lane" not in d:
        return ""
    return " and the urgent lane" if d["lane"] else ", no urgent lane"


def backtoback(d: dict[str, Any]) -> str:
    s = d["summary"]
    out = [
        f"### Back to back at the default limits: {d['subscribers']:,} subscribers, {d['workers']} "
        f"worker(s){lane(d)}, incident B {d['gap_s']} s after A, {len(d['runs'])} runs\n"
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
    costs = [r["cpu_cost"] for r in d["runs"] if "cpu_cost" in r]
    if costs:  # from A's POST to B's admins measured (issue 17)
        out.append(f"\nCPU of the first run, from A's POST to B's admins measured: {cost(costs[0])}.")
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
        ("fanout-postgresql-5000-api.json", fanout),
        ("fanout-postgresql-5000-api-pyspy.json", fanout),
        ("fanout-postgresql-5000-sink.json", fanout),
        ("fanout-postgresql-5000-sink-before-inbox.json", fanout),
        ("fanout-postgresql-5000-api-before-inbox.json", fanout),
        ("fanout-postgresql-5000-api-pyspy-gil-before-inbox.json", fanout),
        ("fanout-postgresql-5000-api-pyspy-wall-before-inbox.json", fanout),
        ("scaleout-postgresql-5000.json", scaleout),
        ("scaleout-postgresql-5000-before-inbox.json", scaleout),
        ("scaleout-postgresql-5000-twilio500-before-inbox.json", scaleout),
        ("fanout-postgresql-100000-mg.json", fanout),
        ("fanout-postgresql-100000-mg-sink.json", fanout),
        ("backtoback-postgresql-100000-w2-callbacks.json", backtoback),
        ("backtoback-postgresql-100000-w1-callbacks.json", backtoback),
        ("backtoback-postgresql-100000-w1-callbacks-no-lane.json", backtoback),
        ("backtoback-postgresql-100000-w2.json", backtoback),
        ("backtoback-postgresql-100000-w1.json", backtoback),
        ("backtoback-postgresql-5000-w2.json", backtoback),
        ("backtoback-postgresql-5000-w1.json", backtoback),
        ("backtoback-postgresql-5000-w2-callbacks.json", backtoback),
        ("backtoback-postgresql-5000-w2-callbacks-before-inbox.json", backtoback),
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
    parts.append(flood_compare())
    print("\n".join(parts))


if __name__ == "__main__":
    main()
