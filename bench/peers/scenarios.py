"""The six scenarios. Each function runs one run for one manager (fresh private
home and daemon) and returns {metric: value}; values are seconds, bytes,
CPU seconds or counts."""
import json
import os
import shutil
import subprocess
import time

from . import common
from .adapters.base import App

SLEEP = "/bin/sleep"
WRITER = os.path.join(common.APPS_SRC, "log_writer.py")


def sleep_apps(n):
    # a distinctive argument so the processes are easy to recognise in ps
    return [App("s%03d" % i, [SLEEP, "100017"]) for i in range(1, n + 1)]


def rss_of(pids):
    return sum(common.rss_bytes(p) for p in pids)


# ------------------------------------------------------------------ 1. memory

def memory(mgr, cfg):
    """RSS of the manager's own processes, idle with 0 apps, then with 100 apps."""
    mgr.setup()
    try:
        mgr.start_daemon()
        time.sleep(cfg["settle"])
        own = mgr.own_pids()
        r0 = rss_of(own)
        apps = sleep_apps(cfg["memory_apps"])
        mgr.start_apps(apps)
        mgr.wait_online([a.name for a in apps])
        time.sleep(cfg["settle"])
        own100 = mgr.own_pids()
        r100 = rss_of(own100)
        return {"rss_0": r0, "rss_100": r100, "procs_0": len(own), "procs_100": len(own100),
                "apps_seen": len(common.app_pids(mgr.home))}
    finally:
        mgr.teardown()


# ------------------------------------------------------------------ 2. converge

def converge(mgr, cfg, n):
    """Warm daemon (already running, 0 apps): from issuing the start command
    until the manager's own listing reports all n apps online."""
    mgr.setup()
    try:
        mgr.start_daemon()
        time.sleep(0.3)
        apps = sleep_apps(n)
        t0 = time.perf_counter()
        mgr.start_apps(apps)
        t_cli = time.perf_counter()
        polls = mgr.wait_online([a.name for a in apps])
        t_on = time.perf_counter()
        return {"converge_%d" % n: t_on - t0, "cli_returned_%d" % n: t_cli - t0,
                "polls_%d" % n: polls}
    finally:
        mgr.teardown()


# ------------------------------------------------------------------ 3. respawn

