//! PM2's JavaScript ecosystem files (`ecosystem.config.js`, `.cjs`,
//! `.mjs`), evaluated by the machine's `node` in a child process that
//! prints the exports as JSON: no config code runs inside eco.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::state::Exit;

/// The script node runs: load the file (require, or import for ES
/// modules) and send one frame on fd 3: `{"exports": ...}` or
/// `{"error": STACK}`. What the file itself prints goes to stdout and
/// stderr, apart from the exports (PM2 shows it and goes on). Node exits
/// once the exports are sent, as PM2 goes on once `require` returns.
/// It runs from a file, not `node -e`, which would make `module`, `require`
/// and every built-in module globals that an ES module config then sees
/// (`module.exports` in a `.mjs` must get node's own ReferenceError).
const EVALUATE: &str = r"
const req = require;
const fs = req('fs');
const url = req('url');
const file = process.argv[2];
const send = (frame) => {
  const bytes = Buffer.from(JSON.stringify(frame));
  for (let at = 0; at < bytes.length;) at += fs.writeSync(3, bytes, at);
};
const esm = () => import(url.pathToFileURL(file).href);
async function load() {
  if (file.endsWith('.mjs')) return esm();
  try { return req(file); } catch (e) {
    if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) return esm();
    throw e;
  }
}
const failed = (e) => {
  send({ error: String((e && e.stack) || e) });
  process.exit(3);
};
load().then((m) => {
  if (m && m[Symbol.toStringTag] === 'Module') m = 'default' in m ? m.default : { ...m };
  try { send({ exports: m === undefined ? null : m }); } catch (e) { failed(e); }
  process.exit(0);
}, failed);
";

/// How long a config file may take to evaluate.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The most JSON eco reads back (as for any ecosystem file).
const MAX_OUTPUT: u64 = super::MAX_FILE_BYTES;

/// The most of node's stderr kept for the message (the first lines).
const MAX_ERRORS: usize = 64 * 1024;

/// How often the read loop checks whether node has exited.
const TICK: Duration = Duration::from_millis(10);

/// How long the sweep keeps looking for processes the evaluation started.
const SWEEP_LIMIT: Duration = Duration::from_secs(2);

/// The variable that marks every process an evaluation starts: a child the
/// file spawns with `detached: true` leaves node's process group (and, with
/// `unref()`, outlives node), but keeps its environment, so the sweep finds
/// it by this mark.
pub const EVAL_MARK: &str = "ECO_CONFIG_EVAL_ID";

static EVAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether eco reads `file` as JavaScript.
pub fn is_js(file: &Path) -> bool {
    matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("js" | "cjs" | "mjs")
    )
}

/// Why a JavaScript file could not be read: (message, hint).
pub type JsError = (String, Option<String>);

/// A file's exports, and what it printed while node evaluated it.
#[derive(Debug)]
pub struct Evaluated {
    pub exports: serde_json::Value,
    /// Lines from stdout and stderr (node's warnings among them).
    pub printed: Vec<String>,
}

/// The most printed lines shown.
const MAX_PRINTED: usize = 10;

/// Starts node and delivers its exit. Where a process has one place that
/// waits for children (the daemon's reaper, `waitpid(-1)`), node must be
/// started through it, or that place takes node's exit first.
pub trait Runner: Sync {
    fn spawn(&self, command: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)>;

    /// True when orphans of node come to this process (a subreaper) and
    /// nothing else starts children meanwhile, so the sweep may end any new
    /// child in a session of its own: a detached child that also cleared
    /// its environment (and so lost [`EVAL_MARK`]).
    fn sweeps_adopted(&self) -> bool {
        false
    }
}

/// The CLI's runner: node is waited for by a thread of its own.
pub struct OwnChild;

impl Runner for OwnChild {
    fn sweeps_adopted(&self) -> bool {
        true
    }

    fn spawn(&self, command: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)> {
        // Node's orphans come here rather than to init, where the sweep
        // finds them. The CLI is short-lived and starts nothing else while
        // node runs.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        let child = command.spawn()?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            loop {
                let exit = match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => Exit::Signal(signal as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                };
                let _ = tx.send(exit);
                return;
            }
        });
        Ok((child, rx))
    }
}

/// Runs `node` on `file` and parses what it prints (the CLI's way).
pub fn evaluate(file: &Path) -> Result<Evaluated, JsError> {
    evaluate_with(file, &OwnChild)
}

