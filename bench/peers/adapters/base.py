"""The neutral app description and the interface every manager adapter fills in."""
import dataclasses
import os
import time

from .. import common


@dataclasses.dataclass
class App:
    name: str
    cmd: list            # argv; cmd[0] is an absolute path
    fast_restart: bool = False   # restart delay 0, huge max restarts, no min uptime
    out_file: str = None         # where stdout must land (None: a file the adapter picks)
    env: dict = None             # extra environment, over the run markers


class Manager:
    """One manager under test, with a private home for one run.

    Life of an instance: setup() -> start_daemon() -> start_apps() ... -> teardown().
    teardown() is idempotent and also registered with common.on_cleanup.
    """
    name = "?"
    online_word = "online"
    # Scenarios 7a/7b (cluster, reload): None if the manager runs N instances
    # of a server on one port and has a rolling reload, else why not.
    cluster_missing = "no shared-port cluster mode"
    # Scenario 7c (edit): how an edited file reaches the manager, None if not measured.
    edit_how = None

    def __init__(self):
        self.home = None
        self.env = None
        self.torn_down = True

    # -- availability -------------------------------------------------
    def missing(self):
        """None if usable, else a reason it cannot run."""
        return None

    def version(self):
        return "?"

    # -- life cycle ---------------------------------------------------
    def setup(self):
        self.home = common.tmpdir(self.name)
        self.env = common.base_env(self.home)
        self.torn_down = False
        common.on_cleanup(self.teardown)

    def start_daemon(self):
        """Start the daemon with no apps and return once it answers."""
        raise NotImplementedError

    def start_apps(self, apps):
        """Issue the manager's normal 'start these apps' command; returns when the CLI returns."""
        raise NotImplementedError

    def statuses(self):
        """{app name: status} from the manager's own listing (one CLI call)."""
        raise NotImplementedError

    def list_argv(self):
        """The read-only listing command timed in the CLI latency scenario."""
        raise NotImplementedError

    def stop_daemon(self):
        raise NotImplementedError

    def out_path(self, app):
        """The file where app's stdout ends up."""
        return app.out_file or os.path.join(self.home, "out", app.name + ".out.log")

    def teardown(self):
        if self.torn_down:
            return
        self.torn_down = True
        try:
            self.stop_daemon()
        finally:
            left = common.kill_leftovers(self.home)
            if left:
                common.log("  %s: killed %d process(es) left after its own stop: %s"
                           % (self.name, len(left), "; ".join(left[:3])))
            if self.home:
                common.remove_tmpdir(self.home)

    # -- cluster, reload, edit (7a-7c) --------------------------------
    def start_cluster(self, name, server, port, n):
        """Run `node server PORT` as n instances sharing 127.0.0.1:PORT; returns when the CLI returns."""
        raise NotImplementedError

    def instances(self):
        """[(app name, pid, status)] for every instance, from the manager's own listing."""
        raise NotImplementedError

    def reload(self, name):
        """The manager's rolling reload of app `name`; returns the CompletedProcess."""
        raise NotImplementedError

    def write_config(self, apps):
        """(Re)write the manager's file for apps, without telling the manager."""
        raise NotImplementedError

    def apply_edit(self, changed):
        """After write_config: whatever the manager needs to apply the edit of app `changed`."""
        raise NotImplementedError

    def app_env_of(self, app):
        return {**self.app_env(), **(app.env or {})}

    # -- helpers ------------------------------------------------------
    def wait_online(self, names, timeout=120):
        """Poll the listing until every name in names is online; return the number of polls."""
        names = set(names)
        polls = 0
        end = time.monotonic() + timeout
        while True:
            polls += 1
            st = self.statuses()
            if all(st.get(n) == self.online_word for n in names):
                return polls
            if time.monotonic() > end:
                bad = {n: st.get(n) for n in names if st.get(n) != self.online_word}
                raise TimeoutError("%s: not online after %d s: %s" % (
                    self.name, timeout, dict(list(bad.items())[:5])))
            time.sleep(0.005)

    def own_pids(self):
        return common.manager_pids(self.home)

    def app_env(self):
        return common.app_env(self.home)
