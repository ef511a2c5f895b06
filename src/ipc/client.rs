//! The CLI's end: connect (starting the daemon when needed), send one
//! request, read the answer(s). Blocking std I/O: a CLI call is one
//! round trip, and no async runtime is worth starting for it.
//!
//! A daemon that sends nothing for [`DEFAULT_TIMEOUT`] (`ECO_TIMEOUT`) is
//! given up on. The timer counts silence, not work: it starts again at
//! each frame (it is the socket's read timeout, per read), and a busy
//! daemon sends [`Response::Working`] (or, during a long request,
//! [`Response::Progress`]) at least every 400 ms, so silence means a stuck
//! (or stopped) one. A command starts the daemon at
//! most once, and shows the daemon's own error when it dies at start.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::codec::{self, CodecError};
use super::proto::{Envelope, PROTOCOL_VERSION, Progress, Request, Response, Warning};
use crate::home::{self, HomeError, Open};
use crate::paths::Paths;

/// How long a command waits for another daemon of its home to end.
const OTHER_DAEMON_LIMIT: Duration = Duration::from_secs(30);

/// How long a command waits for a daemon it started to listen (the daemon
/// first stops what a dead predecessor left, and may wait for a stopping
/// one to finish).
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long the daemon may stay silent before a command gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no eco daemon runs for {home}")]
    NotRunning { home: String },
    #[error("the eco daemon did not come up within {secs} s; see {log}")]
    DidNotStart { secs: u64, log: String },
    #[error("the eco daemon exited at start:\n{output}\n  help: the whole log is {log}")]
    DiedAtStart { output: String, log: String },
    #[error("cannot start the eco daemon: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot connect to {socket}: {source}")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error(
        "daemon not responding (pid {pid}, state {state}): nothing received for {secs} s\n  help: `kill -CONT {pid}` if it was stopped, or `kill -9 {pid}`; ECO_TIMEOUT sets the wait"
    )]
    NotResponding {
        pid: String,
        state: String,
        secs: u64,
    },
    #[error("lost the connection to the daemon: {0}; see {log}", log = .1)]
    Io(std::io::Error, String),
    #[error("a message to or from the daemon is malformed: {0}")]
    Malformed(CodecError),
}

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    log: String,
    paths: Paths,
    timeout: Duration,
    /// Warnings received before the answer, for the command to show.
    warnings: Vec<Warning>,
    /// Told of each progress frame (see [`Client::on_progress`]).
    progress: Option<Box<dyn FnMut(Progress) + Send>>,
    /// The daemon's other version was told (or is this command's subject).
    version_told: bool,
}

