"""bench/run: build eco, install peers, run the scenarios, print one table."""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

from . import common, install, report, scale, scenarios, web
from .adapters.eco import Eco, EcoBase
from .adapters.pm2 import PM2
from .adapters.shep import Shep
from .adapters.supervisord import Supervisord

MANAGERS = {"eco": Eco, "pm2": PM2, "supervisord": Supervisord, "shep": Shep,
            "eco-base": EcoBase}
SCENARIOS = [
    "memory", "converge", "respawn", "cli", "cpu", "logs", "cluster", "reload", "edit", "scale",
]

FULL = dict(settle=5, memory_apps=100, memory_runs=3, converge_runs={10: 5, 100: 3},
            respawn_starts=60, respawn_cap=15, respawn_runs=3,
            cpu_window=60, cpu_runs=3, cli_warmup=3, cli_runs=20,
            log_lines=1_000_000, log_runs=3, log_cap=180,
            cluster_runs=3, wrk_warmup=2, wrk_duration=6,
            reload_runs=3, reload_duration=15, reload_at=(3, 7, 11),
            edit_runs=5, edit_settle=1.0)
QUICK = dict(settle=2, memory_apps=100, memory_runs=1, converge_runs={10: 2, 100: 1},
             respawn_starts=20, respawn_cap=8, respawn_runs=1,
             cpu_window=10, cpu_runs=1, cli_warmup=2, cli_runs=10,
             log_lines=100_000, log_runs=1, log_cap=60,
             cluster_runs=1, wrk_warmup=1, wrk_duration=3,
             reload_runs=1, reload_duration=15, reload_at=(3, 7, 11),
             edit_runs=2, edit_settle=0.5)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: fewer runs, 100k log lines, 10 s CPU window (< 5 min)")
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help="scenarios, comma separated: %s" % ",".join(SCENARIOS))
    p.add_argument("--managers", default=",".join(MANAGERS),
                   help="managers, comma separated: %s" % ",".join(MANAGERS))
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    p.add_argument("--no-install", action="store_true", help="do not install missing peers")
    a = p.parse_args(argv)
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    a.managers = [s.strip() for s in a.managers.split(",") if s.strip()]
    for s in a.only:
        if s not in SCENARIOS:
            p.error("unknown scenario %r (known: %s)" % (s, ", ".join(SCENARIOS)))
    for m in a.managers:
        if m not in MANAGERS:
            p.error("unknown manager %r (known: %s)" % (m, ", ".join(MANAGERS)))
    return a


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except OSError:
        mem_kb = 0
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "os": _os_name()}


def _os_name():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


class Results:
    def __init__(self):
        self.raw = {}      # scenario -> manager -> [run dict]
        self.errors = []   # (scenario, manager, message)

    def add(self, scenario, manager, run):
        self.raw.setdefault(scenario, {}).setdefault(manager, []).append(run)

    def attempt(self, scenario, manager, fn, *args):
        t0 = time.monotonic()
        try:
            r = fn(*args)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the suite
            msg = "%s: %s" % (type(e).__name__, e)
            common.log("  !! %s / %s failed: %s" % (scenario, manager, msg))
            traceback.print_exc(file=sys.stderr)
            self.errors.append((scenario, manager, msg[:500]))
            return None
        self.add(scenario, manager, r)
        short = ", ".join("%s=%s" % (k, report.short(v)) for k, v in r.items())
        common.log("  %-12s %-11s %5.1fs  %s" % (scenario, manager, time.monotonic() - t0, short))
        return r


def run_suite(args, cfg, managers, res):
    only = args.only
    if "memory" in only:
        common.log("== 1. supervisor memory (idle, 0 and %d apps)" % cfg["memory_apps"])
        for i in range(cfg["memory_runs"]):
            for name, cls in managers.items():
                res.attempt("memory", name, scenarios.memory, cls(), cfg)
    if "converge" in only:
        common.log("== 2. converge (warm daemon)")
        for n, runs in cfg["converge_runs"].items():
            for i in range(runs):
                for name, cls in managers.items():
                    res.attempt("converge", name, scenarios.converge, cls(), cfg, n)
    if "respawn" in only:
        common.log("== 3. respawn latency")
        for i in range(cfg["respawn_runs"]):
            res.attempt("respawn", "direct", scenarios.respawn_direct, cfg)
            for name, cls in managers.items():
                res.attempt("respawn", name, scenarios.respawn, cls(), cfg)
    if "cpu" in only or "cli" in only:
        common.log("== 4/5. CLI latency and idle CPU (10 apps)")
        for i in range(cfg["cpu_runs"] if "cpu" in only else 1):
            up = []
            try:
                for name, cls in managers.items():
                    m = cls()
                    try:
                        scenarios.ten_apps_up(m)
                        up.append(m)
                    except Exception as e:  # noqa: BLE001
                        common.log("  !! 10 apps / %s failed: %s" % (name, e))
                        res.errors.append(("cpu/cli", name, str(e)[:500]))
                        m.teardown()
                if "cpu" in only and up:
                    common.log("  idle window %d s, %s side by side, nothing querying them"
                               % (cfg["cpu_window"], ", ".join(m.name for m in up)))
                    for name, r in scenarios.idle_cpu(up, cfg["cpu_window"]).items():
                        res.add("cpu", name, r)
                        common.log("  %-12s %-11s %s" % ("cpu", name, r))
                if "cli" in only:
                    for m in up:
                        res.attempt("cli", m.name, scenarios.cli_latency, m, cfg)
            finally:
                for m in up:
                    m.teardown()
    if "logs" in only:
        common.log("== 6. log capture (%d lines of 100 B)" % cfg["log_lines"])
        for i in range(cfg["log_runs"]):
            res.attempt("logs", "direct", scenarios.logs_direct, cfg)
            for name, cls in managers.items():
                res.attempt("logs", name, scenarios.logs, cls(), cfg)
    web_suite(only, cfg, managers, res)
    if "scale" in only and "eco" in managers:
        common.log("== 8. scale: one app of %s sleep instances (eco only)"
                   % " and ".join(map(str, scale.SIZES)))
        for n in scale.SIZES:
            # eco-base, when given, in the same run: the build-to-build row.
            for name in ("eco", "eco-base"):
                if name in managers:
                    res.attempt("scale", name, scale.scale, managers[name](), cfg, n)


