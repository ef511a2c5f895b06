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
    cluster_missing = None

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
                                           for k, v in self.app_env_of(a).items()),
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

    def start_cluster(self, name, server, port, n):
        # A listen table: the shepherd binds the port once and hands it to every
        # instance as fd 3 (LISTEN_FDS), like eco; `wait_ready`: the server sends
        # {"kind":"ready"} on SHEP_CHANNEL_FD once it listens (eco: the "listening"
        # line), which also makes `shep reload` overlap old and new instances.
        out = os.path.join(self.home, "out", name + ".out.log")
        lines = [
            "[[app]]",
            "name = %s" % toml_str(name),
            "script = %s" % toml_str(common.NODE),
            "args = [%s]" % ", ".join(toml_str(x) for x in (server, str(port))),
            "cwd = %s" % toml_str(self.home),
            "instances = %d" % n,
            "listen = { http = %s }" % toml_str("127.0.0.1:%d" % port),
            "wait_ready = true",
            'kill_timeout = "5s"',
            'graceful_timeout = "5s"',
            "env = { %s }" % ", ".join("%s = %s" % (k, toml_str(v)) for k, v in self.app_env().items()),
            "out_file = %s" % toml_str(out),
            "err_file = %s" % toml_str(out + ".err"),
            "merge_logs = true",
            "log_timestamps = false",
            "",
        ]
        with open(self.file, "w") as f:
            f.write("\n".join(lines))
        self.shep("start", self.file)

    def listing(self):
        out = self.shep("ls", "--format", "json").stdout
        return [x for x in json.loads(out)["data"] if not x.get("dog")]

    def instances(self):
        return [(x["name"], x.get("pid"), x["status"]) for x in self.listing()]

    def reload(self, name):
        # returns once the shepherd accepts; the swap goes on in the background
        return self.shep("reload", name, check=False)

    def statuses(self):
        return {x["name"]: x["status"] for x in self.listing()}

    def list_argv(self):
        return [SHEP_BIN, "ls", "--format", "json"]

    def stop_daemon(self):
        if os.path.exists(self.pidfile()):
            self.shep("kill", timeout=60, check=False)
            time.sleep(0.05)
