//! The signals a supervisor answers, the same for the daemon and `up -F`:
//! SIGTERM or SIGINT stops every app gracefully (a second one kills them at
//! once), SIGHUP re-reads and applies every applied file, and SIGUSR1,
//! SIGUSR2 are received and ignored (so they never kill eco). SIGPIPE is
//! ignored by the Rust runtime already; apps get the default dispositions.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a received signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM, SIGINT: stop (graceful the first time).
    Stop,
    /// SIGHUP: re-read every applied file.
    Reload,
    /// SIGUSR1, SIGUSR2: nothing.
    Nothing(&'static str),
}

/// The installed handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Installs the handlers; from here on none of these signals kills eco.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal received.
    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.term.recv() => Asked::Stop,
            _ = self.int.recv() => Asked::Stop,
            _ = self.hup.recv() => Asked::Reload,
            _ = self.usr1.recv() => Asked::Nothing("SIGUSR1"),
            _ = self.usr2.recv() => Asked::Nothing("SIGUSR2"),
        }
    }

    /// The next SIGTERM or SIGINT (the others are ignored meanwhile).
    pub async fn next_stop(&mut self) {
        while self.next().await != Asked::Stop {}
    }
}
