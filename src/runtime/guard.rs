//! The guardian of `eco up -F`: a small process (`eco __guard`) that
//! outlives a killed `up -F` by a moment. It waits for its stdin, a pipe
//! only `up -F` holds, to close; whenever `up -F` ends (even by `kill -9`)
//! it kills whatever is left of its apps: the cgroup subtree, or without
//! cgroups every process carrying `up -F`'s spawn mark.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use super::cgroup::Subtree;
use super::reaper::Reaper;

/// The running guardian, from `up -F`'s side: dropping it lets it act.
pub struct Guardian {
    pipe: Option<ChildStdin>,
    _child: Child,
    exit: tokio::sync::oneshot::Receiver<crate::state::Exit>,
}

impl Guardian {
    /// Starts `eco __guard` for a world (its cgroup subtree, its mark prefix).
    pub fn start(
        reaper: &Reaper,
        cgroup: Option<&std::path::Path>,
        mark: &str,
    ) -> std::io::Result<Guardian> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("__guard").arg("--mark").arg(mark);
        if let Some(path) = cgroup {
            command.arg("--cgroup").arg(path);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let (mut child, exit) = reaper.spawn(&mut command)?;
        Ok(Guardian {
            pipe: child.stdin.take(),
            _child: child,
            exit,
        })
    }

    /// Lets the guardian clean up and waits (bounded) for it to end.
    pub async fn finish(mut self) {
        drop(self.pipe.take());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), &mut self.exit).await;
    }
}

/// `eco __guard`: waits for stdin to close, then kills what is left.
pub fn run(cgroup: Option<PathBuf>, mark: &str) -> i32 {
    // Out of the terminal's session: a Ctrl-C or a hang-up that ends
    // `up -F` must not end its guardian first.
    let _ = nix::unistd::setsid();
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    if let Some(path) = cgroup {
        Subtree::at(path).remove();
    }
    crate::runtime::leftovers::kill_marked(mark);
    0
}
