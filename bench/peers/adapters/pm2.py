"""PM2 7.x from bench/.peers/pm2, with a private PM2_HOME per run."""
import json
import os
import shutil
import time

from .. import common
from .base import Manager

PM2_BIN = os.path.join(common.PEERS_DIR, "pm2", "node_modules", "pm2", "bin", "pm2")


class PM2(Manager):
    name = "pm2"
    online_word = "online"
    cluster_missing = None
    edit_how = "`pm2 reload ecosystem.json --update-env --only APP` right after the write"

    def missing(self):
        if not shutil.which("node"):
            return "node is not installed"
        if not os.path.exists(PM2_BIN):
            return "not installed (%s missing)" % PM2_BIN
        return None

    def version(self):
        with open(os.path.join(os.path.dirname(PM2_BIN), "..", "package.json")) as f:
            v = json.load(f)["version"]
        node = common.run(["node", "--version"], common.base_env()).stdout.decode().strip()
        return "pm2 %s (node %s)" % (v, node)

    def setup(self):
        super().setup()
        self.env["PM2_HOME"] = os.path.join(self.home, "pm2home")
        os.makedirs(self.env["PM2_HOME"])
        os.makedirs(os.path.join(self.home, "out"))

    def pm2(self, *args, timeout=120, check=True):
        return common.run([PM2_BIN, *args], self.env, timeout=timeout, check=check)

    def start_daemon(self):
        self.pm2("ping")   # launches the God daemon if none runs
        common.wait_for(lambda: os.path.exists(os.path.join(self.env["PM2_HOME"], "pm2.pid")),
                        30, what="pm2.pid")

    def start_apps(self, apps):
        self.pm2("start", self.write_config(apps))

    def write_config(self, apps):
        conf = {"apps": []}
        for a in apps:
            out = self.out_path(a)
            entry = {
                "name": a.name,
                "script": a.cmd[0],
                "args": a.cmd[1:],
                "interpreter": "none",
                "exec_mode": "fork",
                "cwd": self.home,
                "env": self.app_env_of(a),
                "autorestart": True,
                "out_file": out,
                "error_file": out[:-len(".out.log")] + ".err.log" if out.endswith(".out.log") else out + ".err",
                "merge_logs": True,   # no -<id> suffix on the file names
                "vizion": False,      # the scratch dir is inside a git repo: no git probing
            }
            if a.fast_restart:
                entry.update(restart_delay=0, max_restarts=1000000, min_uptime=0)
            conf["apps"].append(entry)
        return self._write(conf)

    def _write(self, conf):
        path = os.path.join(self.home, "ecosystem.json")
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def apply_edit(self, changed):
        # `pm2 start FILE` and `pm2 reload FILE --update-env` both restart every
        # app of the file; --only limits it to the edited one, as eco does.
        self.pm2("reload", os.path.join(self.home, "ecosystem.json"), "--update-env",
                 "--only", changed)

    def start_cluster(self, name, server, port, n):
        out = os.path.join(self.home, "out", name + ".out.log")
        conf = {"apps": [{
            "name": name,
            "script": server,            # run by PM2's node, as a cluster worker
            "args": [str(port)],         # the server binds it; PM2's cluster module shares it
            "exec_mode": "cluster",
            "instances": n,
            "cwd": self.home,
            "env": self.app_env(),
            "kill_timeout": 5000,        # eco's stop_timeout: 5s (PM2's default: 1.6 s)
            "out_file": out,
            "error_file": out[:-len(".out.log")] + ".err.log",
            "merge_logs": True,
            "vizion": False,
        }]}
        self.pm2("start", self._write(conf))

    def jlist(self):
        out = self.pm2("jlist").stdout.decode(errors="replace")
        i = out.find("[")
        return json.loads(out[i:]) if i >= 0 else []

    def instances(self):
        return [(p["name"], p.get("pid"), p.get("pm2_env", {}).get("status")) for p in self.jlist()]

    def reload(self, name):
        return self.pm2("reload", name, check=False)

    def statuses(self):
        return {p["name"]: p.get("pm2_env", {}).get("status") for p in self.jlist()}

    def list_argv(self):
        return [PM2_BIN, "jlist"]

    def stop_daemon(self):
        pidfile = os.path.join(self.env["PM2_HOME"], "pm2.pid")
        if os.path.exists(pidfile):
            # `pm2 kill` stops every app, then the God daemon
            self.pm2("kill", timeout=60, check=False)
            time.sleep(0.2)