/// `ECO_TIMEOUT` (`2s`, `500ms`, or milliseconds), else [`DEFAULT_TIMEOUT`].
pub fn timeout() -> Duration {
    std::env::var("ECO_TIMEOUT")
        .ok()
        .and_then(|t| crate::config::units::parse_duration(&t))
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// True when nothing listens on the socket (as opposed to a refusal).
fn nobody_listens(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

impl Client {
    /// Connects; starts the daemon first if none runs and `start` is set.
    /// The home is checked first (see `crate::home`): a home of another
    /// user's, or a link, is refused before anything is read or started.
    pub fn connect(paths: &Paths, start: bool) -> Result<Client, ClientError> {
        let log = paths.daemon_log().display().to_string();
        home::check_socket_path(&paths.socket())?;
        let exists = home::check(&paths.home)?;
        let socket = paths.socket();
        match UnixStream::connect(&socket) {
            Ok(stream) => return Client::wrap(stream, paths),
            Err(err) if exists && !nobody_listens(&err) => {
                return Err(ClientError::Connect {
                    socket: socket.display().to_string(),
                    source: err,
                });
            }
            Err(_) => {}
        }
        if !start {
            return Err(ClientError::NotRunning {
                home: paths.home.display().to_string(),
            });
        }
        // A daemon of this home may be starting (not listening yet), or
        // stopping after its home was removed: wait for its socket or its
        // end, so that one daemon per home runs at any moment.
        let others_limit = Instant::now() + OTHER_DAEMON_LIMIT;
        while !crate::runtime::leftovers::other_daemons(&paths.home).is_empty()
            && Instant::now() < others_limit
        {
            if let Ok(stream) = UnixStream::connect(&socket) {
                return Client::wrap(stream, paths);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        home::prepare(&paths.home)?;
        let (mut daemon, log_start) = spawn_daemon(paths)?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(stream) = UnixStream::connect(&socket) {
                return Client::wrap(stream, paths);
            }
            if let Ok(Some(_)) = daemon.try_wait() {
                // Ours gave way to another daemon (it holds the lock and
                // listens by now), or died: then say why, in its words.
                if let Ok(stream) = UnixStream::connect(&socket) {
                    return Client::wrap(stream, paths);
                }
                return Err(ClientError::DiedAtStart {
                    output: log_since(paths, log_start),
                    log,
                });
            }
            if Instant::now() > deadline {
                return Err(ClientError::DidNotStart {
                    secs: START_LIMIT.as_secs(),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    fn wrap(stream: UnixStream, paths: &Paths) -> Result<Client, ClientError> {
        let log = paths.daemon_log().display().to_string();
        let timeout = timeout();
        let writer = stream
            .try_clone()
            .map_err(|e| ClientError::Io(e, log.clone()))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| ClientError::Io(e, log.clone()))?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            log,
            paths: paths.clone(),
            timeout,
            warnings: Vec::new(),
            progress: None,
            version_told: false,
        })
    }

    /// Warnings the daemon sent so far (taken).
    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    /// Hands each progress frame to `show` (without it they are skipped).
    pub fn on_progress(&mut self, show: impl FnMut(Progress) + Send + 'static) {
        self.progress = Some(Box::new(show));
    }

    /// A handle on the connection, to shut it down from another thread.
    pub fn stream_handle(&self) -> Option<UnixStream> {
        self.writer.try_clone().ok()
    }

    /// Sends the request.
    pub fn send(&mut self, request: Request) -> Result<(), ClientError> {
        // `version` and `update` are about versions: they say it themselves.
        self.version_told |= matches!(request, Request::Version | Request::Update);
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request,
            eco: Some(crate::version::current().to_owned()),
        };
        codec::write_blocking(&mut self.writer, &envelope).map_err(|e| self.codec_error(e))
    }

    /// Reads the next response (heartbeats skipped, progress handed to
    /// [`Client::on_progress`], warnings kept for [`Client::take_warnings`]);
    /// `None` when the daemon closed the connection.
    pub fn receive(&mut self) -> Result<Option<Response>, ClientError> {
        loop {
            match codec::read_blocking(&mut self.reader).map_err(|e| self.codec_error(e))? {
                Some(Response::Working) => {}
                Some(Response::Progress(progress)) => {
                    if let Some(show) = self.progress.as_mut() {
                        show(progress);
                    }
                }
                Some(Response::Warning(Warning::VersionDiffers { cli, daemon })) => {
                    // Once per command, whichever command it is.
                    if !std::mem::replace(&mut self.version_told, true) {
                        eprintln!(
                            "eco: this eco is {cli}, the running daemon is {daemon}; run `eco update` to replace the daemon (apps keep running)"
                        );
                    }
                }
                Some(Response::Warning(warning)) => self.warnings.push(warning),
                other => return Ok(other),
            }
        }
    }

    fn codec_error(&self, err: CodecError) -> ClientError {
        match err {
            CodecError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                not_responding(&self.paths, self.timeout)
            }
            CodecError::Io(e) => ClientError::Io(e, self.log.clone()),
            other => ClientError::Malformed(other),
        }
    }

    /// One request, one response. A daemon that refuses a client answers
    /// and closes before reading the request, so a failed send still reads
    /// what it said.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let sent = self.send(request);
        match self.receive() {
            Ok(Some(response)) => Ok(response),
            Ok(None) => {
                sent?;
                Err(ClientError::Io(
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer"),
                    self.log.clone(),
                ))
            }
            Err(err) => {
                sent?;
                Err(err)
            }
        }
    }
}

/// The error for a daemon that sent nothing in time: its pid and its
/// state from /proc (`stopped` after a SIGSTOP).
fn not_responding(paths: &Paths, timeout: Duration) -> ClientError {
    let pid = std::fs::read_to_string(paths.pid())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let state = pid
        .and_then(crate::procfs::state)
        .map_or("unknown", crate::procfs::state_name);
    ClientError::NotResponding {
        pid: pid.map_or_else(|| "unknown".into(), |p| p.to_string()),
        state: state.to_owned(),
        secs: timeout.as_secs().max(1),
    }
}

/// What the daemon wrote to its log since `start` (its last 20 lines).
fn log_since(paths: &Paths, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(paths.daemon_log()) {
        // Shorter than it was: the daemon rotated it, all of it is new.
        let len = file.metadata().map_or(0, |m| m.len());
        let start = if len < start { 0 } else { start };
        if file.seek(SeekFrom::Start(start)).is_err() {
            return "  (it wrote nothing)".into();
        }
        let mut bytes = Vec::new();
        let _ = file.take(1 << 20).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "  (it wrote nothing)".into();
    }
    lines[lines.len().saturating_sub(20)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts `eco daemon` detached: its own session (it calls setsid), stdio
/// to `daemon.log`. If two commands race, the daemon lock keeps one. The
/// caller's soft descriptor limit is handed down for the apps (the daemon
/// raises its own). Returns the child and where its output starts in the log.
fn spawn_daemon(paths: &Paths) -> Result<(std::process::Child, u64), ClientError> {
    let log = home::open(&paths.daemon_log(), Open::Append)?;
    let start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let err = log.try_clone().map_err(ClientError::Spawn)?;
    let exe = std::env::current_exe().map_err(ClientError::Spawn)?;
    let mut command = Command::new(exe);
    command
        .arg("daemon")
        .env("ECO_HOME", &paths.home)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        command.env(crate::paths::APP_NOFILE_ENV, soft.to_string());
    }
    let child = command.spawn().map_err(ClientError::Spawn)?;
    Ok((child, start))
}