/// Runs `node` on `file`, started by `runner`, and parses what it prints.
/// Node runs in a process group of its own, with [`EVAL_MARK`] in its
/// environment; whatever it started is killed once it has exited (or after
/// [`TIMEOUT`]), detached children included. Never waits on a pipe that a
/// child of node still holds once node has exited.
pub fn evaluate_with(file: &Path, runner: &dyn Runner) -> Result<Evaluated, JsError> {
    let node = std::env::var_os("ECO_NODE").unwrap_or_else(|| "node".into());
    let folder = file.parent().unwrap_or(Path::new("/"));
    let mark = format!(
        "{}.{}.{}",
        std::process::id(),
        EVAL_COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    // The exports' own channel: fd 3 in node.
    let (frame_read, frame_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| (format!("cannot create a pipe for node: {e}"), None))?;
    let script = Evaluator::write().map_err(|e| {
        (
            format!(
                "cannot write eco's evaluation script in {}: {e}",
                std::env::temp_dir().display()
            ),
            Some("check that TMPDIR is writable".into()),
        )
    })?;
    let mut command = Command::new(&node);
    command
        .arg(&script.path)
        .arg(file)
        .current_dir(folder)
        .env(EVAL_MARK, &mark)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    on_fd_3(&mut command, frame_write.as_raw_fd());
    let before = if runner.sweeps_adopted() {
        crate::procfs::own_children()
    } else {
        Vec::new()
    };
    let (mut child, mut exit) = runner.spawn(&mut command).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            (
                "node is needed to read a JavaScript ecosystem file, and it is not on PATH".into(),
                Some("install Node.js (or set ECO_NODE to its path), or convert the file once on a machine with node: `eco import ecosystem.config.js > ecosystem.yaml`".into()),
            )
        } else {
            (format!("cannot run node: {err}"), None)
        }
    })?;
    // Node has its copy: EOF comes when node (and what it started) closes it.
    drop(frame_write);
    let group = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let collected = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => collect(frame_read, out.into(), err.into(), &mut exit),
        _ => Err(Collect::Failed(io::Error::other(
            "node's pipes are missing",
        ))),
    };
    // Whatever the file started goes, whether node finished or not.
    sweep(group, &mark);
    if runner.sweeps_adopted() {
        sweep_adopted(&before, group);
    }
    let (status, frame, out, err) = match collected {
        Ok(done) => done,
        Err(Collect::TimedOut) => {
            return Err((
                format!(
                    "node did not finish evaluating {} within {}s",
                    file.display(),
                    TIMEOUT.as_secs()
                ),
                Some("the file must only build its exports (a timer, a server or a loop keeps node running); eco stopped node and everything it started".into()),
            ));
        }
        Err(Collect::TooLarge) => {
            return Err((
                "the file's exports are larger than 1 MiB as JSON".into(),
                None,
            ));
        }
        Err(Collect::Failed(e)) => return Err((format!("cannot read node's output: {e}"), None)),
    };
    let printed = printed_lines(&out, &err);
    outcome(file, &status, &frame, printed)
}

/// The exports, or node's error in words: node's own exception and where
/// it was thrown first, what the file printed (and node's warnings) after.
fn outcome(
    file: &Path,
    status: &Exit,
    frame: &[u8],
    printed: Vec<String>,
) -> Result<Evaluated, JsError> {
    let frame: Option<serde_json::Value> = serde_json::from_slice(frame).ok();
    let error = match frame {
        Some(mut frame) => {
            if let Some(exports) = frame.get_mut("exports") {
                return Ok(Evaluated {
                    exports: exports.take(),
                    printed,
                });
            }
            let stack = frame.get("error").and_then(serde_json::Value::as_str);
            node_error(stack.unwrap_or_default(), &file.display().to_string())
        }
        None => vec![match status {
            Exit::Code(code) => format!(
                "node exited with code {code} before the file's exports were read (does the file call process.exit?)"
            ),
            Exit::Signal(signal) => {
                format!("node was killed by signal {signal} while evaluating the file")
            }
            Exit::Unknown => "node ended before the file's exports were read".to_owned(),
        }],
    };
    let mut message = format!(
        "node could not evaluate the file:\n    {}",
        error.join("\n    ")
    );
    if !printed.is_empty() {
        message.push_str("\n  node also printed:\n    ");
        message.push_str(&printed.join("\n    "));
    }
    Err((
        message,
        Some("fix the error above (PM2 would fail the same way)".into()),
    ))
}

