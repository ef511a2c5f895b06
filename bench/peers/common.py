"""Shared helpers: /proc sampling, stats, the run marker and cleanup.

Every process the suite starts (CLIs, daemons, apps) carries the environment
variable MARK_VAR=<token of this run>; apps also carry APP_VAR=1. That gives
two things without trusting any manager's bookkeeping:
  * the manager's own processes = marked processes without APP_VAR
    (daemon plus any helper, wherever it was reparented);
  * cleanup = every process still marked with this run's token is killed.
"""
import atexit
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

MARK_VAR = "ECO_BENCH_PEERS_RUN"
APP_VAR = "ECO_BENCH_PEERS_APP"
HOME_VAR = "ECO_BENCH_PEERS_HOME"   # which manager instance (its private home) a process belongs to
TOKEN = "r%d-%d" % (os.getpid(), int(time.time()))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH_DIR)
PEERS_DIR = os.environ.get("BENCH_PEERS_DIR") or os.path.join(BENCH_DIR, ".peers")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
APPS_SRC = os.path.join(BENCH_DIR, "peers", "apps")

# A real interpreter path (not a pyenv shim, whose bash start-up would be timed).
PYTHON = os.path.realpath(sys.executable)
NODE = os.path.realpath(shutil.which("node") or "/usr/bin/node")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc

def pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def environ(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def stat_fields(pid):
    """Fields of /proc/PID/stat after the comm, so index 0 is field 3 (state)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def ppid(pid):
    f = stat_fields(pid)
    return int(f[1]) if f else None


def is_zombie(pid):
    f = stat_fields(pid)
    return f is None or f[0] in ("Z", "X")


def rss_bytes(pid):
    """VmRSS from /proc/PID/status, in bytes (0 if gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_ticks(pid):
    """utime+stime of the process (all its threads; children excluded)."""
    f = stat_fields(pid)
    if not f:
        return 0
    return int(f[11]) + int(f[12])


class _Taskstats:
    """The kernel's per-thread-group accounting over generic netlink
    (TASKSTATS_CMD_GET by TGID; needs CAP_NET_ADMIN): the run time of every
    thread in ns, exited threads included. /proc/PID/stat gives the same in
    10 ms ticks, too coarse for a reload that costs a manager 20 ms."""
    GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_FAMILY_ID = 0x10, 3, 2, 1
    CMD_GET, ATTR_TGID, TYPE_STATS = 1, 2, 3
    RUN_VIRTUAL_TOTAL = 72   # struct taskstats: cpu_run_virtual_total, sum_exec_runtime in ns

    def __init__(self):
        import socket
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
        self.sock.bind((0, 0))
        self.seq = 0
        reply = self._ask(self.GENL_ID_CTRL, self.CTRL_CMD_GETFAMILY,
                          self._attr(self.CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"))
        self.family = struct.unpack("H", self._attrs(reply[20:])[self.CTRL_ATTR_FAMILY_ID][:2])[0]

    @staticmethod
    def _attr(kind, data):
        size = 4 + len(data)
        return struct.pack("HH", size, kind) + data + b"\0" * ((4 - size % 4) % 4)

    @staticmethod
    def _attrs(data):
        found = {}
        while len(data) >= 4:
            size, kind = struct.unpack("HH", data[:4])
            found[kind & 0x3fff] = data[4:size]
            data = data[(size + 3) & ~3:]
        return found

    def _ask(self, family, cmd, attrs):
        self.seq += 1
        payload = struct.pack("BBH", cmd, 1, 0) + attrs
        self.sock.send(struct.pack("IHHII", 16 + len(payload), family, 1, self.seq, 0) + payload)
        reply = self.sock.recv(65536)
        if struct.unpack("H", reply[4:6])[0] == 2:   # NLMSG_ERROR
            err = struct.unpack("i", reply[16:20])[0]
            if err:
                raise OSError(-err, os.strerror(-err))
        return reply

    def cpu_ns(self, tgid):
        reply = self._ask(self.family, self.CMD_GET, self._attr(self.ATTR_TGID, struct.pack("I", tgid)))
        outer = self._attrs(reply[20:])
        stats = self._attrs(outer[max(outer)])[self.TYPE_STATS]
        return struct.unpack_from("Q", stats, self.RUN_VIRTUAL_TOTAL)[0]


def _taskstats():
    try:
        ts = _Taskstats()
        ts.cpu_ns(os.getpid())
        return ts
    except (OSError, KeyError, struct.error):
        return None


_TASKSTATS = _taskstats()
CPU_SOURCE = ("taskstats (ns, exited threads included)" if _TASKSTATS
              else "/proc/PID/stat in 10 ms ticks (CLK_TCK=%d; taskstats unavailable)" % CLK_TCK)


def cpu_seconds(pid):
    """CPU time of the process, all its threads (children excluded): from
    taskstats when the kernel gives it, else /proc/PID/stat's ticks."""
    if _TASKSTATS:
        try:
            return _TASKSTATS.cpu_ns(pid) / 1e9
        except (OSError, KeyError, struct.error):
            return 0.0
    return cpu_ticks(pid) / CLK_TCK


def marked(home=None):
    """pid -> is_app for every live process carrying this run's marker
    (and, with home, that manager instance's marker)."""
    want = ("%s=%s" % (MARK_VAR, TOKEN)).encode()
    mine = ("%s=%s" % (HOME_VAR, home)).encode() if home else None
    me = os.getpid()
    out = {}
    for pid in pids():
        if pid == me:
            continue
        env = environ(pid)
        if want in env and (mine is None or mine in env) and not is_zombie(pid):
            out[pid] = is_app(env)
    return out


_APP = ("%s=1" % APP_VAR).encode()
_PM2_APP = ('"%s":"1"' % APP_VAR).encode()


def is_app(env):
    """APP_VAR=1 in the environment; or a PM2 cluster worker, forked by the PM2
    daemon with the daemon's environment plus the app's env as JSON in pm2_env
    (its ProcessContainer sets them only once node runs)."""
    return _APP in env or any(e.startswith(b"pm2_env=") and _PM2_APP in e for e in env)


def manager_pids(home):
    """The manager's own processes: marked, not apps, not transient CLIs we run."""
    me = os.getpid()
    return sorted(p for p, is_app in marked(home).items() if not is_app and ppid(p) != me)


def app_pids(home=None):
    return sorted(p for p, is_app in marked(home).items() if is_app)


# ---------------------------------------------------------------- env, runs

def base_env(home=None):
    env = dict(os.environ)
    env[MARK_VAR] = TOKEN
    env.pop(APP_VAR, None)
    env.pop(HOME_VAR, None)
    if home:
        env[HOME_VAR] = home
    return env


def app_env(home=None):
    env = {MARK_VAR: TOKEN, APP_VAR: "1"}
    if home:
        env[HOME_VAR] = home
    return env


def run(argv, env, timeout=120, check=True, cwd=None):
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s exited %d: %s%s" % (" ".join(argv), p.returncode,
                           p.stdout.decode(errors="replace")[-800:],
                           p.stderr.decode(errors="replace")[-800:]))
    return p


def wait_for(pred, timeout, step=0.02, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(step)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---------------------------------------------------------------- cleanup

_tmpdirs = []
_cleanups = []


# Scratch dirs live under bench/.peers/run, not /tmp: shep running as root refuses
# to open log files below a world-writable directory such as /tmp. Paths stay
# short because supervisord's and shep's unix sockets are inside them.
SCRATCH = os.environ.get("BENCH_SCRATCH") or os.path.join(PEERS_DIR, "run")


def tmpdir(prefix):
    """A private scratch dir (mode 0700) for one manager run."""
    os.makedirs(SCRATCH, exist_ok=True)
    d = tempfile.mkdtemp(prefix=prefix + "-", dir=SCRATCH)
    _tmpdirs.append(d)
    return d


def remove_tmpdir(d):
    shutil.rmtree(d, ignore_errors=True)
    if d in _tmpdirs:
        _tmpdirs.remove(d)


def on_cleanup(fn):
    _cleanups.append(fn)
    return fn


def kill_leftovers(home=None, grace=2.0):
    """SIGTERM then SIGKILL every process still carrying this run's marker
    (with home: only that manager instance's)."""
    left = marked(home)
    if not left:
        return []
    names = ["%d %s" % (p, cmdline(p)[:80]) for p in left]
    for p in left:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    end = time.monotonic() + grace
    while time.monotonic() < end and marked(home):
        time.sleep(0.05)
    for p in marked(home):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
    return names


def cleanup_all():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log("cleanup: %s" % e)
    left = kill_leftovers()
    if left:
        log("cleanup: killed %d leftover process(es): %s" % (len(left), "; ".join(left[:5])))
    for d in list(_tmpdirs):
        remove_tmpdir(d)
    try:
        os.rmdir(SCRATCH)
    except OSError:
        pass


def _on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def install_handlers():
    atexit.register(cleanup_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
