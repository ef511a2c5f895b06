"""shep (crates.io, `cargo install shep`) from bench/.peers/shep, with a private
SHEP_HOME per run.

`shep start` in a directory without a Flockfile brings the shepherd (daemon)
up with nothing running; `shep start Flockfile.toml` registers and starts the
apps; `shep ls --format json` lists them (a versioned envelope whose `data`
also holds the built-in, disabled "dogs", which are skipped here); `shep kill`
stops the apps and the shepherd. log_timestamps = false so the log file holds
the lines exactly as printed, as with the other managers.
"""
import json
import os
import time

from .. import common
from .base import Manager

SHEP_BIN = os.path.join(common.PEERS_DIR, "shep", "bin", "shep")


def toml_str(s):
    return json.dumps(s)   # a JSON string is a valid TOML basic string


class Shep(Manager):
    name = "shep"
    online_word = "online"

    def missing(self):
        if not os.access(SHEP_BIN, os.X_OK):
            return "not installed (%s missing)" % SHEP_BIN
        return None

    def version(self):
        out = common.run([SHEP_BIN, "--version"], common.base_env()).stdout.decode()
        return out.splitlines()[0].strip()

    def setup(self):
        super().setup()
        self.env["SHEP_HOME"] = os.path.join(self.home, "shephome")
        self.cwd = os.path.join(self.home, "cwd")   # no Flockfile here
        for d in (self.env["SHEP_HOME"], self.cwd, os.path.join(self.home, "out")):
            os.makedirs(d)
        self.file = os.path.join(self.home, "Flockfile.toml")

    def shep(self, *args, timeout=120, check=True):
        return common.run([SHEP_BIN, *args], self.env, timeout=timeout, check=check, cwd=self.cwd)

    def pidfile(self):
        return os.path.join(self.env["SHEP_HOME"], "pids", "shepd.pid")

    def start_daemon(self):
        self.shep("start")
        common.wait_for(lambda: os.path.exists(self.pidfile()), 30, what="shepd.pid")
        common.wait_for(lambda: self.shep("ping", check=False).returncode == 0, 30, what="shep ping")

    def start_apps(self, apps):
        lines = []
        for a in apps:
            out = self.out_path(a)
            lines += [
                "[[app]]",
                "name = %s" % toml_str(a.name),
                "script = %s" % toml_str(a.cmd[0]),
                "args = [%s]" % ", ".join(toml_str(x) for x in a.cmd[1:]),
                "cwd = %s" % toml_str(self.home),
                "env = { %s }" % ", ".join("%s = %s" % (k, toml_str(v))
                                           for k, v in self.app_env().items()),
                "out_file = %s" % toml_str(out),
                "err_file = %s" % toml_str(out + ".err"),
                "log_timestamps = false",
            ]
            if a.fast_restart:
                lines += ['restart_delay = "0ms"', "max_restarts = 1000000", 'min_uptime = "0ms"']
            lines.append("")
        with open(self.file, "w") as f:
            f.write("\n".join(lines))
        self.shep("start", self.file)

    def statuses(self):
        out = self.shep("ls", "--format", "json").stdout
        data = json.loads(out)["data"]
        return {x["name"]: x["status"] for x in data if not x.get("dog")}

    def list_argv(self):
        return [SHEP_BIN, "ls", "--format", "json"]

    def stop_daemon(self):
        if os.path.exists(self.pidfile()):
            self.shep("kill", timeout=60, check=False)
            time.sleep(0.05)