/// Node's error, shortest first: the exception (`SyntaxError: ...` and the
/// lines that explain it), then where it was thrown (node's `FILE:LINE`
/// with the code and a caret, else the first stack frame in the file).
pub fn node_error(stack: &str, file: &str) -> Vec<String> {
    let lines: Vec<&str> = stack.lines().collect();
    let first_at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("at "))
        .unwrap_or(lines.len());
    let (header, frames) = lines.split_at(first_at);
    let is_exception = |line: &&str| {
        line.starts_with(|c: char| c.is_ascii_uppercase())
            && line.split_once(':').is_some_and(|(name, _)| {
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    };
    let (location, exception) = match header.iter().position(is_exception) {
        Some(i) => header.split_at(i),
        None => (&[][..], header),
    };
    let mut out: Vec<String> = exception
        .iter()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .map(|l| (*l).to_owned())
        .collect();
    let location: Vec<&str> = location
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect();
    if location.is_empty() {
        let url = format!("file://{file}");
        let frame = frames
            .iter()
            .find(|l| l.contains(file) || l.contains(&url))
            .or_else(|| frames.first());
        out.extend(frame.map(|l| l.trim().to_owned()));
    } else {
        out.push(format!("at {}", location[0]));
        out.extend(location[1..].iter().map(|l| format!("  {l}")));
    }
    if out.is_empty() {
        out.push("node gave no error message".into());
    }
    out
}

/// What the file printed while evaluated, stdout then stderr, at most
/// [`MAX_PRINTED`] lines (and how many more there were).
fn printed_lines(out: &[u8], err: &[u8]) -> Vec<String> {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    );
    let all: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut shown: Vec<String> = all
        .iter()
        .take(MAX_PRINTED)
        .map(|l| l.chars().take(300).collect())
        .collect();
    if all.len() > MAX_PRINTED {
        shown.push(format!("... and {} more lines", all.len() - MAX_PRINTED));
    }
    shown
}

/// [`EVALUATE`] in a file of its own for one evaluation; removed on drop.
struct Evaluator {
    path: std::path::PathBuf,
}

impl Evaluator {
    fn write() -> io::Result<Evaluator> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!(
            "eco-evaluate-{}-{}.cjs",
            std::process::id(),
            EVAL_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // O_EXCL | O_NOFOLLOW: never writes through what another user left.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let script = Evaluator { path };
        file.write_all(EVALUATE.as_bytes())?;
        Ok(script)
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes `fd` (close-on-exec in eco) node's fd 3.
#[allow(unsafe_code)]
fn on_fd_3(command: &mut Command, fd: RawFd) {
    // SAFETY: plain descriptor calls between fork and exec, async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// What node wrote, up to its exit: (exit, frame on fd 3, stdout, stderr).
type Collected = (Exit, Vec<u8>, Vec<u8>, Vec<u8>);

/// Why collecting node's output stopped early.
enum Collect {
    TimedOut,
    TooLarge,
    Failed(io::Error),
}

/// What node printed, up to its exit: (exit, stdout, stderr). Reads both
/// pipes without blocking; once node has exited, takes what is buffered and
/// stops (a child of node may hold the pipes open for ever).
fn collect(
    frame: OwnedFd,
    out: OwnedFd,
    err: OwnedFd,
    exit: &mut oneshot::Receiver<Exit>,
) -> Result<Collected, Collect> {
    let deadline = Instant::now() + TIMEOUT;
    for fd in [&frame, &out, &err] {
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| Collect::Failed(e.into()))?;
    }
    let mut pipes = [
        Pipe::new(frame, MAX_OUTPUT + 1),
        Pipe::new(out, MAX_ERRORS as u64),
        Pipe::new(err, MAX_ERRORS as u64),
    ];
    loop {
        // Checked before reading: an exit seen here means everything node
        // wrote is already in the pipes (node writes pipes synchronously).
        let ended = match exit.try_recv() {
            Ok(status) => Some(status),
            Err(oneshot::error::TryRecvError::Closed) => Some(Exit::Signal(libc::SIGKILL)),
            Err(oneshot::error::TryRecvError::Empty) => None,
        };
        let mut polled: Vec<PollFd<'_>> = pipes
            .iter()
            .filter(|p| p.open)
            .map(|p| PollFd::new(p.fd.as_fd(), PollFlags::POLLIN))
            .collect();
        if ended.is_none() {
            let wait = deadline.saturating_duration_since(Instant::now()).min(TICK);
            if polled.is_empty() {
                std::thread::sleep(wait);
            } else {
                let wait = PollTimeout::try_from(wait).unwrap_or(PollTimeout::ZERO);
                match poll(&mut polled, wait) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Collect::Failed(e.into())),
                }
            }
        }
        drop(polled);
        for pipe in &mut pipes {
            pipe.read_available().map_err(Collect::Failed)?;
        }
        if pipes[0].bytes.len() as u64 > MAX_OUTPUT {
            return Err(Collect::TooLarge);
        }
        if let Some(status) = ended {
            let [frame, out, err] = pipes;
            return Ok((status, frame.bytes, out.bytes, err.bytes));
        }
        if Instant::now() >= deadline {
            return Err(Collect::TimedOut);
        }
    }
}

