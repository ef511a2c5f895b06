//! The one rolling replacement, for `eco reload`, saved specs, watched
//! sources, memory limits and schedules: up to `max_surge` new instances
//! start beside their old ones, each old one is told to stop once its new
//! one is ready (its exit gates nothing), and up to `max_unavailable` old
//! ones may be stopped first, their new one starting once they have ended;
//! a failure or an interruption stops the new ones that are not ready and
//! keeps the old ones serving. The steps are decided by the pure [`next_steps`]; the
//! executor only starts, stops and watches. Apps that are not replaced
//! rolling (fork mode without readiness) are restarted in place instead.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::instance::{Control, Gate, InstanceHandle, InstanceState};
use super::{AppGuard, Engine, replaced_rolling};
use crate::state::{Reason, Status};

/// A new instance without a readiness check must stay up this long before
/// the one it replaces is stopped.
const SETTLE: Duration = Duration::from_millis(250);

/// Added to `ready_timeout` for how long one step may take.
const SLACK: Duration = Duration::from_secs(2);

/// Where one slot of a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Only the old instance runs.
    Old,
    /// The new one is starting beside the old one (surge).
    Starting,
    /// The old one was told to stop; the new one starts once it has ended
    /// (unavailable).
    Replacing,
    /// The new one is ready; the old one can go.
    Ready,
    /// The new one is ready and the old one was told to stop (it may still
    /// be draining: that gates nothing).
    Done,
    /// The new one failed (or the rollout was interrupted).
    Failed,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start the slot's new instance beside its old one.
    Launch(usize),
    /// Stop the slot's old instance, and start its new one once it has ended.
    Replace(usize),
    /// Stop the old instance whose new one is ready.
    Retire(usize),
    Wait,
    Abort,
    Finished,
}

/// The rollout's decision, from where each slot is, with Kubernetes'
/// `maxSurge` (new instances starting beside old ones) and
/// `maxUnavailable` (old ones stopped before their new one is ready). Both
/// 0 counts as a surge of 1. Pure.
pub fn next_steps(slots: &[Phase], max_surge: usize, max_unavailable: usize) -> Vec<Step> {
    if slots.contains(&Phase::Failed) {
        return vec![Step::Abort];
    }
    let max_surge = if max_surge == 0 && max_unavailable == 0 {
        1
    } else {
        max_surge
    };
    let mut steps: Vec<Step> = slots
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == Phase::Ready)
        .map(|(i, _)| Step::Retire(i))
        .collect();
    let count = |phase: Phase| slots.iter().filter(|p| **p == phase).count();
    let mut surge = max_surge.saturating_sub(count(Phase::Starting));
    let mut unavailable = max_unavailable.saturating_sub(count(Phase::Replacing));
    for (i, _) in slots.iter().enumerate().filter(|(_, p)| **p == Phase::Old) {
        if surge > 0 {
            surge -= 1;
            steps.push(Step::Launch(i));
        } else if unavailable > 0 {
            unavailable -= 1;
            steps.push(Step::Replace(i));
        } else {
            break;
        }
    }
    if steps.is_empty() {
        if slots.iter().all(|p| *p == Phase::Done) {
            steps.push(Step::Finished);
        } else {
            steps.push(Step::Wait);
        }
    }
    steps
}

/// The instances a rollout replaces.
#[derive(Clone, Debug)]
pub struct Target {
    pub project: String,
    pub app: String,
    /// `None`: every instance.
    pub instances: Option<Vec<u32>>,
}

/// Why a rollout stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "the new {app}:{index} did not become ready: {why}; the rollout stopped and the old instances keep serving"
    )]
    NotReady {
        app: String,
        index: u32,
        why: String,
    },
    #[error(
        "the new {app}:{index} did not become ready: {why}; the rollout stopped there (the old {app}:{index} was stopped first, as max_unavailable allows)"
    )]
    NotReadyReplaced {
        app: String,
        index: u32,
        why: String,
    },
    #[error("{app}:{index} did not come back online; the rollout stopped there")]
    NotBack { app: String, index: u32 },
    #[error("the rollout of {app} was interrupted by a newer operation")]
    Interrupted { app: String },
}