def starts_in(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def gaps_stats(stamps, skip=3):
    ns = stamps[skip:]
    gaps = [(b - a) / 1e9 for a, b in zip(ns, ns[1:])]
    return {"respawn_gap": common.median(gaps), "respawn_p90": common.percentile(gaps, 0.9),
            "respawn_n": len(gaps)}


def crash_cmd(path):
    return ["/bin/sh", "-c", "date +%%s%%N >> %s; exit 1" % path]


def collect_starts(path, want, cap):
    end = time.monotonic() + cap
    while time.monotonic() < end and len(starts_in(path)) < want:
        time.sleep(0.05)
    return starts_in(path)


def respawn(mgr, cfg):
    """An app that exits at once, restart delay 0, huge max restarts:
    median gap between successive starts (from the file it appends to)."""
    mgr.setup()
    try:
        mgr.start_daemon()
        path = os.path.join(mgr.home, "starts")
        mgr.start_apps([App("crash", crash_cmd(path), fast_restart=True)])
        stamps = collect_starts(path, cfg["respawn_starts"] + 3, cfg["respawn_cap"])
        out = gaps_stats(stamps)
        out["respawn_capped"] = int(len(stamps) < cfg["respawn_starts"] + 3)
        return out
    finally:
        mgr.teardown()


def respawn_direct(cfg):
    """Baseline: a bare sh loop running the same program back to back."""
    d = common.tmpdir("direct")
    path = os.path.join(d, "starts")
    prog = " ".join("'%s'" % x if " " in x else x for x in crash_cmd(path))
    p = subprocess.Popen(["/bin/sh", "-c", "while :; do %s; done" % prog],
                         env={**common.base_env(d), **common.app_env(d)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stamps = collect_starts(path, cfg["respawn_starts"] + 3, cfg["respawn_cap"])
        return gaps_stats(stamps)
    finally:
        p.kill()
        p.wait()
        common.kill_leftovers(d)
        common.remove_tmpdir(d)


# ------------------------------------------------------------------ 4+5. idle CPU, CLI latency

def ten_apps_up(mgr):
    mgr.setup()
    mgr.start_daemon()
    apps = sleep_apps(10)
    mgr.start_apps(apps)
    mgr.wait_online([a.name for a in apps])


def idle_cpu(mgrs, window):
    """CPU time of each manager's own processes over `window` s, all of them
    idle side by side in the same window, with nothing querying any of them."""
    time.sleep(2)
    before = {}
    for m in mgrs:
        before[m.name] = {p: common.cpu_seconds(p) for p in m.own_pids()}
    time.sleep(window)
    out = {}
    for m in mgrs:
        b = before[m.name]
        now = m.own_pids()
        used = sum(common.cpu_seconds(p) - b.get(p, 0) for p in now)
        # a process that existed before and vanished: its CPU is lost; note it
        gone = [p for p in b if p not in now]
        out[m.name] = {"idle_cpu": used, "idle_cpu_window": window,
                       "idle_cpu_procs": len(now), "idle_cpu_gone": len(gone)}
    return out


def cli_latency(mgr, cfg):
    argv = mgr.list_argv()
    if shutil.which("hyperfine"):
        out = os.path.join(mgr.home, "hyperfine.json")
        cmd = " ".join(argv)
        common.run(["hyperfine", "-N", "--style", "none", "--warmup", str(cfg["cli_warmup"]),
                    "--runs", str(cfg["cli_runs"]), "--export-json", out, cmd], mgr.env,
                   timeout=600)
        with open(out) as f:
            r = json.load(f)["results"][0]
        return {"cli_list": r["median"], "cli_list_min": r["min"], "cli_tool": "hyperfine -N"}
    times = []
    for i in range(cfg["cli_warmup"] + cfg["cli_runs"]):
        t0 = time.perf_counter()
        common.run(argv, mgr.env, check=False)
        if i >= cfg["cli_warmup"]:
            times.append(time.perf_counter() - t0)
    return {"cli_list": common.median(times), "cli_list_min": min(times),
            "cli_tool": "python subprocess"}


# ------------------------------------------------------------------ 6. log capture

def expected_line(n):
    return b"%09d %s\n" % (n, (chr(97 + n % 26) * 89).encode())


def last_line_is(path, n):
    want = expected_line(n)
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            if size < len(want):
                return False
            f.seek(size - len(want))
            return f.read() == want
    except OSError:
        return False


def check_lines(path, n):
    """lost / corrupt (torn or damaged) / duplicated / out of order lines."""
    seen = bytearray(n + 1)
    corrupt = dup = ooo = 0
    prev = 0
    letters = [(chr(97 + i) * 89).encode() for i in range(26)]
    with open(path, "rb") as f:
        for line in f:
            if len(line) != 100 or line[9:10] != b" " or line[-1:] != b"\n":
                corrupt += 1
                continue
            try:
                k = int(line[:9])
            except ValueError:
                corrupt += 1
                continue
            if not 1 <= k <= n or line[10:99] != letters[k % 26]:
                corrupt += 1
                continue
            if seen[k]:
                dup += 1
            else:
                seen[k] = 1
            if k < prev:
                ooo += 1
            prev = max(prev, k)
    lost = n - sum(seen)
    return {"lost": lost, "corrupt": corrupt, "duplicated": dup, "out_of_order": ooo}


def wait_capture(path, n, done, t0, cap, sample=None):
    """Poll until `path` ends with line n; returns (complete_s, writer_s, peak_rss)."""
    peak = 0
    end = time.monotonic() + cap
    t_complete = None
    i = 0
    while time.monotonic() < end:
        if sample and i % 5 == 0:
            peak = max(peak, sample())
        i += 1
        if last_line_is(path, n):
            t_complete = time.time() - t0
            break
        time.sleep(0.01)
    if t_complete is None:
        raise TimeoutError("log file %s did not get line %d within %d s" % (path, n, cap))
    common.wait_for(lambda: os.path.exists(done), 30, what="writer done file")
    with open(done) as f:
        t_writer = float(f.read()) - t0
    return t_complete, t_writer, peak


def logs(mgr, cfg):
    n = cfg["log_lines"]
    mgr.setup()
    try:
        mgr.start_daemon()
        time.sleep(0.3)
        done = os.path.join(mgr.home, "writer.done")
        app = App("writer", [common.PYTHON, WRITER, str(n), done])
        app.out_file = mgr.out_path(app)
        t0 = time.time()
        mgr.start_apps([app])
        own = mgr.own_pids()
        t_complete, t_writer, peak = wait_capture(
            app.out_file, n, done, t0, cfg["log_cap"], sample=lambda: rss_of(own))
        time.sleep(0.2)   # anything still in flight lands before the check
        res = {"log_complete": t_complete, "log_writer": t_writer, "log_peak_rss": peak}
        res.update(check_lines(app.out_file, n))
        return res
    finally:
        mgr.teardown()


def logs_direct(cfg):
    n = cfg["log_lines"]
    d = common.tmpdir("direct")
    path = os.path.join(d, "writer.out.log")
    done = os.path.join(d, "writer.done")
    t0 = time.time()
    with open(path, "wb") as out:
        p = subprocess.Popen([common.PYTHON, WRITER, str(n), done], stdout=out,
                             stderr=subprocess.DEVNULL, env={**common.base_env(d), **common.app_env(d)})
    try:
        t_complete, t_writer, _ = wait_capture(path, n, done, t0, cfg["log_cap"])
        res = {"log_complete": t_complete, "log_writer": t_writer}
        res.update(check_lines(path, n))
        return res
    finally:
        p.kill()
        p.wait()
        common.remove_tmpdir(d)
