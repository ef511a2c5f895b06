"""The table: rows = scenarios, columns = direct baseline, managers, peer÷eco ratios."""
from . import common
from .adapters.eco import Eco
from .adapters.pm2 import PM2
from .adapters.shep import Shep
from .adapters.supervisord import Supervisord

CLASSES = {c.name: c for c in (Eco, PM2, Supervisord, Shep)}

PEERS = ["pm2", "supervisord", "shep", "eco-base"]


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
    if s is None:
        return ""
    ms = s * 1e3
    return "%.*f CPU-ms" % (0 if ms >= 100 or ms == 0 else 1 if ms >= 10 else 2, ms)


def fmt_rps(x):
    return "" if x is None else "{:,.0f}".format(x)


def fmt_pct(x):
    return "" if x is None else "%.0f %%" % (x * 100)


def fmt_int(x):
    return "" if x is None else "%d" % x


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
    # optional 5th field: "up" = higher is better; "runs" = every run's value, no ratio;
    # "noratio" = median, no ratio
    ("cluster", "rps_1", "7a. HTTP req/s, 1 instance ↑", fmt_rps, "up"),
    ("cluster", "p99_1", "7a. HTTP p99 latency, 1 instance", fmt_time),
    ("cluster", "mgr_cpu_1", "7a. manager CPU during the {wrk} s wrk, 1 instance", fmt_cpu),
    ("cluster", "rps_2", "7a. HTTP req/s, 2 instances ↑", fmt_rps, "up"),
    ("cluster", "p99_2", "7a. HTTP p99 latency, 2 instances", fmt_time),
    ("cluster", "mgr_cpu_2", "7a. manager CPU during the {wrk} s wrk, 2 instances", fmt_cpu),
    ("cluster", "busiest_share_2", "7a. busiest instance's share of the app CPU, 2 instances",
     fmt_pct, "noratio"),
    ("reload", "rl_rps", "7b. reload: req/s over {rl} s, 3 reloads ↑", fmt_rps, "up"),
    ("reload", "rl_sock_err", "7b. reload: wrk socket errors, each run", fmt_int, "runs"),
    ("reload", "rl_non2xx", "7b. reload: wrk non-2xx answers, each run", fmt_int, "runs"),
    ("reload", "probe_fail", "7b. reload: failed probes (of ~{probes}), each run", fmt_int, "runs"),
    ("reload", "rl_failed", "7b. reload: reloads failed or not done, each run", fmt_int, "runs"),
    ("reload", "rl_cli", "7b. reload: command returned (median of the 3)", fmt_time),
    ("reload", "rl_done", "7b. reload: 2 new instances online (median of the 3)", fmt_time),
    ("reload", "rl_mgr_cpu", "7b. reload: manager CPU over the {rl} s", fmt_cpu),
    ("edit", "edit_converge", "7c. edit: file written → app restarted, 2 others kept", fmt_time),
    ("scale", "scale_converge_1000", "8. scale: 1,000 instances online (from `up`)", fmt_time, "noratio"),
    ("scale", "scale_rss_1000", "8. scale: daemon RSS, 1,000 instances", fmt_mb, "noratio"),
    ("scale", "scale_fds_1000", "8. scale: daemon descriptors, 1,000 instances", fmt_int, "noratio"),
    ("scale", "scale_ls_1000", "8. scale: `ls --json`, 1,000 instances", fmt_time, "noratio"),
    ("scale", "scale_idle_cpu_1000", "8. scale: daemon CPU, 10 s idle, 1,000 instances", fmt_cpu, "noratio"),
    ("scale", "scale_kill_1000", "8. scale: `eco kill`, 1,000 instances", fmt_time, "noratio"),
    ("scale", "scale_left_1000", "8. scale: processes left after kill, 1,000", fmt_int, "noratio"),
    ("scale", "scale_converge_10000", "8. scale: 10,000 instances online (from `up`)", fmt_time, "noratio"),
    ("scale", "scale_rss_10000", "8. scale: daemon RSS, 10,000 instances", fmt_mb, "noratio"),
    ("scale", "scale_fds_10000", "8. scale: daemon descriptors, 10,000 instances", fmt_int, "noratio"),
    ("scale", "scale_ls_10000", "8. scale: `ls --json`, 10,000 instances", fmt_time, "noratio"),
    ("scale", "scale_idle_cpu_10000", "8. scale: daemon CPU, 10 s idle, 10,000 instances", fmt_cpu, "noratio"),
    ("scale", "scale_kill_10000", "8. scale: `eco kill`, 10,000 instances", fmt_time, "noratio"),
    ("scale", "scale_left_10000", "8. scale: processes left after kill, 10,000", fmt_int, "noratio"),
]
for _n in (9000,):
    ROWS += [(s, m.replace("10000", str(_n)), lab.replace("10,000", "{:,}".format(_n)), f, k)
             for (s, m, lab, f, k) in [r for r in ROWS if r[1].endswith("_10000")]]
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
    probes = [r["probe_n"] for rs in raw.get("reload", {}).values() for r in rs]
    for row in ROWS:
        scenario, metric, label, f = row[:4]
        kind = row[4] if len(row) > 4 else ""
        if scenario not in raw:
            continue
        label = label.format(window=cfg["cpu_window"], lines=lines_label(cfg["log_lines"]),
                             wrk=cfg.get("wrk_duration"), rl=cfg.get("reload_duration"),
                             probes="{:,.0f}".format(common.median(probes) or 0))
        meds = {}
        ns = set()
        cells = []
        for m in cols:
            v = values(raw, scenario, m, metric)
            meds[m] = common.median(v)
            if v and m != "direct":
                ns.add(len(v))
            if kind == "runs":
                cells.append(", ".join(f(x) for x in v))
            else:
                cells.append(f(meds[m]) if meds[m] is not None else "")
        if all(meds[m] is None for m in cols):
            continue
        n = "/".join(str(x) for x in sorted(ns))
        if kind in ("runs", "noratio"):
            cells += [""] * len(peers)
        else:
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
    ups = any("↑" in r[0] for r in rows)
    notes = ["", "peer÷eco = the peer's median divided by eco's. Every row is lower-is-better%s, "
                 "so 3.0x means eco is 3 times better (lower), 0.50x means eco is 2 times worse."
             % (" except those marked ↑ (requests per second: higher is better, so there a "
                "ratio below 1 means eco is ahead)" if ups else ""),
             "CPU is measured by %s; 'inf (eco 0)': eco used none at all." % common.CPU_SOURCE]
    notes += web_notes(raw, managers, cfg)
    if any("¹" in r[0] for r in rows):
        capped = sorted({m for m in managers for r in raw["respawn"].get(m, [])
                         if r.get("respawn_capped")})
        ngaps = {m: sum(r.get("respawn_n", 0) for r in raw["respawn"].get(m, [])) for m in capped}
        notes.append("¹ %s: fewer than %d starts within the %d s cap per run; median over the "
                     "gaps seen (%s)." % (", ".join(capped), cfg["respawn_starts"], cfg["respawn_cap"],
                                          ", ".join("%s %d gaps" % kv for kv in ngaps.items())))
    return "\n".join(out + notes)