/// One slot while rolling.
struct Slot {
    index: u32,
    old: InstanceHandle,
    new: Option<InstanceHandle>,
    phase: Phase,
    /// The old one was stopped before the new one started.
    replaced: bool,
    deadline: Instant,
    online_since: Option<Instant>,
}

impl Slot {
    /// The slots of a rollout about to start: only old instances.
    fn all(handles: Vec<InstanceHandle>) -> Vec<Slot> {
        let now = Instant::now();
        handles
            .into_iter()
            .map(|old| Slot {
                index: old.index,
                old,
                new: None,
                phase: Phase::Old,
                replaced: false,
                deadline: now,
                online_since: None,
            })
            .collect()
    }

    /// Its new instance is on its way to ready.
    fn is_starting(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Replacing)
    }
}

impl Engine {
    /// Replaces the target's instances: rolling for cluster and ready-gated
    /// apps, restarted in place one by one otherwise. The caller holds the
    /// app (`guard`), so operations on one app never interleave.
    pub async fn roll(
        self: &Arc<Self>,
        target: &Target,
        reason: Reason,
        guard: &AppGuard,
    ) -> Result<(), RolloutError> {
        let Some((spec, handles)) = self.rollout_handles(target).await else {
            return Ok(());
        };
        let limit = spec.settings.ready_timeout + spec.settings.stop_timeout + SLACK;
        if !replaced_rolling(&spec) {
            return self
                .restart_in_place(target, handles, reason, limit, guard)
                .await;
        }
        let has_ready = spec.settings.ready.is_some();
        let surge = usize::try_from(spec.settings.rollout.max_surge).unwrap_or(usize::MAX);
        let unavailable =
            usize::try_from(spec.settings.rollout.max_unavailable).unwrap_or(usize::MAX);
        let mut slots = Slot::all(handles);
        loop {
            let phases: Vec<Phase> = slots.iter().map(|s| s.phase).collect();
            let mut waiting = false;
            for step in next_steps(&phases, surge, unavailable) {
                match step {
                    Step::Launch(i) | Step::Replace(i) => {
                        let replace = matches!(step, Step::Replace(_));
                        self.start_new(target, &mut slots[i], replace, reason.clone(), limit)
                            .await;
                    }
                    Step::Retire(i) => {
                        slots[i].old.send(Control::Stop);
                        slots[i].phase = Phase::Done;
                    }
                    Step::Wait => waiting = true,
                    Step::Abort => {
                        return Err(self.abort(target, &slots, limit, guard).await);
                    }
                    Step::Finished => {
                        // The old instances drain on their own (listed as
                        // retiring, each within its stop_timeout): waiting
                        // for them would delay nothing but the answer.
                        self.forget_retired(target).await;
                        return Ok(());
                    }
                }
            }
            if waiting {
                wait_for_news(&mut slots, has_ready, guard).await;
                advance(&mut slots, has_ready, Instant::now());
            }
        }
    }

    /// Starts the slot's new instance: beside its old one, or (`replace`)
    /// once the old one, told to stop now, has ended.
    async fn start_new(
        &self,
        target: &Target,
        slot: &mut Slot,
        replace: bool,
        reason: Reason,
        limit: Duration,
    ) {
        let after = if replace {
            slot.old.send(Control::Stop);
            Some(slot.old.state.clone())
        } else {
            None
        };
        let new = self.launch_beside(target, &slot.old, reason, after).await;
        slot.replaced = replace;
        match new {
            Some(new) => {
                slot.new = Some(new);
                slot.phase = if replace {
                    Phase::Replacing
                } else {
                    Phase::Starting
                };
                slot.deadline = Instant::now() + limit;
            }
            // The app went away (or eco is closing).
            None => slot.phase = Phase::Failed,
        }
    }

