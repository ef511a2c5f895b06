"""eco (target/release/eco) with a private ECO_HOME per run."""
import json
import os
import time

from .. import common
from .base import Manager

ECO_BIN = os.path.join(common.REPO, "target", "release", "eco")
PROJECT = "bench"


def yaml_str(s):
    return json.dumps(s)   # a JSON string is a valid YAML flow scalar


class Eco(Manager):
    name = "eco"
    bin = ECO_BIN
    online_word = "online"
    cluster_missing = None
    edit_how = "the file write alone (the daemon watches ecosystem.yaml)"

    def missing(self):
        if not self.bin and os.access(self.bin, os.X_OK):
            return "not built (%s missing)" % self.bin
        return None

    def version(self):
        return common.run([self.bin, "--version"], common.base_env()).stdout.decode().strip()

    def setup(self):
        super().setup()
        self.env["ECO_HOME"] = os.path.join(self.home, "ecohome")
        os.makedirs(self.env["ECO_HOME"])
        os.makedirs(os.path.join(self.home, "out"))
        self.file = os.path.join(self.home, "ecosystem.yaml")

    def eco(self, *args, timeout=120, check=True):
        return common.run([self.bin, *args], self.env, timeout=timeout, check=check)

    def write_file(self, apps):
        lines = ["name: %s" % PROJECT, "apps:" if apps else "apps: {}"]
        for a in apps:
            lines += [
                "  %s:" % a.name,
                "    cmd: [%s]" % ", ".join(yaml_str(x) for x in a.cmd),
                "    cwd: %s" % yaml_str(self.home),
                "    env: {%s}" % ", ".join("%s: %s" % (k, yaml_str(v))
                                            for k, v in self.app_env_of(a).items()),
                "    out_file: %s" % yaml_str(self.out_path(a)),
                "    log_max_size: 0",     # no rotation (PM2 and supervisord as configured here neither)
            ]
            if a.fast_restart:
                lines += ["    restart_delay: 0ms", "    max_restarts: 1000000",
                          "    min_uptime: 0ms"]
        with open(self.file, "w") as f:
            f.write("\n".join(lines) + "\n")

    write_config = write_file

    def apply_edit(self, changed):
        pass   # the daemon sees the save and applies it

    def start_cluster(self, name, server, port, n):
        out = os.path.join(self.home, "out", name + ".out.log")
        lines = [
            "name: %s" % PROJECT,
            "apps:",
            "  %s:" % name,
            "    cmd: [%s]" % ", ".join(yaml_str(x) for x in (common.NODE, server, str(port))),
            "    cwd: %s" % yaml_str(self.home),
            "    mode: cluster",
            "    instances: %d" % n,
            "    listen: [%s]" % yaml_str("127.0.0.1:%d" % port),
            '    ready: { log: "^listening" }',
            "    stop_timeout: 5s",
            "    env: {%s}" % ", ".join("%s: %s" % (k, yaml_str(v)) for k, v in self.app_env().items()),
            "    out_file: %s" % yaml_str(out),
            "    log_max_size: 0",
        ]
        # BENCH_ECO_SURGE=2: `rollout: { max_surge: 2 }` (both new instances
        # at once) instead of the default one at a time.
        surge = os.environ.get("BENCH_ECO_SURGE")
        if surge:
            lines.append("    rollout: { max_surge: %d }" % int(surge))
        with open(self.file, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.eco("up", "-f", self.file)

    def instances(self):
        rows = json.loads(self.eco("ls", "--json").stdout or b"[]")
        return [(r["app"], r.get("pid"), r["status"]) for r in rows if r.get("project") == PROJECT]

    def reload(self, name):
        return self.eco("reload", name, check=False)

    def pidfile(self):
        return os.path.join(self.env["ECO_HOME"], "daemon.pid")

    def start_daemon(self):
        self.write_file([])
        self.eco("up", "-f", self.file)
        common.wait_for(lambda: os.path.exists(self.pidfile()), 30, what="eco daemon.pid")
        common.wait_for(lambda: self.eco("ls", "--json", check=False).returncode == 0, 30,
                        what="eco ls")

    def start_apps(self, apps):
        self.write_file(apps)
        self.eco("up", "-f", self.file)

    def statuses(self):
        rows = json.loads(self.eco("ls", "--json").stdout or b"[]")
        return {r["app"]: r["status"] for r in rows if r.get("project") == PROJECT}

    def list_argv(self):
        return [self.bin, "ls", "--json"]

    def stop_daemon(self):
        if os.path.exists(self.pidfile()):
            self.eco("kill", timeout=60, check=False)
            time.sleep(0.05)


class EcoBase(Eco):
    """An earlier eco build (ECO_BASE_BIN) measured beside this one, so a
    regression is read in one run on one machine."""
    name = "eco-base"
    bin = os.environ.get("ECO_BASE_BIN", "")

    def missing(self):
        if not self.bin:
            return "ECO_BASE_BIN is not set"
        return super().missing()
