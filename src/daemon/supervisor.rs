//! The daemon speaks sd_notify to its own supervisor (systemd, when
//! `eco startup`'s unit runs it with `Type=notify`): READY=1 once every
//! project is restored, STATUS= with counts, WATCHDOG=1 pings when
//! WATCHDOG_USEC is set, RELOADING=1/READY=1 around a SIGHUP reload, and
//! STOPPING=1 at shutdown. Without NOTIFY_SOCKET it does nothing.

use std::time::Duration;

use crate::runtime::notify;

/// The daemon's own supervisor, if it has one.
#[derive(Clone, Debug, Default)]
pub struct Supervisor {
    socket: Option<String>,
    /// WATCHDOG_USEC, when it applies to this process.
    pub watchdog: Option<Duration>,
}

impl Supervisor {
    /// Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the
    /// environment (apps never inherit them: `spawn` removes them).
    pub fn from_env() -> Supervisor {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && ours)
            .map(Duration::from_micros);
        Supervisor { socket, watchdog }
    }

    /// Sends `text`; failures are logged, never fatal.
    pub fn send(&self, text: &str) {
        if let Some(socket) = &self.socket
            && let Err(err) = notify::send(socket, text, &[])
        {
            tracing::warn!(%err, "cannot notify the supervisor");
        }
    }

    /// RELOADING=1 with the monotonic time systemd asks for.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1000
            })
            .unwrap_or(0);
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// Pings the watchdog at half its interval until the daemon ends.
    pub async fn ping_watchdog(self, stop: tokio_util::sync::CancellationToken) {
        let Some(every) = self.watchdog else { return };
        let mut tick = tokio::time::interval(every / 2);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.send("WATCHDOG=1"),
            }
        }
    }
}