    /// The app's spec and the live handles the target names.
    async fn rollout_handles(
        &self,
        target: &Target,
    ) -> Option<(crate::spec::AppSpec, Vec<InstanceHandle>)> {
        let projects = self.projects.lock().await;
        let app = projects.get(&target.project)?.apps.get(&target.app)?;
        if app.user_stopped {
            return None;
        }
        let handles = app
            .instances
            .iter()
            .filter(|h| !h.is_finished())
            .filter(|h| {
                target
                    .instances
                    .as_ref()
                    .is_none_or(|wanted| wanted.contains(&h.index))
            })
            .cloned()
            .collect();
        Some((app.spec.clone(), handles))
    }

    /// Starts a new instance in `old`'s slot (once `after` has ended, when
    /// given); `old` keeps serving, listed as retiring, until it is told to
    /// stop.
    async fn launch_beside(
        &self,
        target: &Target,
        old: &InstanceHandle,
        reason: Reason,
        after: Option<tokio::sync::watch::Receiver<InstanceState>>,
    ) -> Option<InstanceHandle> {
        let mut projects = self.projects.lock().await;
        let project = projects.get_mut(&target.project)?;
        let spec = project.apps.get(&target.app)?.spec.clone();
        if self.is_closing() {
            return None;
        }
        let carry = Some(old.state.borrow().clone());
        let new = self.launch_carrying(
            project,
            &target.project,
            &spec,
            old.index,
            Gate {
                after,
                ..Gate::default()
            },
            Some(reason),
            carry,
        );
        let app = project.apps.get_mut(&target.app)?;
        let slot = app
            .instances
            .iter_mut()
            .find(|h| h.index == old.index && h.state.same_channel(&old.state))?;
        *slot = new.clone();
        app.retiring.push(old.clone());
        Some(new)
    }

    /// Stops the new instances that are not done, puts the old ones back
    /// in their slots, and says why.
    async fn abort(
        &self,
        target: &Target,
        slots: &[Slot],
        limit: Duration,
        guard: &AppGuard,
    ) -> RolloutError {
        let failed = slots
            .iter()
            .find(|s| s.phase == Phase::Failed)
            .and_then(|s| {
                s.new
                    .as_ref()
                    .map(|new| (s.index, s.replaced, new.state.borrow().clone()))
            });
        // Ready new instances stay, and their old ones go; the others are undone.
        for slot in slots.iter().filter(|s| s.phase == Phase::Ready) {
            slot.old.send(Control::Stop);
        }
        // A new instance whose old one was stopped first stays: it is all
        // that is left in its slot, and its restart policy goes on.
        let unfinished: Vec<&Slot> = slots
            .iter()
            .filter(|s| matches!(s.phase, Phase::Starting | Phase::Failed) && !s.replaced)
            .collect();
        {
            let mut projects = self.projects.lock().await;
            if let Some(app) = projects
                .get_mut(&target.project)
                .and_then(|p| p.apps.get_mut(&target.app))
            {
                for slot in &unfinished {
                    let Some(new) = &slot.new else { continue };
                    if let Some(place) = app
                        .instances
                        .iter_mut()
                        .find(|h| h.state.same_channel(&new.state))
                    {
                        *place = slot.old.clone();
                    }
                    app.retiring
                        .retain(|h| !h.state.same_channel(&slot.old.state));
                }
            }
        }
        for slot in &unfinished {
            if let Some(new) = &slot.new {
                new.send(Control::Stop);
            }
        }
        for slot in &unfinished {
            if let Some(new) = &slot.new {
                new.finished().await;
            }
        }
        if guard.cancel.is_cancelled() {
            return RolloutError::Interrupted {
                app: target.app.clone(),
            };
        }
        let (index, replaced, why) = match failed {
            Some((index, replaced, s)) => {
                let why = match (s.status, s.last_exit) {
                    (Status::Online | Status::Starting, _) => format!(
                        "not ready within {}",
                        humantime::format_duration(limit.saturating_sub(SLACK))
                    ),
                    (_, Some(exit)) => format!("it failed ({exit})"),
                    (status, None) => format!("it is {}", status.as_str()),
                };
                (index, replaced, why)
            }
            None => (0, false, "the app is gone".to_owned()),
        };
        let app = target.app.clone();
        if replaced {
            RolloutError::NotReadyReplaced { app, index, why }
        } else {
            RolloutError::NotReady { app, index, why }
        }
    }