def web_missing():
    if not shutil.which("node"):
        return "node is not installed"
    if not shutil.which("wrk"):
        return "wrk is not installed (apt-get install -y wrk)"
    return None


def web_suite(only, cfg, managers, res):
    """7a-7c. Managers without a shared-port cluster mode and rolling reload
    (supervisord) sit 7a/7b out; 7c runs where the manager can apply an edit of one app."""
    want = [s for s in ("cluster", "reload") if s in only]
    why = web_missing() if want else None
    if why:
        common.log("== 7a/7b. skipped (%s): %s" % (", ".join(want), why))
        for s in want:
            res.errors.append((s, "all", "skipped: " + why))
        want = []
    cl = {}
    for name, cls in managers.items():
        if cls.cluster_missing is None:
            cl[name] = cls
        elif want:
            common.log("  %s sits out 7a/7b: %s" % (name, cls.cluster_missing))
    if "cluster" in want:
        common.log("== 7a. cluster throughput (wrk -t1 -c50 -d%ds after a %d s warm-up)"
                   % (cfg["wrk_duration"], cfg["wrk_warmup"]))
        for i in range(cfg["cluster_runs"]):
            res.attempt("cluster", "direct", web.cluster_direct, cfg)
            for n in (1, 2):
                for name, cls in cl.items():
                    res.attempt("cluster", name, web.cluster, cls(), cfg, n)
    if "reload" in want:
        common.log("== 7b. rolling reload under load (2 instances, wrk -d%ds, reloads at %s s)"
                   % (cfg["reload_duration"], ", ".join(map(str, cfg["reload_at"]))))
        for i in range(cfg["reload_runs"]):
            for name, cls in cl.items():
                res.attempt("reload", name, web.reload, cls(), cfg)
    if "edit" in only:
        common.log("== 7c. edit to converged (3 apps, one app's env changed in the file)")
        ed = {n: c for n, c in managers.items() if c.edit_how}
        for name, cls in ed.items():
            common.log("  %s: %s" % (name, cls.edit_how))
        for i in range(cfg["edit_runs"]):
            for name, cls in ed.items():
                res.attempt("edit", name, web.edit, cls(), cfg)


def main(argv):
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    common.install_handlers()
    started = time.time()
    t0 = time.monotonic()
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "bench/run " + " ".join(argv), "quick": args.quick, "config": cfg,
            "machine": machine(), "versions": {}, "skipped": {},
            "loadavg_start": os.getloadavg()}

    if not args.no_build:
        install.build_eco()
    if not args.no_install:
        install.install_peers(args.managers)
        if {"cluster", "reload"} & set(args.only):
            install.install_wrk()

    managers = {}
    for name in args.managers:
        cls = MANAGERS[name]
        why = cls().missing()
        if why:
            common.log("skipping %s: %s" % (name, why))
            info["skipped"][name] = why
            continue
        try:
            info["versions"][name] = cls().version()
        except Exception as e:  # noqa: BLE001
            info["versions"][name] = "? (%s)" % e
        managers[name] = cls
    common.log("managers: " + "; ".join("%s = %s" % kv for kv in info["versions"].items()))

    res = Results()
    try:
        run_suite(args, cfg, managers, res)
    except KeyboardInterrupt:
        common.log("interrupted: cleaning up and printing what was measured")
        info["interrupted"] = True
    finally:
        common.cleanup_all()

    info["elapsed_s"] = round(time.monotonic() - t0, 1)
    info["loadavg_end"] = os.getloadavg()
    info["errors"] = res.errors
    info["raw"] = res.raw
    left = common.marked()
    info["leftover_processes"] = len(left)

    table = report.table(res.raw, list(managers), cfg)
    os.makedirs(common.RESULTS_DIR, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    base = os.path.join(common.RESULTS_DIR, "%s%s" % (stamp, "-quick" if args.quick else ""))
    with open(base + ".json", "w") as f:
        json.dump(info, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(report.header(info) + "\n" + table + "\n")

    print(report.header(info))
    print(table)
    if res.errors:
        print("\nFailed runs:")
        for s, m, e in res.errors:
            print("  %s / %s: %s" % (s, m, e))
    print("\nRaw results: %s.json (table: %s.md); took %.0f s; leftover marked processes: %d"
          % (os.path.relpath(base, common.REPO), os.path.relpath(base, common.REPO),
             info["elapsed_s"], len(left)))
    return 1 if res.errors and not res.raw else 0
