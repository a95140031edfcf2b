#!/usr/bin/env python3
"""Turns the raw results of scripts/bench.sh into a Markdown table and an SVG bar chart.

Usage: report.py <results dir>
Reads  runs.jsonl (one wrk run a line), meta.json, checks.json, and when present rss.json and
callgrind.json. Writes results.md and results.svg into the same directory and prints the
Markdown to stdout.
"""
import json
import os
import statistics
import sys

CASES = [
    ("A", "plain nginx, static file"),
    ("B", "module, valid session (demo)"),
    ("B2", "module, valid session (150 groups)"),
    ("C", "auth_request → keepalive upstream 202"),
    ("D", "module, invalid cookie → 401"),
    ("O", "seed setup: auth_request → real oauth2-proxy"),
    ("R", "module, valid session, cluster_store set (Redis)"),
]
# (numerator, denominator, minimum). B/O is the module against the setup it replaces.
RATIOS = [("B", "A", 0.97), ("B2", "A", 0.97), ("B", "O", 5.0), ("B", "C", 2.0), ("B2", "C", 2.0),
          ("D", "A", 0.90), ("R", "B", 0.97)]
RSS_TARGET_KIB = 1024


def load(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def rate(run):
    return run["requests"] / (run["duration_us"] / 1e6)


def fmt_rate(x):
    return f"{x:,.0f}"


def fmt_us(x):
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def main():
    d = sys.argv[1]
    runs = [json.loads(line) for line in open(os.path.join(d, "runs.jsonl")) if line.strip()]
    meta = load(os.path.join(d, "meta.json"), {})
    checks = load(os.path.join(d, "checks.json"), [])
    rss = load(os.path.join(d, "rss.json"))
    cg = load(os.path.join(d, "callgrind.json"))

    by_case = {c: [r for r in runs if r["case"] == c] for c, _ in CASES}
    stats = {}
    for c, _ in CASES:
        rs = by_case[c]
        if not rs:
            continue
        rates = [rate(r) for r in rs]
        stats[c] = {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
            "p50": statistics.median(r["p50_us"] for r in rs),
            "p99": statistics.median(r["p99_us"] for r in rs),
            "runs": len(rs),
            "errors": sum(r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"] for r in rs),
            "non2xx": sum(r["err_status"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
        }

    out = []
    w = out.append
    w(f"# ngx-oidc benchmark ({meta.get('date', '?')})")
    w("")
    w(f"- machine: {meta.get('machine', '?')}")
    w(f"- nginx: {meta.get('nginx', '?')}, `worker_processes 1` (one core serves, wrk runs on the "
      f"other), `access_log off`, one nginx serving every case on its own port")
    w(f"- wrk: {meta.get('wrk', '?')}, 1 thread, {meta.get('connections', '?')} connections, "
      f"{meta.get('duration', '?')} per run, {meta.get('rounds', '?')} round(s) of "
      f"{meta.get('cases', 'A B B2 C D')} in turn"
      + (" (BENCH_PIN: nginx worker on CPU 1, wrk on CPU 0)" if meta.get("pinned") else ""))
    w(f"- static file: {meta.get('file_bytes', '?')} bytes; every request sends "
      f"`Accept: application/json` and a Cookie header (the demo session for A, B and C, the "
      f"150-group session for B2, {meta.get('garbage_bytes', '?')} bytes of garbage `_oidc=v1.…` for D)")
    w(f"- session cookies: demo {meta.get('cookie_demo_bytes', '?')} bytes, "
      f"150 groups {meta.get('cookie_big_bytes', '?')} bytes, oauth2-proxy's (case O, demo) "
      f"{meta.get('cookie_o2p_bytes', '?')} bytes (Cookie header value)")
    w(f"- provider (logins only; no case calls it per request): {meta.get('provider', '?')}"
      + (f", started in {meta['keycloak_start_seconds']} s" if meta.get("keycloak_start_seconds") else ""))
    w(f"- case O: {meta.get('oauth2_proxy', 'oauth2-proxy')}, the seed's flags, request logging "
      f"off, Go's default of one thread per core" + (" (pinned to the nginx worker's CPU)" if meta.get("pinned") else ""))
    w(f"- load average: before {meta.get('load_before', '?')}, after {meta.get('load_after', '?')}")
    w("")
    w("| case | what | req/s (median) | spread min–max | stdev | p50 | p99 | non-2xx | socket errors |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for c, what in CASES:
        s = stats.get(c)
        if not s:
            continue
        w(f"| {c} | {what} | {fmt_rate(s['median'])} | {fmt_rate(s['min'])}–{fmt_rate(s['max'])} | "
          f"{s['stdev'] / s['median'] * 100:.1f}% | {fmt_us(s['p50'])} | {fmt_us(s['p99'])} | "
          f"{s['non2xx']} | {s['errors']} |")
    w("")
    w("| ratio | median | per-round min–max | target | |")
    w("|---|---:|---:|---:|---|")
    verdicts = {}
    rounds = sorted({r["round"] for r in runs})
    for a, b, target in RATIOS:
        if a not in stats or b not in stats:
            continue
        ratio = stats[a]["median"] / stats[b]["median"]
        per_round = []
        for rd in rounds:
            ra = [rate(r) for r in by_case[a] if r["round"] == rd]
            rb = [rate(r) for r in by_case[b] if r["round"] == rd]
            if ra and rb:
                per_round.append(ra[0] / rb[0])
        ok = ratio >= target
        verdicts[f"{a}/{b}"] = ok
        w(f"| {a}/{b} | {ratio:.3f} | {min(per_round):.3f}–{max(per_round):.3f} | ≥ {target:.2f} | "
          f"{'PASS' if ok else 'MISS'} |")
    if rss:
        growth = rss["after"]["VmHWM"] - rss["before"]["VmHWM"]
        ok = growth < RSS_TARGET_KIB
        verdicts["rss"] = ok
        w("")
        w(f"Worker memory over {rss['requests']:,} requests of case B (pid {rss['pid']}; "
          f"{rss['runs']} wrk run(s), {rss.get('non2xx', 0)} non-2xx):")
        w("")
        w("| | VmHWM (peak RSS) | VmRSS |")
        w("|---|---:|---:|")
        w(f"| before | {rss['before']['VmHWM']:,} KiB | {rss['before']['VmRSS']:,} KiB |")
        w(f"| after | {rss['after']['VmHWM']:,} KiB | {rss['after']['VmRSS']:,} KiB |")
        w(f"| growth | {growth:+,} KiB | {rss['after']['VmRSS'] - rss['before']['VmRSS']:+,} KiB |")
        w("")
        w(f"Peak RSS growth {growth:+,} KiB, target < {RSS_TARGET_KIB} KiB: {'PASS' if ok else 'MISS'}")
    if cg:
        w("")
        w(f"Instructions per request (valgrind callgrind, nginx `master_process off`, "
          f"{cg['requests']} keep-alive requests per case, minus a run with 0 requests "
          f"({cg['base_ir']:,} Ir)):")
        w("")
        w("| case | Ir / request | vs A | module access handler Ir / request (inclusive) |")
        w("|---|---:|---:|---:|")
        a_ir = cg["cases"].get("A", {}).get("ir_per_request")
        for c, _ in CASES:
            x = cg["cases"].get(c)
            if not x:
                continue
            vs = f"{x['ir_per_request'] / a_ir:.2f}×" if a_ir else ""
            h = x.get("handler_ir_per_request")
            w(f"| {c} | {x['ir_per_request']:,.0f} | {vs} | {'' if h is None else f'{h:,.0f}'} |")
        for c in ("B", "B2", "D"):
            top = cg["cases"].get(c, {}).get("top_module")
            if not top:
                continue
            w("")
            w(f"Case {c}: the module's top functions by inclusive cost (callgrind_annotate --inclusive=yes):")
            w("")
            w("| Ir / request | function |")
            w("|---:|---|")
            for t in top:
                fn = t["function"].split(" [")[0].replace("|", "\\|")
                w(f"| {t['ir_per_request']:,.0f} | `{fn}` |")
    if checks:
        w("")
        w("Checks (curl, before and after the runs):")
        w("")
        w("| when | case | status | body bytes | expected | |")
        w("|---|---|---:|---:|---|---|")
        for ch in checks:
            w(f"| {ch['when']} | {ch['case']} | {ch['status']} | {ch['bytes']} | {ch['expected']} | "
              f"{'ok' if ch['ok'] else 'WRONG'} |")
    md = "\n".join(out) + "\n"
    with open(os.path.join(d, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(d, "results.svg"), "w") as f:
        f.write(svg(stats, meta, verdicts))
    sys.stdout.write(md)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(stats, meta, verdicts):
    cases = [(c, what) for c, what in CASES if c in stats]
    W, H = 760, 420
    left, right, top, bottom = 90, 20, 60, 110
    pw, ph = W - left - right, H - top - bottom
    vmax = max(s["max"] for s in stats.values()) * 1.1 or 1
    # A round axis step.
    step = 10 ** len(str(int(vmax / 5))) / 10
    for m in (1, 2, 2.5, 5, 10):
        if vmax / (step * m) <= 6:
            step *= m
            break
    colors = {"A": "#7f8c8d", "B": "#2e86de", "B2": "#54a0ff", "C": "#e67e22", "D": "#10ac84",
              "O": "#c0392b", "R": "#8e44ad"}
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
         f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="16" font-weight="bold">'
         f'ngx-oidc: requests/s, one nginx worker (median, min–max whiskers)</text>',
         f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">'
         f'{esc(meta.get("date", ""))} · {esc(meta.get("machine", ""))} · wrk '
         f'{meta.get("connections", "?")} conn × {meta.get("duration", "?")} × {meta.get("rounds", "?")}</text>']
    y = 0.0
    while y <= vmax:
        py = top + ph - y / vmax * ph
        o.append(f'<line x1="{left}" y1="{py:.1f}" x2="{W - right}" y2="{py:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
        y += step
    o.append(f'<line x1="{left}" y1="{top + ph}" x2="{W - right}" y2="{top + ph}" stroke="#333"/>')
    slot = pw / max(len(cases), 1)
    bw = slot * 0.55
    for i, (c, what) in enumerate(cases):
        s = stats[c]
        x = left + slot * i + (slot - bw) / 2
        h = s["median"] / vmax * ph
        cx = x + bw / 2
        o.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                 f'fill="{colors.get(c, "#888")}"/>')
        y1, y2 = top + ph - s["max"] / vmax * ph, top + ph - s["min"] / vmax * ph
        o.append(f'<line x1="{cx:.1f}" y1="{y1:.1f}" x2="{cx:.1f}" y2="{y2:.1f}" stroke="#222"/>')
        for yy in (y1, y2):
            o.append(f'<line x1="{cx - 6:.1f}" y1="{yy:.1f}" x2="{cx + 6:.1f}" y2="{yy:.1f}" stroke="#222"/>')
        o.append(f'<text x="{cx:.1f}" y="{y1 - 6:.1f}" text-anchor="middle">{s["median"]:,.0f}</text>')
        o.append(f'<text x="{cx:.1f}" y="{top + ph + 18}" text-anchor="middle" font-weight="bold">{c}</text>')
        words, lines, cur = what.split(), [], ""
        for wd in words:
            if len(cur) + len(wd) > 18 and cur:
                lines.append(cur)
                cur = wd
            else:
                cur = (cur + " " + wd).strip()
        lines.append(cur)
        for j, ln in enumerate(lines[:3]):
            o.append(f'<text x="{cx:.1f}" y="{top + ph + 34 + 14 * j}" text-anchor="middle" '
                     f'fill="#444" font-size="11">{esc(ln)}</text>')
    o.append(f'<text transform="translate(18,{top + ph / 2}) rotate(-90)" text-anchor="middle">requests/s</text>')
    summary = []
    for a, b, _ in RATIOS:
        if a in stats and b in stats:
            k = f"{a}/{b}"
            summary.append(f"{k} {stats[a]['median'] / stats[b]['median']:.2f} "
                           f"{'PASS' if verdicts.get(k) else 'MISS'}")
    o.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle" fill="#333">{esc("  ·  ".join(summary))}</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


if __name__ == "__main__":
    main()
