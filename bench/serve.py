#!/usr/bin/env python3
"""`eco serve` with many instances: how fast /metrics and /api/v1/apps
answer, and eco serve's own memory once idle.

    python3 bench/serve.py [--eco target/release/eco] [--instances 1000]
                           [--scrapes 20] [--dashboard]

Starts a private daemon (its own ECO_HOME) with one app of N `sleep`
instances, starts `eco serve` on a free loopback port, scrapes each
endpoint `--scrapes` times (one at a time, as Prometheus does) and prints
the median and the slowest, then eco serve's RSS 5 s after the last
request. `--dashboard` also runs tests/dashboard/perf.mjs (headless
chromium) against it. Everything it started is stopped at the end.
Standard library only.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for(what, limit, probe):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for %s" % what)


def timed_get(url):
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = answer.read()
    return time.perf_counter() - started, len(body)


def online(eco, env, n):
    out = subprocess.run([eco, "ls", "--json"], env=env, capture_output=True, text=True).stdout
    try:
        rows = json.loads(out)
    except ValueError:
        return False
    return sum(1 for r in rows if r.get("status") == "online") >= n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eco", default="target/release/eco")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--dashboard", action="store_true")
    args = parser.parse_args()
    eco = os.path.abspath(args.eco)
    home = tempfile.mkdtemp(prefix="eco-serve-bench-")
    env = dict(os.environ, ECO_HOME=home)
    with open(os.path.join(home, "ecosystem.yaml"), "w") as f:
        f.write("apps:\n  s:\n    cmd: [sleep, \"100000\"]\n    instances: %d\n" % args.instances)
    serve = None
    try:
        subprocess.run([eco, "up"], cwd=home, env=env, check=True, stdout=subprocess.DEVNULL)
        wait_for("%d instances online" % args.instances, 120, lambda: online(eco, env, args.instances))
        port = free_port()
        serve = subprocess.Popen([eco, "serve", "--listen", "127.0.0.1:%d" % port], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = "http://127.0.0.1:%d" % port

        def answers():
            try:
                return timed_get(base + "/api/v1/apps")
            except OSError:
                return None

        wait_for("eco serve", 20, answers)
        result = {"instances": args.instances}
        for path in ["/metrics", "/api/v1/apps"]:
            times, size = [], 0
            for _ in range(args.scrapes):
                took, size = timed_get(base + path)
                times.append(took)
            result[path] = {"median_ms": round(statistics.median(times) * 1000, 1),
                            "max_ms": round(max(times) * 1000, 1),
                            "first_ms": round(times[0] * 1000, 1), "bytes": size}
        time.sleep(5)
        result["serve_rss_idle_mb"] = round(rss_kb(serve.pid) / 1024, 1)
        if args.dashboard:
            perf = subprocess.run(["node", "tests/dashboard/perf.mjs", base + "/", str(args.instances), "10"],
                                  capture_output=True, text=True, timeout=180)
            result["dashboard"] = json.loads(perf.stdout) if perf.returncode == 0 else perf.stderr[-500:]
        print(json.dumps(result, indent=2))
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(10)
        subprocess.run([eco, "kill"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
