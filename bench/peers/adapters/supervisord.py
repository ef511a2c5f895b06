"""supervisord 4.3.0 from the venv bench/.peers/venv, private config and socket per run.

Programs use startsecs=0 (RUNNING means spawned, like PM2's online) and
autorestart=true. Apps are added to the warm daemon the usual way: a file in
conf.d, then `supervisorctl update`.
"""
import os
import shlex
import time

from .. import common
from .base import Manager

VENV_BIN = os.path.join(common.PEERS_DIR, "venv", "bin")
SUPERVISORD = os.path.join(VENV_BIN, "supervisord")
SUPERVISORCTL = os.path.join(VENV_BIN, "supervisorctl")

CONF = """\
[unix_http_server]
file=%(here)s/supervisor.sock

[supervisord]
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s/childlogs
loglevel=warn

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://%(here)s/supervisor.sock

[include]
files = conf.d/*.ini
"""


class Supervisord(Manager):
    name = "supervisord"
    online_word = "RUNNING"
    cluster_missing = ("no rolling reload, and numprocs copies cannot share a port a plain "
                       "HTTP server binds (fcgi-program's socket is for FastCGI programs)")

    def missing(self):
        if not os.path.exists(SUPERVISORD):
            return "not installed (%s missing)" % SUPERVISORD
        return None

    def version(self):
        v = common.run([SUPERVISORD, "--version"], common.base_env()).stdout.decode().strip()
        py = common.run([os.path.join(VENV_BIN, "python"), "--version"],
                        common.base_env()).stdout.decode().strip()
        return "supervisor %s (%s)" % (v, py)

    def setup(self):
        super().setup()
        for d in ("conf.d", "childlogs", "out"):
            os.makedirs(os.path.join(self.home, d))
        self.conf = os.path.join(self.home, "supervisord.conf")
        with open(self.conf, "w") as f:
            f.write(CONF)
        self.pidfile = os.path.join(self.home, "supervisord.pid")

    def ctl(self, *args, timeout=120, check=True):
        return common.run([SUPERVISORCTL, "-c", self.conf, *args], self.env,
                          timeout=timeout, check=check)

    def start_daemon(self):
        common.run([SUPERVISORD, "-c", self.conf], self.env)   # daemonizes itself
        common.wait_for(lambda: self.ctl("pid", check=False).returncode == 0, 30,
                        step=0.05, what="supervisord socket")

    def start_apps(self, apps):
        lines = []
        for a in apps:
            out = self.out_path(a)
            env = ",".join('%s="%s"' % kv for kv in self.app_env_of(a).items())
            lines += [
                "[program:%s]" % a.name,
                "command=%s" % " ".join(shlex.quote(x) for x in a.cmd).replace("%", "%%"),
                "directory=%s" % self.home,
                "environment=%s" % env,
                "autostart=true",
                "autorestart=true",
                "startsecs=0",
                "startretries=1000000",
                "stopwaitsecs=5",
                "stdout_logfile=%s" % out,
                "stdout_logfile_maxbytes=0",
                "stderr_logfile=%s" % (out + ".err"),
                "stderr_logfile_maxbytes=0",
                "",
            ]
        with open(os.path.join(self.home, "conf.d", "bench.ini"), "w") as f:
            f.write("\n".join(lines))
        self.ctl("update")

    def statuses(self):
        # exit status 3 when some program is not RUNNING: that is not an error here
        out = self.ctl("status", check=False).stdout.decode(errors="replace")
        st = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                st[parts[0]] = parts[1]
        return st

    def list_argv(self):
        return [SUPERVISORCTL, "-c", self.conf, "status"]

    def stop_daemon(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return
        self.ctl("shutdown", check=False, timeout=60)
        end = time.monotonic() + 30
        while time.monotonic() < end and not common.is_zombie(pid):
            time.sleep(0.05)
