#!/usr/bin/env python3
"""Daemon CPU while idle, and while `eco monit` is open (issue: observability).
10 `sleep` apps, no max_memory/cron; CPU = utime+stime of the daemon from
/proc/PID/stat (CLK_TCK 100) over the window.
Usage: bench/observe.py [seconds=60] [path/to/eco]"""
import os
import pty
import subprocess
import sys
import tempfile
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
ECO = sys.argv[2] if len(sys.argv) > 2 else "target/release/eco"


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


with tempfile.TemporaryDirectory() as home:
    env = {**os.environ, "ECO_HOME": home}
    path = os.path.join(home, "ecosystem.yaml")
    with open(path, "w") as f:
        f.write("name: idle\napps:\n")
        for i in range(10):
            f.write(f"  s{i}:\n    cmd: [sleep, '100000']\n")
    subprocess.run([ECO, "up", "-f", path, "--wait"], env=env, check=True, stdout=subprocess.DEVNULL)
    pid = int(open(os.path.join(home, "daemon.pid")).read())
    try:
        time.sleep(2)
        before = ticks(pid)
        time.sleep(SECONDS)
        idle = (ticks(pid) - before) / 100
        master, slave = os.openpty()
        monit = subprocess.Popen([ECO, "monit"], env={**env, "TERM": "xterm-256color"},
                                 stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        time.sleep(2)
        before = ticks(pid)
        start = time.time()
        end = start + SECONDS
        while time.time() < end:  # drain the pty so monit never blocks on output
            try:
                os.read(master, 65536)
            except OSError:
                break
        busy = (ticks(pid) - before) / 100
        elapsed = time.time() - start
        monit.terminate()
        monit.wait(timeout=5)
    finally:
        subprocess.run([ECO, "kill"], env=env, stdout=subprocess.DEVNULL)
print(f"daemon CPU over {SECONDS:.0f} s idle, 10 apps:        {idle:.2f} s")
print(f"daemon CPU over {SECONDS:.0f} s with eco monit open:  {busy:.2f} s ({busy / elapsed * 100:.2f} % of one core)")