    /// Drops the retired handles that have ended.
    async fn forget_retired(&self, target: &Target) {
        let mut projects = self.projects.lock().await;
        if let Some(app) = projects
            .get_mut(&target.project)
            .and_then(|p| p.apps.get_mut(&target.app))
        {
            app.retiring.retain(|h| !h.is_finished());
        }
    }

    /// Restarts instances one at a time, each online again before the next
    /// (apps whose instances cannot run side by side).
    async fn restart_in_place(
        &self,
        target: &Target,
        handles: Vec<InstanceHandle>,
        reason: Reason,
        limit: Duration,
        guard: &AppGuard,
    ) -> Result<(), RolloutError> {
        for handle in handles {
            if self.is_closing() || guard.cancel.is_cancelled() {
                return Err(RolloutError::Interrupted {
                    app: target.app.clone(),
                });
            }
            let restarts = handle.state.borrow().restarts;
            handle.send(Control::Restart(reason.clone()));
            let mut state = handle.state.clone();
            let back = tokio::select! {
                outcome = tokio::time::timeout(limit, state.wait_for(|s| {
                    s.restarts > restarts
                        && matches!(s.status, Status::Online | Status::Errored | Status::Backoff)
                })) => outcome.ok().and_then(Result::ok).map(|s| s.status) == Some(Status::Online),
                () = guard.cancel.cancelled() => false,
            };
            if !back {
                return Err(RolloutError::NotBack {
                    app: target.app.clone(),
                    index: handle.index,
                });
            }
        }
        Ok(())
    }
}

