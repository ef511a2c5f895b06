//! The terminal side of `eco up -F`: every output line as `app.INSTANCE | line`
//! on stdout, life-cycle events on stderr. A writer thread does the writing,
//! so a slow terminal never stalls the engine or the apps.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::runtime::pipe_head::Receipt;
use crate::runtime::{Event, InstanceId, Observer, Stream};

enum Message {
    Out(Vec<u8>),
    Err(String),
}

/// Prints apps' output and events.
pub struct Console {
    tx: Mutex<Option<Sender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    color: bool,
    /// Woken at the first `errored` instance (`up -F --exit-on-error`).
    errored: tokio::sync::Notify,
}

/// ANSI colours cycled over app names.
const PALETTE: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

impl Console {
    pub fn new() -> Console {
        let (tx, rx) = channel::<Message>();
        let writer = std::thread::spawn(move || {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            while let Ok(message) = rx.recv() {
                let mut out = stdout.lock();
                let mut pending = Some(message);
                // Write everything queued before flushing once.
                while let Some(message) = pending.take() {
                    match message {
                        Message::Out(bytes) => {
                            let _ = out.write_all(&bytes);
                        }
                        Message::Err(text) => {
                            let _ = out.flush();
                            let _ = stderr.lock().write_all(text.as_bytes());
                        }
                    }
                    pending = rx.try_recv().ok();
                }
                let _ = out.flush();
            }
        });
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Console {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            color,
            errored: tokio::sync::Notify::new(),
        }
    }

    fn send(&self, message: Message) {
        if let Some(tx) = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.send(message);
        }
    }

    /// A line from eco itself, on stderr.
    pub fn notice(&self, text: &str) {
        let mut line = text.to_owned();
        line.push('\n');
        self.send(Message::Err(line));
    }

    /// Resolves once an instance is errored (at once if one was already).
    pub async fn errored(&self) {
        self.errored.notified().await;
    }

    /// Writes out everything queued and stops the writer.
    pub fn finish(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = writer.join();
        }
    }

    fn prefix(&self, id: &InstanceId) -> String {
        let name = format!("{}.{}", id.app, id.index);
        if self.color {
            let hash = id
                .app
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31) + usize::from(b));
            format!("\x1b[{}m{name}\x1b[0m | ", PALETTE[hash % PALETTE.len()])
        } else {
            format!("{name} | ")
        }
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Observer for Console {
    fn output(&self, id: &InstanceId, _stream: Stream, lines: &[u8], _written: Receipt) {
        let prefix = self.prefix(id);
        let mut buf = Vec::with_capacity(lines.len() + 16 * prefix.len());
        for line in lines.split_inclusive(|b| *b == b'\n') {
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(line);
        }
        self.send(Message::Out(buf));
    }

    fn event(&self, id: &InstanceId, event: &Event) {
        let name = format!("{}.{}", id.app, id.index);
        let text = match event {
            // `restarting` and `started` already tell it.
            Event::Restarted { .. } => return,
            Event::Started { pid } => format!("{name} started (pid {pid})"),
            Event::Ready => format!("{name} ready"),
            Event::NotReady { reason } => format!("{name} failed its readiness check: {reason}"),
            Event::Exited { exit } => format!("{name} exited ({exit})"),
            Event::Restarting { delay } => {
                format!("{name} restarting in {} ms", delay.as_millis())
            }
            Event::Errored { exit } => format!("{name} errored ({exit}); not restarting"),
            Event::Stopped { exit } => format!("{name} stopped ({exit})"),
            Event::SpawnFailed { error } => format!("{name} {error}"),
            Event::WatchdogTimeout => {
                format!("{name} sent no WATCHDOG=1 in time; SIGABRT, then a restart")
            }
            Event::Unhealthy { failures } => {
                format!("{name} failed its health check ({failures} in a row)")
            }
            Event::HandedOver {
                pid,
                guessed: false,
            } => {
                format!("{name} daemonized; supervising pid {pid} from its pid_file")
            }
            Event::HandedOver { pid, guessed: true } => format!(
                "{name} daemonized itself; supervising pid {pid} (set pid_file or run it in the foreground)"
            ),
        };
        self.send(Message::Err(format!("eco: {text}\n")));
        if matches!(event, Event::Errored { .. }) {
            // A stored permit: a waiter that comes later still wakes.
            self.errored.notify_one();
        }
    }
}
