//! Progress of long requests (`up --wait`, `reload`, `restart`, `scale`,
//! `kill`): while the work runs, the daemon counts the instances it covers
//! and sends [`Response::Progress`] frames, at most every [`SAMPLE`] (never
//! one frame per instance) and at least every [`KEEPALIVE`], so that the
//! client's silence timer, even at `ECO_TIMEOUT=1`, never fires while the
//! daemon works. One last frame is sent when the work ends.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::requests::Daemon;
use crate::ipc::proto::{Progress, Request, Response, Step};
use crate::ipc::server::Reply;
use crate::runtime::Engine;
use crate::runtime::progress::{Scope, Tally};

/// How often the count is taken; a frame is sent when it moved.
const SAMPLE: Duration = Duration::from_millis(200);

/// The longest silence while a request runs: the count is sent again even
/// unchanged (the client's silence timer may be as short as 1 s).
pub const KEEPALIVE: Duration = Duration::from_millis(400);

/// What a long request reports, and since when.
pub struct Gauge {
    scope: Scope,
    step: Step,
    since: SystemTime,
    /// The most instances seen at once (`kill`: stopped = peak − running).
    peak: Mutex<u64>,
}

impl Gauge {
    pub fn new(scope: Scope, step: Step) -> Gauge {
        Gauge {
            scope,
            step,
            since: SystemTime::now(),
            peak: Mutex::new(0),
        }
    }

    /// The gauge of a request that may run long; None for the others (and
    /// for a target that names nothing: the request itself says so).
    pub async fn of(daemon: &Daemon, request: &Request) -> Option<Gauge> {
        let (target, step) = match request {
            Request::Wait { project, .. } => {
                return Some(Gauge::new(Scope::Project(project.clone()), Step::Online));
            }
            Request::Reload { target } => (target, Step::Reloaded),
            Request::Restart { target } | Request::Scale { target, .. } => (target, Step::Online),
            _ => return None,
        };
        let selected = daemon.reconciler.engine().select(target).await.ok()?;
        Some(Gauge::new(Scope::Targets(selected), step))
    }

    /// The count as a frame.
    fn progress(&self, tally: Tally) -> Progress {
        let (done, total) = match self.step {
            Step::Online => (tally.online, tally.total),
            Step::Reloaded => (tally.fresh, tally.total),
            Step::Stopped => {
                let mut peak = self
                    .peak
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *peak = (*peak).max(tally.total);
                (peak.saturating_sub(tally.running), *peak)
            }
        };
        Progress {
            step: self.step,
            done,
            total,
        }
    }

    /// Runs `work` to its end, sending the count as it moves (a client
    /// that left does not cut the work short). A count the engine cannot
    /// take at once (its lock is held) is skipped, and the last one sent again.
    pub async fn watch<T>(
        &self,
        reply: &mut Reply,
        engine: &Engine,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(Instant::now() + SAMPLE, SAMPLE);
        let mut sent: Option<(Progress, Instant)> = None;
        let mut listening = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick(), if listening => {
                    let now = Instant::now();
                    let counted = engine.try_tally(&self.scope, self.since).map(|t| self.progress(t));
                    let frame = match (counted, sent) {
                        (Some(p), Some((last, at))) if p == last && now < at + KEEPALIVE => continue,
                        (Some(p), _) => Some(p),
                        (None, Some((_, at))) if now < at + KEEPALIVE => continue,
                        (None, last) => last.map(|(p, _)| p),
                    };
                    listening = match frame {
                        Some(p) => {
                            sent = Some((p, now));
                            reply.send(&Response::Progress(p)).await
                        }
                        None => {
                            sent = None;
                            reply.send(&Response::Working).await
                        }
                    };
                }
            }
        }
    }

    /// The last frame, once the work has ended: the count then (all of it
    /// when the work succeeded and counts what it did, as a reload by
    /// signal keeps its processes and their start times).
    pub async fn last(&self, reply: &mut Reply, engine: &Engine, ok: bool) {
        let mut progress = self.progress(engine.tally(&self.scope, self.since).await);
        if ok && self.step == Step::Reloaded {
            progress.done = progress.total;
        }
        reply.send(&Response::Progress(progress)).await;
    }
}
