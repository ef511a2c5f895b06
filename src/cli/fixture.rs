//! `eco __fixture-http`: a tiny HTTP server for eco's own tests and
//! benchmarks (they need nothing beyond sh and this binary). It serves on
//! the socket eco hands down (fd 3, LISTEN_FDS), answers every GET with its
//! pid and instance, reports `READY=1` when NOTIFY_SOCKET is set, and on
//! SIGTERM finishes the request in hand, then exits 0. Not for production.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigSet, Signal};

/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);

#[allow(unsafe_code)]
fn inherited_listener() -> Result<TcpListener> {
    let fds: i32 = std::env::var("LISTEN_FDS")
        .context("LISTEN_FDS is not set: run me as a cluster app with `listen`")?
        .parse()
        .context("LISTEN_FDS is not a number")?;
    let pid: u32 = std::env::var("LISTEN_PID")
        .context("LISTEN_PID is not set")?
        .parse()?;
    if fds < 1 || pid != std::process::id() {
        bail!("LISTEN_FDS={fds} LISTEN_PID={pid}: the sockets are not for this process");
    }
    // SAFETY: LISTEN_FDS/LISTEN_PID say fd 3 was handed to this very process
    // (systemd's protocol); nothing else in it owns fd 3.
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    Ok(TcpListener::from(fd))
}

pub fn serve_http() -> Result<i32> {
    // Block SIGTERM here and take it on a thread: the accept loop checks
    // the flag between requests, so a request in hand is always finished.
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.thread_block()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        if term.wait().is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let listener = inherited_listener()?;
    listener.set_nonblocking(true)?;
    let instance = std::env::var("ECO_INSTANCE").unwrap_or_default();
    println!(
        "fixture pid={} LISTEN_PID={} LISTEN_FDS={} LISTEN_FDNAMES={}",
        std::process::id(),
        std::env::var("LISTEN_PID").unwrap_or_default(),
        std::env::var("LISTEN_FDS").unwrap_or_default(),
        std::env::var("LISTEN_FDNAMES").unwrap_or_default()
    );
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        super::notify(&["READY=1".to_owned()], &[])?;
    }
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, &instance);
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = std::os::fd::AsFd::as_fd(&listener);
                let mut polls = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(
                    &mut polls,
                    nix::poll::PollTimeout::from(POLL.as_millis() as u16),
                );
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(0)
}

fn answer(stream: TcpStream, instance: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    // The request head ends with an empty line.
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = format!("pid {} instance {instance}\n", std::process::id());
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// `eco __fixture-daemonize`: what a server with `daemonize yes` does, for
/// eco's containment tests. The launcher starts the daemon in a new
/// session and exits 0 at once; the daemon writes its pid file (when
/// asked) and runs until signalled. With `retitle`, the daemon re-executes
/// itself with an empty environment, as a server that rewrites its title
/// over its environment leaves nothing readable in /proc/PID/environ.
pub fn daemonize(pid_file: Option<&std::path::Path>, retitle: bool) -> Result<i32> {
    const DAEMON: &str = "ECO_FIXTURE_DAEMON";
    if std::env::var_os(DAEMON).is_none() {
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("__fixture-daemonize");
        if let Some(file) = pid_file {
            command.arg("--pid-file").arg(file);
        }
        if retitle {
            command.arg("--retitle").env_clear();
        }
        command
            .env(DAEMON, "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        return Ok(0);
    }
    let _ = nix::unistd::setsid();
    if let Some(file) = pid_file {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, file)?;
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
