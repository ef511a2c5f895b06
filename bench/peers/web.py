"""Scenarios 7a-7c: an HTTP app under several instances, a rolling reload under
load, and an edit of the file. Each function runs one run (fresh private home
and daemon) and returns {metric: value}, like scenarios.py.

  7a cluster: `node apps/http_server.js PORT`, requests per second and p99 with
     `wrk -t1 -c50 -d6s --latency` after a 2 s wrk warm-up; direct (the server
     alone), and 1 and 2 instances under each manager's shared-port mode.
  7b reload: 2 instances under `wrk -t1 -c50 -d15s`, the manager's rolling
     reload at t = 3, 7 and 11 s; wrk's errors plus a prober thread opening a
     fresh connection every 10 ms (1 s timeout).
  7c edit: 3 `sleep` apps, one app's env changed in the file; time from the
     write until the listing shows that app with a new pid, online, the two
     others with their old pids.
"""
import collections
import os
import re
import socket
import subprocess
import threading
import time

from . import common
from .adapters.base import App

SERVER = os.path.join(common.APPS_SRC, "http_server.js")
APP = "http"
SLEEP = "/bin/sleep"


# ------------------------------------------------------------------ helpers

def free_port():
    """A port the kernel has just handed out (a new one every run: no TIME_WAIT
    left from the previous run on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def get(port, timeout=1.0):
    """One request on a fresh connection: None if it got a 200, else why not."""
    end = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(REQUEST)
            data = b""
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return "timeout"
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as e:
        return "oserror %s" % (e.errno,)
    if not data.startswith(b"HTTP/1.1 200"):
        return "status %r" % data[:12] if data else "empty"
    return None


def wait_http(port, timeout=30):
    common.wait_for(lambda: get(port) is None, timeout, step=0.05,
                    what="HTTP 200 on 127.0.0.1:%d" % port)


def online(mgr, n, old=()):
    """The pids of APP's online instances if there are `n`, none of them in `old`; else None."""
    pids = [p for name, p, st in mgr.instances() if name == APP and st == mgr.online_word]
    return pids if len(pids) == n and not set(pids) & set(old) else None


def wait_instances(mgr, n, timeout=60):
    return common.wait_for(lambda: online(mgr, n), timeout, step=0.05,
                           what="%s: %d instances online" % (mgr.name, n))