/// Resolves when any of the watches changes (or all are closed); never
/// when there are none.
pub(crate) async fn any_changed(watches: &mut [tokio::sync::watch::Receiver<InstanceState>]) {
    if watches.is_empty() {
        return std::future::pending().await;
    }
    let mut futures: Vec<_> = watches
        .iter_mut()
        .map(|w| Box::pin(async move { w.changed().await }))
        .collect();
    std::future::poll_fn(move |cx| {
        for f in &mut futures {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

/// Waits until a starting new instance changes, a deadline (or a settle
/// time) passes, or a newer operation interrupts, which fails them all.
async fn wait_for_news(slots: &mut [Slot], has_ready: bool, guard: &AppGuard) {
    let mut watches: Vec<tokio::sync::watch::Receiver<InstanceState>> = slots
        .iter()
        .filter(|s| s.is_starting())
        .filter_map(|s| s.new.as_ref().map(|h| h.state.clone()))
        .collect();
    let wake = slots
        .iter()
        .filter(|s| s.is_starting())
        .map(|s| match s.online_since {
            Some(t) if !has_ready => (t + SETTLE).min(s.deadline),
            _ => s.deadline,
        })
        .min()
        .unwrap_or_else(Instant::now);
    tokio::select! {
        () = guard.cancel.cancelled() => {
            for slot in slots.iter_mut().filter(|s| s.is_starting()) {
                slot.phase = Phase::Failed;
            }
        }
        () = any_changed(&mut watches) => {}
        () = tokio::time::sleep_until(wake) => {}
    }
}

/// Moves each starting slot on from its new instance's status at `now`:
/// ready once online (and, without a readiness check, settled), failed
/// when it errored, stopped or missed its deadline.
fn advance(slots: &mut [Slot], has_ready: bool, now: Instant) {
    for slot in slots.iter_mut().filter(|s| s.is_starting()) {
        let Some(new) = &mut slot.new else { continue };
        // Marked seen, so the next wait's clones wake only on a newer
        // change (an unseen one would make every wait return at once).
        let status = new.state.borrow_and_update().status;
        let ready = if slot.replaced {
            // Its old one is gone already.
            Phase::Done
        } else {
            Phase::Ready
        };
        slot.phase = match status {
            Status::Online => {
                let since = *slot.online_since.get_or_insert(now);
                if has_ready || now >= since + SETTLE {
                    ready
                } else {
                    slot.phase
                }
            }
            Status::Errored | Status::Backoff | Status::Stopped => Phase::Failed,
            Status::Starting | Status::Stopping if now >= slot.deadline => Phase::Failed,
            Status::Starting | Status::Stopping => slot.phase,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::Phase::{Done, Failed, Old, Ready, Replacing, Starting};
    use super::Step::{Abort, Finished, Launch, Replace, Retire, Wait};
    use super::*;

    #[test]
    fn steps_by_phase() {
        // (slots, surge, unavailable) -> steps
        let table: &[(&[Phase], usize, usize, &[Step])] = &[
            // The default: one new beside the old ones, none stopped first.
            (&[Old, Old], 1, 0, &[Launch(0)]),
            (&[Starting, Old], 1, 0, &[Wait]),
            (&[Ready, Old], 1, 0, &[Retire(0), Launch(1)]),
            (&[Done, Starting], 1, 0, &[Wait]),
            (&[Done, Ready], 1, 0, &[Retire(1)]),
            (&[Done, Done], 1, 0, &[Finished]),
            (&[Old, Old, Old], 2, 0, &[Launch(0), Launch(1)]),
            (&[Ready, Starting, Old], 2, 0, &[Retire(0), Launch(2)]),
            (&[Done, Failed, Old], 1, 0, &[Abort]),
            (&[Old], 0, 0, &[Launch(0)]),
            (&[], 1, 0, &[Finished]),
            // A surge larger than the app starts every new one at once.
            (&[Old, Old], 4, 0, &[Launch(0), Launch(1)]),
            (
                &[Old, Old, Old, Old, Old, Old, Old, Old],
                4,
                0,
                &[Launch(0), Launch(1), Launch(2), Launch(3)],
            ),
            (
                &[Done, Ready, Starting, Starting, Starting, Old, Old, Old],
                4,
                0,
                &[Retire(1), Launch(5)],
            ),
            // Stop first (a fork app on a fixed port): one slot at a time.
            (&[Old, Old], 0, 1, &[Replace(0)]),
            (&[Replacing, Old], 0, 1, &[Wait]),
            (&[Done, Old], 0, 1, &[Replace(1)]),
            (&[Done, Replacing], 0, 1, &[Wait]),
            (&[Done, Done], 0, 1, &[Finished]),
            (&[Replacing, Old], 0, 1, &[Wait]),
            (&[Old, Old, Old], 0, 2, &[Replace(0), Replace(1)]),
            (&[Replacing, Failed, Old], 0, 2, &[Abort]),
            // Both: surge first, then stops, as Kubernetes does.
            (&[Old, Old, Old], 1, 1, &[Launch(0), Replace(1)]),
            (&[Ready, Done, Old], 1, 1, &[Retire(0), Launch(2)]),
            (&[Starting, Replacing, Old], 1, 1, &[Wait]),
            (&[Starting, Done, Old], 1, 1, &[Replace(2)]),
        ];
        for (slots, surge, unavailable, want) in table {
            assert_eq!(
                next_steps(slots, *surge, *unavailable),
                *want,
                "{slots:?} surge {surge} unavailable {unavailable}"
            );
        }
    }
}
