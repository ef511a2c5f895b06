"""The table: rows = scenarios, columns = direct baseline, managers, peer÷eco ratios."""
from . import common

PEERS = ["pm2", "supervisord", "shep"]


def short(v):
    if isinstance(v, float):
        return "%.4g" % v
    return str(v)


def fmt_time(s):
    if s is None:
        return ""
    if s < 1e-3:
        return "%.0f µs" % (s * 1e6)
    if s < 1:
        return "%.3g ms" % (s * 1e3) if s < 0.1 else "%.0f ms" % (s * 1e3)
    return "%.2f s" % s


def fmt_mb(b):
    return "" if b is None else "%.1f MB" % (b / 1e6)


def fmt_cpu(s):
    return "" if s is None else "%.0f CPU-ms" % (s * 1e3)


ROWS = [
    # scenario, metric, label, formatter, has a 'direct' baseline
    ("memory", "rss_0", "1. supervisor RSS, idle, 0 apps", fmt_mb),
    ("memory", "rss_100", "1. supervisor RSS, 100 apps", fmt_mb),
    ("converge", "converge_10", "2. converge 10 apps (warm daemon)", fmt_time),
    ("converge", "converge_100", "2. converge 100 apps (warm daemon)", fmt_time),
    ("respawn", "respawn_gap", "3. respawn gap, crash loop, delay 0", fmt_time),
    ("cli", "cli_list", "4. list command, 10 apps", fmt_time),
    ("cpu", "idle_cpu", "5. idle CPU, 10 apps, {window} s", fmt_cpu),
    ("logs", "log_complete", "6. log: {lines} lines all in file", fmt_time),
    ("logs", "log_writer", "6. log: writer finished", fmt_time),
    ("logs", "log_peak_rss", "6. log: supervisor peak RSS", fmt_mb),
]
ANOMALIES = ("lost", "corrupt", "duplicated", "out_of_order")


def values(raw, scenario, manager, metric):
    return [r[metric] for r in raw.get(scenario, {}).get(manager, []) if r.get(metric) is not None]


def ratio(peer, eco):
    if peer is None or eco is None:
        return ""
    if eco == 0:
        return "inf (eco 0)" if peer > 0 else "="
    r = peer / eco
    return "%.1fx" % r if r >= 1.95 else "%.2fx" % r


def lines_label(n):
    return "1M" if n == 1_000_000 else "{:,}".format(n)


def table(raw, managers, cfg):
    cols = ["direct"] + managers
    peers = [p for p in PEERS if p in managers] if "eco" in managers else []
    head = ["scenario (median; n = runs)"] + cols + ["%s÷eco" % p for p in peers]
    rows = []
    for scenario, metric, label, f in ROWS:
        if scenario not in raw:
            continue
        label = label.format(window=cfg["cpu_window"], lines=lines_label(cfg["log_lines"]))
        meds = {}
        ns = set()
        for m in cols:
            v = values(raw, scenario, m, metric)
            meds[m] = common.median(v)
            if v and m != "direct":
                ns.add(len(v))
        if all(meds[m] is None for m in cols):
            continue
        n = "/".join(str(x) for x in sorted(ns))
        cells = [f(meds[m]) if meds[m] is not None else "" for m in cols]
        cells += [ratio(meds.get(p), meds.get("eco")) for p in peers]
        rows.append(["%s (n=%s)" % (label, n)] + cells)
        if metric == "respawn_gap":
            capped = [m for m in managers if any(r.get("respawn_capped") for r in
                                                 raw["respawn"].get(m, []))]
            if capped:
                rows[-1][0] += " ¹"
    if "logs" in raw:
        cells = []
        for m in cols:
            runs = raw["logs"].get(m, [])
            cells.append("/".join(str(sum(r[k] for r in runs)) for k in ANOMALIES) if runs else "")
        rows.append(["6. log: lost/corrupt/dup/out-of-order (sum)"] + cells + [""] * len(peers))
    # drop the 'direct' column when no row has a baseline
    if not any(r[1] for r in rows):
        head.pop(1)
        for r in rows:
            r.pop(1)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    notes = ["", "peer÷eco = the peer's median divided by eco's. Every row is lower-is-better, "
                 "so 3.0x means eco is 3 times better (lower), 0.50x means eco is 2 times worse.",
             "Idle CPU is counted in 10 ms ticks (CLK_TCK=100); 'inf (eco 0)': eco used no tick at all."]
    if any("¹" in r[0] for r in rows):
        capped = sorted({m for m in managers for r in raw["respawn"].get(m, [])
                         if r.get("respawn_capped")})
        ngaps = {m: sum(r.get("respawn_n", 0) for r in raw["respawn"].get(m, [])) for m in capped}
        notes.append("¹ %s: fewer than %d starts within the %d s cap per run; median over the "
                     "gaps seen (%s)." % (", ".join(capped), cfg["respawn_starts"], cfg["respawn_cap"],
                                          ", ".join("%s %d gaps" % kv for kv in ngaps.items())))
    return "\n".join(out + notes)


def header(info):
    m = info["machine"]
    lines = ["", "eco side-by-side benchmark — %s%s" % (info["date"], " (--quick)" if info["quick"] else ""),
             "machine: %d cores (%s), %.0f GiB, %s, kernel %s" % (
                 m["cpus"], m["cpu_model"], m["mem_gib"], m["os"], m["kernel"]),
             "versions: " + "; ".join("%s" % v for v in info["versions"].values()),
             "load average (1 min) at start %.2f, at end %.2f; took %.0f s" % (
                 info["loadavg_start"][0], info.get("loadavg_end", (0,))[0], info.get("elapsed_s", 0))]
    for name, why in info.get("skipped", {}).items():
        lines.append("skipped %s: %s" % (name, why))
    lines.append("")
    return "\n".join(lines)
