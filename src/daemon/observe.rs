//! What `eco serve` asks the daemon beyond `ls`: restart counters by
//! reason, health probe failures, the last config reload of each project,
//! and a live event stream. Kept by an [`Observer`] wrapped around the log
//! files, so the engine needs no change of its own; each costs one map
//! update per restart or failed probe, and the stream nothing while nobody
//! watches (events are not even built then).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::ipc::proto::{FeedEvent, ReloadStats};
use crate::runtime::output::Backlog;
use crate::runtime::pipe_head::Receipt;
use crate::runtime::{Event, InstanceId, Observer, Stream};
use crate::spec::Settings;
use crate::view::epoch_ms;

/// Events kept for a slow subscriber; past that it is told how many it
/// missed (a `lagged` event), never buffered without bound.
const FEED_BUFFER: usize = 256;

/// (project, app, replica).
type Slot = (String, String, u32);

/// Counters of one instance slot since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub restarts_by_reason: BTreeMap<String, u64>,
    pub probe_failures: u64,
}

/// The counters, the reloads and the event stream.
pub struct Observed {
    counters: Mutex<HashMap<Slot, Counters>>,
    reloads: Mutex<BTreeMap<String, ReloadStats>>,
    /// Made at the first subscriber: a daemon nobody watches holds no buffer.
    feed: std::sync::OnceLock<broadcast::Sender<FeedEvent>>,
}

impl Default for Observed {
    fn default() -> Observed {
        Observed {
            counters: Mutex::default(),
            reloads: Mutex::default(),
            feed: std::sync::OnceLock::new(),
        }
    }
}

impl Observed {
    /// A new subscriber to the event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed
            .get_or_init(|| broadcast::channel(FEED_BUFFER).0)
            .subscribe()
    }

    /// Sends the event built by `make`, only if someone listens.
    fn publish(&self, make: impl FnOnce(u64) -> FeedEvent) {
        if let Some(feed) = self.feed.get()
            && feed.receiver_count() > 0
        {
            let _ = feed.send(make(epoch_ms(std::time::SystemTime::now())));
        }
    }

    /// A project's file was applied (`error` None) or refused.
    pub fn saved(&self, project: &str, error: Option<String>) {
        let at_ms = epoch_ms(std::time::SystemTime::now());
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                project.to_owned(),
                ReloadStats {
                    project: project.to_owned(),
                    successful: error.is_none(),
                    at_ms,
                },
            );
        self.publish(|at_ms| FeedEvent::Save {
            at_ms,
            project: project.to_owned(),
            applied: error.is_none(),
            error,
        });
    }

    /// The counters of one slot (zero when it never restarted).
    pub fn counters(&self, project: &str, app: &str, replica: u32) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(project.to_owned(), app.to_owned(), replica))
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets the counters of slots that no longer exist (`keep` says
    /// which do), so a scaled-down app leaves nothing behind.
    pub fn retain(&self, keep: impl Fn(&str, &str, u32) -> bool) {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(project, app, replica), _| keep(project, app, *replica));
    }

    /// The last reload of each project that had one.
    pub fn reloads(&self) -> Vec<ReloadStats> {
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// A project taken down: its reload status goes with it.
    pub fn forget_project(&self, project: &str) {
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(project);
    }

    fn count(&self, id: &InstanceId, change: impl FnOnce(&mut Counters)) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        change(
            counters
                .entry((id.project.clone(), id.app.clone(), id.index))
                .or_default(),
        );
    }

    fn instance_event(&self, id: &InstanceId, event: &Event) {
        match event {
            Event::Restarted { reason } => {
                self.count(id, |c| {
                    *c.restarts_by_reason
                        .entry(reason.name().to_owned())
                        .or_default() += 1;
                });
            }
            Event::Unhealthy { .. } => self.count(id, |c| c.probe_failures += 1),
            _ => {}
        }
        self.publish(|at_ms| feed_event(at_ms, id, event));
    }
}

/// The stream's form of an engine event.
fn feed_event(at_ms: u64, id: &InstanceId, event: &Event) -> FeedEvent {
    let (state, detail) = match event {
        Event::Restarted { reason } => {
            return FeedEvent::Restart {
                at_ms,
                project: id.project.clone(),
                app: id.app.clone(),
                replica: id.index,
                reason: reason.name().to_owned(),
                detail: reason.detail().map(str::to_owned),
            };
        }
        Event::Started { .. } => ("started", None),
        Event::Ready => ("ready", None),
        Event::NotReady { reason } => ("not_ready", Some(reason.clone())),
        Event::Exited { exit } => ("exited", Some(exit.to_string())),
        Event::Restarting { delay } => ("backoff", Some(format!("{} ms", delay.as_millis()))),
        Event::Errored { exit } => ("errored", Some(exit.to_string())),
        Event::Stopped { exit } => ("stopped", Some(exit.to_string())),
        Event::SpawnFailed { error } => ("spawn_failed", Some(error.clone())),
        Event::HandedOver { .. } => ("handed_over", None),
        Event::WatchdogTimeout => ("watchdog_timeout", None),
        Event::Unhealthy { failures } => ("unhealthy", Some(format!("{failures} in a row"))),
    };
    FeedEvent::State {
        at_ms,
        project: id.project.clone(),
        app: id.app.clone(),
        replica: id.index,
        state: state.to_owned(),
        detail,
    }
}

/// The engine's observer in the daemon: the log files, and [`Observed`].
pub struct Watcher {
    pub inner: Arc<dyn Observer>,
    pub observed: Arc<Observed>,
}

impl Observer for Watcher {
    fn output(&self, id: &InstanceId, stream: Stream, lines: &[u8], receipt: Receipt) {
        self.inner.output(id, stream, lines, receipt);
    }

    fn event(&self, id: &InstanceId, event: &Event) {
        self.inner.event(id, event);
        self.observed.instance_event(id, event);
    }

    fn captures(&self, settings: &Settings, stream: Stream) -> bool {
        self.inner.captures(settings, stream)
    }

    fn backlog(&self, id: &InstanceId, stream: Stream) -> Option<Arc<Backlog>> {
        self.inner.backlog(id, stream)
    }

    fn merges(&self, settings: &Settings) -> bool {
        self.inner.merges(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Reason;

    #[test]
    fn restarts_are_counted_by_reason_and_streamed_only_when_watched() {
        let observed = Observed::default();
        let id = InstanceId {
            project: "p".into(),
            app: "web".into(),
            index: 1,
        };
        let crash = Event::Restarted {
            reason: Reason::Crash,
        };
        observed.instance_event(&id, &crash);
        let mut events = observed.subscribe();
        observed.instance_event(&id, &crash);
        observed.instance_event(&id, &Event::Unhealthy { failures: 1 });
        let counters = observed.counters("p", "web", 1);
        assert_eq!(counters.restarts_by_reason.get("crash"), Some(&2));
        assert_eq!(counters.probe_failures, 1);
        assert!(matches!(
            events.try_recv(),
            Ok(FeedEvent::Restart { reason, replica: 1, .. }) if reason == "crash"
        ));
        observed.retain(|_, _, replica| replica == 0);
        assert_eq!(observed.counters("p", "web", 1), Counters::default());
    }
}
