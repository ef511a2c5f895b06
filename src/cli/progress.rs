//! Progress of a long command (`up --wait`, `reload`, `restart`, `scale`,
//! `kill`) on stderr, from the daemon's progress frames: a live bar on a
//! terminal; otherwise (a log, CI) a plain line every few seconds, and
//! nothing at all for a command that ends sooner. Stdout (and `--json`)
//! is never touched.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ipc::client::Client;
use crate::ipc::proto::Progress;

/// How often a plain line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// Shows a client's progress frames until dropped.
pub struct Meter {
    show: Arc<Mutex<Show>>,
}

enum Show {
    Bar(ProgressBar),
    Plain {
        /// When the next line is due.
        due: Instant,
        latest: Option<Progress>,
        /// The last count printed, if any.
        printed: Option<Progress>,
    },
}

impl Meter {
    /// Shows `client`'s progress from now on: a bar when stderr is a terminal.
    pub fn attach(client: &mut Client) -> Meter {
        let show = if std::io::stderr().is_terminal() {
            Show::Bar(bar())
        } else {
            Show::Plain {
                due: Instant::now() + PLAIN_EVERY,
                latest: None,
                printed: None,
            }
        };
        let show = Arc::new(Mutex::new(show));
        let shared = Arc::clone(&show);
        client.on_progress(move |progress| {
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .update(progress);
        });
        Meter { show }
    }
}

impl Drop for Meter {
    /// The bar goes; a plain log that showed progress ends with the last count.
    fn drop(&mut self) {
        match &*self.show.lock().unwrap_or_else(PoisonError::into_inner) {
            Show::Bar(bar) => bar.finish_and_clear(),
            Show::Plain {
                latest: Some(latest),
                printed: Some(printed),
                ..
            } if latest != printed => eprintln!("{}", line(latest)),
            Show::Plain { .. } => {}
        }
    }
}

impl Show {
    fn update(&mut self, progress: Progress) {
        match self {
            Show::Bar(bar) => {
                bar.set_message(progress.step.as_str());
                bar.set_length(progress.total);
                bar.set_position(progress.done);
                if bar.is_hidden() {
                    // Drawn from the first count on (no empty 0/0 bar before).
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
            Show::Plain {
                due,
                latest,
                printed,
            } => {
                *latest = Some(progress);
                let now = Instant::now();
                if now >= *due {
                    eprintln!("{}", line(&progress));
                    *due = now + PLAIN_EVERY;
                    *printed = Some(progress);
                }
            }
        }
    }
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} {msg} ({elapsed})")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `4,212/8,000 online`, as a plain line.
pub fn line(progress: &Progress) -> String {
    format!(
        "{}/{} {}",
        thousands(progress.done),
        thousands(progress.total),
        progress.step.as_str()
    )
}

/// `8000` as `8,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::proto::Step;

    #[test]
    fn plain_line() {
        let progress = Progress {
            step: Step::Online,
            done: 4212,
            total: 8000,
        };
        assert_eq!(line(&progress), "4,212/8,000 online");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
