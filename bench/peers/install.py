"""Build eco and install the peers into bench/.peers/ when missing.

A peer whose registry cannot be reached (or whose install fails) is skipped
with a message; the suite goes on with the others.
"""
import os
import shutil
import subprocess

from . import common
from .adapters import pm2, shep, supervisord


def _env():
    # Both cores by default (the suite should run alone); set
    # CARGO_BUILD_JOBS=1 to leave one core to other work.
    return dict(os.environ)


def _run(argv, what, cwd=None, timeout=1800):
    common.log("$ " + " ".join(argv))
    try:
        p = subprocess.run(argv, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        common.log("!! %s: %s" % (what, e))
        return False
    if p.returncode != 0:
        tail = p.stdout.decode(errors="replace").strip().splitlines()[-15:]
        common.log("!! %s failed (exit %d):\n   %s" % (what, p.returncode, "\n   ".join(tail)))
        return False
    return True


def build_eco():
    common.log("== building eco (cargo build --release)")
    if not _run(["cargo", "build", "--release", "--bin", "eco"], "cargo build --release",
                cwd=common.REPO):
        common.log("!! eco build failed; using the existing target/release/eco if there is one")


def install_peers(names):
    os.makedirs(common.PEERS_DIR, exist_ok=True)
    if "pm2" in names and not os.path.exists(pm2.PM2_BIN):
        if not shutil.which("npm"):
            common.log("!! skipping pm2: npm is not installed")
        else:
            common.log("== installing pm2@7 into bench/.peers/pm2")
            if not _run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                         os.path.join(common.PEERS_DIR, "pm2"), "pm2@7"],
                        "npm install pm2@7 (is the npm registry reachable?)"):
                common.log("!! skipping pm2")
    if "supervisord" in names and not os.path.exists(supervisord.SUPERVISORD):
        common.log("== installing supervisor==4.3.0 into bench/.peers/venv")
        venv = os.path.join(common.PEERS_DIR, "venv")
        ok = (os.path.exists(os.path.join(venv, "bin", "pip"))
              or _run([common.PYTHON, "-m", "venv", venv], "python3 -m venv"))
        if not (ok and _run([os.path.join(venv, "bin", "pip"), "install", "-q",
                             "supervisor==4.3.0"], "pip install supervisor==4.3.0 (is PyPI reachable?)")):
            common.log("!! skipping supervisord")
    if "shep" in names and not os.path.exists(shep.SHEP_BIN):
        common.log("== installing shep into bench/.peers/shep (cargo install, one job: ~10 min)")
        if not _run(["cargo", "install", "--root", os.path.join(common.PEERS_DIR, "shep"),
                     "shep"], "cargo install shep (is crates.io reachable?)"):
            common.log("!! skipping shep")


def install_wrk():
    """wrk for 7a/7b, from the distribution (Debian/Ubuntu) when it is missing."""
    if shutil.which("wrk"):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        common.log("!! wrk is not installed and apt-get cannot install it here: 7a/7b will be skipped")
        return
    common.log("== installing wrk (apt-get install -y wrk)")
    if not _run(["apt-get", "install", "-y", "wrk"], "apt-get install -y wrk", timeout=600):
        common.log("!! wrk install failed: 7a/7b will be skipped")