def web_notes(raw, managers, cfg):
    out = []
    if "cluster" in raw or "reload" in raw:
        out.append("7a/7b: `node apps/http_server.js PORT`; eco and shep bind the port and hand it to "
                   "every instance as fd 3 (LISTEN_FDS, `listen`), PM2's cluster module shares the "
                   "port the workers bind; 'direct' = the server alone, binding the port itself. "
                   "Manager CPU = the CPU time of the manager's own processes over the measured wrk run "
                   "(PM2's daemon is the cluster master that accepts and hands out connections).")
        out += ["7a/7b: %s not measured: %s." % (m, CLASSES[m].cluster_missing)
                for m in managers if m in CLASSES and CLASSES[m].cluster_missing]
    if "cluster" in raw:
        errs = {m: sum(r.get(k, 0) for r in rs for k in ("errors_1", "errors_2"))
                for m, rs in raw["cluster"].items()}
        bad = ", ".join("%s %d" % kv for kv in errs.items() if kv[1])
        out.append("7a: wrk socket errors and non-2xx answers, all runs: %s." % (bad or "none"))
    if "reload" in raw:
        for m in managers:
            runs = raw["reload"].get(m, [])
            kinds = {}
            for r in runs:
                for k in ("connect", "read", "write", "timeout"):
                    kinds[k] = kinds.get(k, 0) + r.get("rl_sock_" + k, 0)
                for k, v in (r.get("probe_fail_kinds") or {}).items():
                    kinds["probe " + k] = kinds.get("probe " + k, 0) + v
            bad = ", ".join("%s %d" % kv for kv in kinds.items() if kv[1])
            if bad:
                out.append("7b: %s, errors by kind over %d runs: %s." % (m, len(runs), bad))
        if "shep" in raw["reload"]:
            out.append("7b: `shep reload` returns once the shepherd accepts the reload; the swap "
                       "goes on after it ('2 new instances online' is comparable, 'command returned' is not; "
                       "it is polled every 50 ms).")
    if "edit" in raw:
        how = ["%s: %s" % (m, CLASSES[m].edit_how) for m in managers
               if m in CLASSES and CLASSES[m].edit_how]
        rest = [m for m in managers if m in CLASSES and not CLASSES[m].edit_how]
        out.append("7c: 3 `sleep` apps, one app's env changed by rewriting the file in place; until the "
                   "listing shows it online with a new pid (checked again after a pause: the two others "
                   "kept their pids, the new process has the new env). Applied by " + "; ".join(how) + "."
                   + (" `pm2 start FILE` and `pm2 reload FILE --update-env` without --only restart "
                      "all three apps." if "pm2" in raw["edit"] else "")
                   + (" Not measured: %s." % ", ".join(rest) if rest else ""))
    return out


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