def wrk_argv(port, seconds):
    return ["wrk", "-t1", "-c50", "-d%ds" % seconds, "--latency", "http://127.0.0.1:%d/" % port]


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(text):
    out = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m:
        raise RuntimeError("wrk printed no Requests/sec: %s" % text[-600:])
    out["rps"] = float(m.group(1))
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    out["p99"] = float(m.group(1)) * _UNITS[m.group(2)] if m else None
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    out["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    for k, v in zip(("connect", "read", "write", "timeout"), m.groups() if m else (0, 0, 0, 0)):
        out["sock_" + k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    return out


def run_wrk(port, seconds):
    # marked with this run's token (cleanup) but no manager's home: never
    # counted as a manager's process
    p = common.run(wrk_argv(port, seconds), common.base_env(), timeout=seconds + 60)
    return parse_wrk(p.stdout.decode(errors="replace"))


class CpuWindow:
    """CPU time (common.cpu_seconds) of a changing set of processes from now
    until done()."""
    def __init__(self, get_pids):
        self.get_pids = get_pids
        self.before = {p: common.cpu_seconds(p) for p in get_pids()}

    def done(self):
        now = {p: common.cpu_seconds(p) for p in self.get_pids()}
        self.per_pid = {p: t - self.before.get(p, 0) for p, t in now.items()}
        return sum(self.per_pid.values())


class Prober(threading.Thread):
    """A fresh connection and one GET every `period` s (never in a burst when
    late); counts the attempts and the failures by kind, with their times."""
    def __init__(self, port, t0, period=0.01, timeout=1.0):
        super().__init__(daemon=True)
        self.port, self.t0, self.period, self.timeout = port, t0, period, timeout
        self.n = 0
        self.fails = collections.Counter()
        self.when = []          # (t since t0, kind) of the first failures
        self._halt = threading.Event()

    def run(self):
        nxt = time.monotonic()
        while not self._halt.is_set():
            why = get(self.port, self.timeout)
            self.n += 1
            if why:
                self.fails[why] += 1
                if len(self.when) < 100:
                    self.when.append((round(time.monotonic() - self.t0, 3), why))
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay > 0:
                self._halt.wait(delay)
            else:
                nxt = time.monotonic()

    def stop(self):
        self._halt.set()
        self.join(10)


def measure(port, cfg, n, own=None, apps=None):
    """wrk warm-up, then the measured wrk run; manager CPU and the split of the
    app CPU between instances over the measured run."""
    run_wrk(port, cfg["wrk_warmup"])
    mgr_cpu = CpuWindow(own) if own else None
    app_cpu = CpuWindow(apps) if apps else None
    w = run_wrk(port, cfg["wrk_duration"])
    out = {"rps_%d" % n: w["rps"], "p99_%d" % n: w["p99"], "requests_%d" % n: w["requests"],
           "errors_%d" % n: sum(w["sock_" + k] for k in ("connect", "read", "write", "timeout"))
           + w["non2xx"]}
    if mgr_cpu:
        out["mgr_cpu_%d" % n] = mgr_cpu.done()
    if app_cpu:
        out["app_cpu_%d" % n] = app_cpu.done()
        ticks = sorted(app_cpu.per_pid.values(), reverse=True)
        if n > 1 and sum(ticks):
            out["busiest_share_%d" % n] = ticks[0] / sum(ticks)
    return out


# ------------------------------------------------------------------ 7a. cluster

def cluster_direct(cfg):
    """Baseline: the server alone, binding the port itself."""
    d = common.tmpdir("direct")
    port = free_port()
    with open(os.path.join(d, "out.log"), "wb") as out:
        p = subprocess.Popen([common.NODE, SERVER, str(port)], cwd=d, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**common.base_env(d), **common.app_env(d)})
    try:
        wait_http(port)
        return measure(port, cfg, 1, apps=lambda: common.app_pids(d))
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        common.kill_leftovers(d)
        common.remove_tmpdir(d)


def cluster(mgr, cfg, n):
    mgr.setup()
    try:
        mgr.start_daemon()
        port = free_port()
        mgr.start_cluster(APP, SERVER, port, n)
        wait_instances(mgr, n)
        wait_http(port)
        got = len(common.app_pids(mgr.home))
        if got != n:
            raise RuntimeError("%d app processes for %d instances" % (got, n))
        return measure(port, cfg, n, own=mgr.own_pids, apps=lambda: common.app_pids(mgr.home))
    finally:
        mgr.teardown()


# ------------------------------------------------------------------ 7b. reload

def reload(mgr, cfg):
    n = 2
    dur = cfg["reload_duration"]
    mgr.setup()
    try:
        mgr.start_daemon()
        port = free_port()
        mgr.start_cluster(APP, SERVER, port, n)
        first = wait_instances(mgr, n)
        wait_http(port)
        run_wrk(port, cfg["wrk_warmup"])
        seen = set(first)
        cpu = CpuWindow(mgr.own_pids)
        t0 = time.monotonic()
        wrk = subprocess.Popen(wrk_argv(port, dur), env=common.base_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        prober = Prober(port, t0)
        prober.start()
        events = []
        try:
            ats = list(cfg["reload_at"])
            for i, at in enumerate(ats):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                old = set(common.app_pids(mgr.home))
                seen |= old
                ts = time.monotonic()
                p = mgr.reload(APP)
                t_cli = time.monotonic() - ts
                # done: n instances online, all of them new. Waited for until the
                # next reload is due (the last one: until wrk ends).
                deadline = (t0 + ats[i + 1] if i + 1 < len(ats) else t0 + dur) - 0.2
                t_done = None
                new = []
                try:
                    new = common.wait_for(lambda: online(mgr, n, old),
                                          max(0.5, deadline - time.monotonic()), step=0.05,
                                          what="reload done")
                    t_done = time.monotonic() - ts
                except TimeoutError:
                    pass
                seen |= set(new)
                ev = {"at": round(ts - t0, 3), "rc": p.returncode, "cli": t_cli, "done": t_done}
                if p.returncode != 0:
                    ev["stderr"] = (p.stdout + p.stderr).decode(errors="replace")[-300:]
                events.append(ev)
            out, _ = wrk.communicate(timeout=dur + 60)
        finally:
            prober.stop()
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
        mgr_cpu = cpu.done()
        w = parse_wrk(out.decode(errors="replace"))
        seen |= set(common.app_pids(mgr.home))
        failed = sum(1 for e in events if e["rc"] != 0 or e["done"] is None)
        res = {
            "rl_rps": w["rps"], "rl_p99": w["p99"], "rl_requests": w["requests"],
            "rl_sock_err": sum(w["sock_" + k] for k in ("connect", "read", "write", "timeout")),
            "rl_non2xx": w["non2xx"],
            "probe_n": prober.n, "probe_fail": sum(prober.fails.values()),
            "rl_cli": common.median([e["cli"] for e in events]),
            "rl_done": common.median([e["done"] for e in events]) if not failed else None,
            "rl_failed": failed, "rl_mgr_cpu": mgr_cpu,
            "rl_pids_seen": len(seen),
        }
        res.update({"rl_" + k: w[k] for k in w if k.startswith("sock_")})
        res["probe_fail_kinds"] = dict(prober.fails)
        res["probe_fail_times"] = prober.when[:20]
        res["rl_events"] = events
        return res
    finally:
        mgr.teardown()


# ------------------------------------------------------------------ 7c. edit

def edit(mgr, cfg):
    mgr.setup()
    try:
        mgr.start_daemon()
        apps = [App("e%d" % i, [SLEEP, "100018"], env={"BENCH_EDIT": "0"}) for i in (1, 2, 3)]
        changed, others = apps[1].name, [apps[0].name, apps[2].name]
        mgr.start_apps(apps)
        mgr.wait_online([a.name for a in apps])
        time.sleep(cfg["edit_settle"])
        before = {name: pid for name, pid, st in mgr.instances()}
        apps[1].env = {"BENCH_EDIT": "1"}
        t0 = time.perf_counter()
        mgr.write_config(apps)
        mgr.apply_edit(changed)
        t_cmd = time.perf_counter() - t0
        polls = [0]

        def converged():
            polls[0] += 1
            now = {name: (pid, st) for name, pid, st in mgr.instances()}
            pid, st = now.get(changed, (None, None))
            return pid and pid != before[changed] and st == mgr.online_word and pid

        pid = common.wait_for(converged, 60, step=0.005, what="%s restarted" % changed)
        t = time.perf_counter() - t0
        time.sleep(cfg["edit_settle"])    # a late restart of another app would show now
        after = {name: p for name, p, st in mgr.instances()}
        moved = [a for a in others if after.get(a) != before.get(a)]
        if moved:
            raise RuntimeError("%s also restarted %s (pids %s -> %s)" % (
                mgr.name, ", ".join(moved), [before.get(a) for a in moved], [after.get(a) for a in moved]))
        if after.get(changed) != pid:
            raise RuntimeError("%s restarted %s again" % (mgr.name, changed))
        if b"BENCH_EDIT=1" not in common.environ(pid):
            raise RuntimeError("the new %s (pid %d) does not have the edited env" % (changed, pid))
        return {"edit_converge": t, "edit_cmd": t_cmd, "edit_polls": polls[0], "others_kept": len(others)}
    finally:
        mgr.teardown()
