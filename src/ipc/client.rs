//! The CLI's end: connect (starting the daemon when needed), send one
//! request, read the answer(s). Blocking std I/O: a CLI call is one
//! round trip, and no async runtime is worth starting for it.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::codec::{self, CodecError};
use super::proto::{Envelope, PROTOCOL_VERSION, Request, Response};
use crate::paths::{Paths, create_private_dir};

/// How long a command waits for another daemon of its home to end.
const OTHER_DAEMON_LIMIT: Duration = Duration::from_secs(30);

/// How long a command waits for a daemon it started.
const START_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no eco daemon runs for {home}")]
    NotRunning { home: String },
    #[error("the eco daemon did not come up within {secs} s; see {log}")]
    DidNotStart { secs: u64, log: String },
    #[error("cannot start the eco daemon: {0}")]
    Spawn(std::io::Error),
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
}

impl Client {
    /// Connects; starts the daemon first if none runs and `start` is set.
    pub fn connect(paths: &Paths, start: bool) -> Result<Client, ClientError> {
        let log = paths.daemon_log().display().to_string();
        if let Ok(stream) = UnixStream::connect(paths.socket()) {
            return Client::wrap(stream, log);
        }
        if !start {
            return Err(ClientError::NotRunning {
                home: paths.home.display().to_string(),
            });
        }
        let mut daemon = spawn_daemon(paths)?;
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(stream) = UnixStream::connect(paths.socket()) {
                return Client::wrap(stream, log);
            }
            if Instant::now() > deadline {
                return Err(ClientError::DidNotStart {
                    secs: START_LIMIT.as_secs(),
                    log,
                });
            }
            // The daemon we started gave way to another one (which holds the
            // lock); if that one is only dying (a killed daemon's last
            // threads), start ours again once it is gone.
            if let Ok(Some(_)) = daemon.try_wait() {
                std::thread::sleep(Duration::from_millis(20));
                if UnixStream::connect(paths.socket()).is_err() {
                    daemon = spawn_daemon(paths)?;
                }
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    }

    fn wrap(stream: UnixStream, log: String) -> Result<Client, ClientError> {
        let writer = stream
            .try_clone()
            .map_err(|e| ClientError::Io(e, log.clone()))?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            log,
        })
    }

    /// A handle on the connection, to shut it down from another thread.
    pub fn stream_handle(&self) -> Option<UnixStream> {
        self.writer.try_clone().ok()
    }

    /// Sends the request.
    pub fn send(&mut self, request: Request) -> Result<(), ClientError> {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request,
        };
        codec::write_blocking(&mut self.writer, &envelope).map_err(|e| self.codec_error(e))
    }

    /// Reads the next response; `None` when the daemon closed the connection.
    pub fn receive(&mut self) -> Result<Option<Response>, ClientError> {
        codec::read_blocking(&mut self.reader).map_err(|e| self.codec_error(e))
    }

    fn codec_error(&self, err: CodecError) -> ClientError {
        match err {
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

/// Starts `eco daemon` detached: its own session (it calls setsid), stdio
/// to `daemon.log`. If two commands race, the daemon lock keeps one.
fn spawn_daemon(paths: &Paths) -> Result<std::process::Child, ClientError> {
    // A daemon whose home was removed is still stopping its apps: one
    // daemon per ECO_HOME path at any moment, so wait for it to be gone.
    crate::daemon::leftovers::wait_for_others(&paths.home, OTHER_DAEMON_LIMIT);
    create_private_dir(&paths.home).map_err(ClientError::Spawn)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .map_err(ClientError::Spawn)?;
    let err = log.try_clone().map_err(ClientError::Spawn)?;
    let exe = std::env::current_exe().map_err(ClientError::Spawn)?;
    Command::new(exe)
        .arg("daemon")
        .env("ECO_HOME", &paths.home)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(ClientError::Spawn)
}