/// One of node's pipes, read without blocking.
struct Pipe {
    fd: OwnedFd,
    open: bool,
    bytes: Vec<u8>,
    /// Bytes kept; more are read and dropped (node must not block).
    keep: u64,
}

impl Pipe {
    fn new(fd: OwnedFd, keep: u64) -> Pipe {
        Pipe {
            fd,
            open: true,
            bytes: Vec::new(),
            keep,
        }
    }

    /// Reads what the pipe holds now, until it is empty or closed.
    fn read_available(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        while self.open {
            match nix::unistd::read(&self.fd, &mut chunk) {
                Ok(0) => self.open = false,
                Ok(n) => {
                    let room = usize::try_from(self.keep)
                        .unwrap_or(usize::MAX)
                        .saturating_sub(self.bytes.len());
                    self.bytes.extend_from_slice(&chunk[..n.min(room)]);
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Kills and reaps the children this process adopted while node ran, in a
/// session of their own (`detached: true`): node's escapees, whether or not
/// they kept [`EVAL_MARK`]. `before`: the children it had already.
fn sweep_adopted(before: &[i32], node: i32) {
    let own_session = nix::unistd::getsid(None).ok();
    let adopted: Vec<i32> = crate::procfs::own_children()
        .into_iter()
        .filter(|pid| *pid != node && !before.contains(pid))
        .filter(|pid| nix::unistd::getsid(Some(Pid::from_raw(*pid))).ok() != own_session)
        .collect();
    for pid in &adopted {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + SWEEP_LIMIT;
    for pid in adopted {
        while Instant::now() < deadline {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(TICK),
                _ => break,
            }
        }
    }
}

/// Kills what an evaluation left running: node's process group, then every
/// process that carries the evaluation's mark (and its group), until none is
/// left or [`SWEEP_LIMIT`] passes.
fn sweep(group: i32, mark: &str) {
    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    let needle = format!("{EVAL_MARK}={mark}");
    let deadline = Instant::now() + SWEEP_LIMIT;
    loop {
        let marked: Vec<i32> = crate::procfs::other_pids()
            .filter(|pid| crate::procfs::env_has(*pid, |var| var == needle.as_bytes()))
            .filter(|pid| crate::procfs::alive(*pid))
            .collect();
        if marked.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in marked {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node's error first: the exception, then where (node's FILE:LINE
    /// with the code and caret), however much node printed before it.
    #[test]
    fn node_errors_start_with_the_exception_and_where() {
        let stack = "/srv/eco.config.js:2\nmodule.exports = { apps: [ { name 'a' } ] };\n                                  ^^^\n\nSyntaxError: Unexpected string\n    at wrapSafe (node:internal/modules/cjs/loader:1464:18)\n    at Module._compile (node:internal/modules/cjs/loader:1495:20)";
        assert_eq!(
            node_error(stack, "/srv/eco.config.js"),
            [
                "SyntaxError: Unexpected string",
                "at /srv/eco.config.js:2",
                "  module.exports = { apps: [ { name 'a' } ] };",
                "                                    ^^^",
            ]
        );
        let stack = "ReferenceError: module is not defined in ES module scope\n    at ModuleJob.run (node:internal/x:1:1)\n    at file:///srv/eco.config.mjs:1:1";
        assert_eq!(
            node_error(stack, "/srv/eco.config.mjs"),
            [
                "ReferenceError: module is not defined in ES module scope",
                "at file:///srv/eco.config.mjs:1:1",
            ]
        );
        assert_eq!(node_error("boom", "/srv/x.js"), ["boom"]);
    }

    /// PM2 shows what a config prints and goes on: eco keeps the lines
    /// (stdout, then stderr), at most ten.
    #[test]
    fn printed_lines_are_kept_and_capped() {
        assert_eq!(
            printed_lines(b"hello\n\n", b"(node:1) Warning: x\n"),
            ["hello", "(node:1) Warning: x"]
        );
        let many = "line\n".repeat(25);
        let lines = printed_lines(many.as_bytes(), b"");
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[10], "... and 15 more lines");
    }
}
