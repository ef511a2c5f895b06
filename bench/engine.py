#!/usr/bin/env python3
"""Engine benchmarks for `eco up -F` (release build):
  * converge: wall time from starting eco until N instances are online;
  * respawn: median time per restart cycle of an app that exits at once
    (restart_delay 0), beside a bare `sh` loop running the same program
    (`sh -c 'echo >> FILE'`; runs are counted from FILE's size).
Usage: bench/engine.py [path/to/eco]   (default: target/release/eco)
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ECO = sys.argv[1] if len(sys.argv) > 1 else "target/release/eco"
RUNS = 7


def converge(n):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ecosystem.yaml")
        with open(path, "w") as f:
            f.write(f"apps:\n  s:\n    cmd: [sleep, '1000']\n    instances: {n}\n    stop_timeout: 2s\n")
        start = time.perf_counter()
        p = subprocess.Popen([ECO, "up", "-F", "-f", path], stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env={**os.environ, "ECO_HOME": d})
        seen = 0
        for line in p.stderr:
            if b" started (pid " in line:
                seen += 1
                if seen == n:
                    break
        took = time.perf_counter() - start
        p.send_signal(2)
        p.wait(timeout=20)
        return took


# The program restarted in both loops: it appends one byte to a file, so the
# count of runs needs no reader of eco's output competing for the CPU.
PROGRAM = "echo >> {counter}"


def count(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def wait_count(path, n):
    while count(path) < n:
        time.sleep(0.002)
    return time.perf_counter()


def respawn(cycles=1000):
    with tempfile.TemporaryDirectory() as d:
        counter = os.path.join(d, "runs")
        path = os.path.join(d, "ecosystem.yaml")
        with open(path, "w") as f:
            f.write("apps:\n  t:\n    cmd: [sh, -c, '%s']\n    restart_delay: 0ms\n"
                    "    max_restarts: 100000000\n" % PROGRAM.format(counter=counter))
        p = subprocess.Popen([ECO, "up", "-F", "-f", path], stderr=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, env={**os.environ, "ECO_HOME": d})
        first = wait_count(counter, 100)
        base = count(counter)
        last = wait_count(counter, base + cycles)
        runs = count(counter) - base
        p.send_signal(2)
        p.wait(timeout=20)
        return (last - first) / runs


def sh_loop(cycles=1000):
    with tempfile.TemporaryDirectory() as d:
        counter = os.path.join(d, "runs")
        start = time.perf_counter()
        program = PROGRAM.format(counter=counter)
        subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {cycles} ]; do sh -c '{program}'; i=$((i+1)); done"],
                       check=True)
        return (time.perf_counter() - start) / cycles


def median(f, *args):
    return statistics.median(f(*args) for _ in range(RUNS))


if __name__ == "__main__":
    c50 = median(converge, 50)
    c100 = median(converge, 100)
    r = median(respawn)
    s = median(sh_loop)
    print(f"converge 50 instances (eco up -F, start to all online):  {c50*1e3:7.1f} ms")
    print(f"converge 100 instances:                                  {c100*1e3:7.1f} ms")
    print(f"respawn cycle, eco (restart_delay 0)       :         {r*1e3:7.2f} ms")
    print(f"respawn cycle, bare sh loop:                             {s*1e3:7.2f} ms")
    print(f"eco / sh loop:                                           {r/s:7.2f}x")
