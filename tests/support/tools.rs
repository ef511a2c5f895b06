//! The programs the suite runs besides eco, and the one place that finds
//! them. A missing program FAILS the test that needs it, naming what installs
//! it: the suite never skips. `scripts/test` installs all of them first.

use std::path::PathBuf;

use super::root;

/// Every program a test runs (directly, or as an app's `cmd`), and the
/// Debian package that has it. `scripts/test` holds the same table; the
/// test below keeps the two in step.
pub(crate) const TOOLS: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("nginx", "nginx"),
    ("systemd-analyze", "systemd"),
    ("systemd-notify", "systemd"),
    ("setpriv", "util-linux"),
    ("flock", "util-linux"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("setsid", "util-linux"),
    ("ip", "iproute2"),
    ("perl", "perl"),
    ("node", "nodejs"),
    ("python3", "python3"),
    ("chromium", "chromium"),
    ("npm", "npm"),
    ("promtool", "prometheus"),
];

/// Installed with pip into `.ci/venv` (Debian has no package for it).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate";

/// Installed with pip into `.ci/venv` too (`eco serve`'s API against its
/// OpenAPI document).
const SCHEMATHESIS: &str = "schemathesis";

/// The programs of `.ci/venv`.
const PIP_TOOLS: &[&str] = &[KUBERNETES_VALIDATE, SCHEMATHESIS];

/// Folders searched after `PATH`: root's tools (`nginx`, `ip`) live in sbin,
/// which a user's `PATH` often lacks.
const SBIN: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The absolute path of `name`; panics, naming the install command, when
/// this machine lacks it.
pub(crate) fn tool(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| panic!("{}", missing(name)))
}

/// [`tool`] as a string, for an app's `cmd` in a YAML file.
pub(crate) fn tool_str(name: &str) -> String {
    tool(name).display().to_string()
}

/// Fails unless every one of `names` is installed (for programs an app's
/// `cmd` or eco itself runs by name from `PATH`).
pub(crate) fn require(names: &[&str]) {
    for name in names {
        tool(name);
    }
}

/// Where `name` is: `PATH`, then the sbin folders; `kubernetes-validate`
/// first in `.ci/venv/bin` (only it: the venv's python3 is not the system's).
fn find(name: &str) -> Option<PathBuf> {
    let venv = PIP_TOOLS
        .contains(&name)
        .then(|| root().join(".ci/venv/bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    venv.into_iter()
        .chain(std::env::split_paths(&path))
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What is wrong and the command that fixes it.
fn missing(name: &str) -> String {
    let install = if PIP_TOOLS.contains(&name) {
        format!("python3 -m venv .ci/venv && .ci/venv/bin/pip install {name}")
    } else {
        let package = TOOLS
            .iter()
            .find(|(tool, _)| *tool == name)
            .map_or(name, |(_, package)| package);
        format!("apt-get install -y {package}")
    };
    format!(
        "`{name}` is not installed, and this test runs it: run the tests with \
         `scripts/test` (as root it installs what is missing), or install it \
         yourself: `{install}`"
    )
}

#[test]
fn every_program_the_suite_runs_is_installed() {
    let names = TOOLS
        .iter()
        .map(|(name, _)| *name)
        .chain(PIP_TOOLS.iter().copied());
    let lacking: Vec<String> = names.filter(|n| find(n).is_none()).map(missing).collect();
    assert!(lacking.is_empty(), "{}", lacking.join("\n"));
}

#[test]
fn scripts_test_installs_every_program_in_this_table() {
    let script = std::fs::read_to_string(root().join("scripts/test")).expect("scripts/test");
    for (name, package) in TOOLS {
        assert!(
            script
                .lines()
                .any(|l| l.trim() == format!("{name} {package}")),
            "scripts/test has no `{name} {package}` line: add it to its TOOLS"
        );
    }
    for name in PIP_TOOLS {
        assert!(
            script.contains(name),
            "scripts/test does not install {name}"
        );
    }
}
