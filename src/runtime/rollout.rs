//! The one rolling replacement, for `eco reload`, saved specs, watched
//! sources, memory limits and schedules: each new instance starts beside
//! the old one, and the old one stops once the new one is ready; a failure
//! or an interruption stops the new ones that are not ready and keeps the
//! old ones serving. The steps are decided by the pure [`next_steps`]; the
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

/// How many new instances may be starting at once beside their old ones
/// (Kubernetes' `maxSurge` with `maxUnavailable: 0`).
const MAX_SURGE: usize = 1;

/// Where one slot of a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Only the old instance runs.
    Old,
    /// The new one is starting beside the old one.
    Starting,
    /// The new one is ready; the old one can go.
    Ready,
    /// The old one was told to stop: this slot is replaced.
    Done,
    /// The new one failed (or the rollout was interrupted).
    Failed,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Launch(usize),
    Retire(usize),
    Wait,
    Abort,
    Finished,
}

/// The rollout's decision, from where each slot is. Pure.
pub fn next_steps(slots: &[Phase], max_surge: usize) -> Vec<Step> {
    if slots.contains(&Phase::Failed) {
        return vec![Step::Abort];
    }
    let mut steps: Vec<Step> = slots
        .iter()
        .enumerate()
        .filter(|(_, p)| **p == Phase::Ready)
        .map(|(i, _)| Step::Retire(i))
        .collect();
    let in_flight = slots.iter().filter(|p| **p == Phase::Starting).count();
    let room = max_surge.max(1).saturating_sub(in_flight);
    steps.extend(
        slots
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == Phase::Old)
            .take(room)
            .map(|(i, _)| Step::Launch(i)),
    );
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
    deadline: Instant,
    online_since: Option<Instant>,
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
        let now = Instant::now();
        let mut slots: Vec<Slot> = handles
            .into_iter()
            .map(|old| Slot {
                index: old.index,
                old,
                new: None,
                phase: Phase::Old,
                deadline: now,
                online_since: None,
            })
            .collect();
        loop {
            let phases: Vec<Phase> = slots.iter().map(|s| s.phase).collect();
            let mut waiting = false;
            for step in next_steps(&phases, MAX_SURGE) {
                match step {
                    Step::Launch(i) => {
                        let new = self
                            .launch_beside(target, &slots[i].old, reason.clone())
                            .await;
                        let slot = &mut slots[i];
                        match new {
                            Some(new) => {
                                slot.new = Some(new);
                                slot.phase = Phase::Starting;
                                slot.deadline = Instant::now() + limit;
                            }
                            // The app went away (or eco is closing).
                            None => slot.phase = Phase::Failed,
                        }
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
                        for slot in &slots {
                            slot.old.finished().await;
                        }
                        self.forget_retired(target).await;
                        return Ok(());
                    }
                }
            }
            if !waiting {
                continue;
            }
            let mut watches: Vec<tokio::sync::watch::Receiver<InstanceState>> = slots
                .iter()
                .filter(|s| s.phase == Phase::Starting)
                .filter_map(|s| s.new.as_ref().map(|h| h.state.clone()))
                .collect();
            let wake = slots
                .iter()
                .filter(|s| s.phase == Phase::Starting)
                .map(|s| match s.online_since {
                    Some(t) if !has_ready => (t + SETTLE).min(s.deadline),
                    _ => s.deadline,
                })
                .min()
                .unwrap_or_else(Instant::now);
            tokio::select! {
                () = guard.cancel.cancelled() => {
                    for slot in slots.iter_mut().filter(|s| s.phase == Phase::Starting) {
                        slot.phase = Phase::Failed;
                    }
                }
                () = any_changed(&mut watches) => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            for slot in slots.iter_mut().filter(|s| s.phase == Phase::Starting) {
                let Some(new) = &slot.new else { continue };
                let status = new.state.borrow().status;
                slot.phase = match status {
                    Status::Online => {
                        let since = *slot.online_since.get_or_insert(now);
                        if has_ready || now >= since + SETTLE {
                            Phase::Ready
                        } else {
                            Phase::Starting
                        }
                    }
                    Status::Errored | Status::Backoff | Status::Stopped => Phase::Failed,
                    Status::Starting | Status::Stopping if now >= slot.deadline => Phase::Failed,
                    Status::Starting | Status::Stopping => Phase::Starting,
                };
            }
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

    /// Starts a new instance in `old`'s slot; `old` keeps serving, listed
    /// as retiring, until it is told to stop.
    async fn launch_beside(
        &self,
        target: &Target,
        old: &InstanceHandle,
        reason: Reason,
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
            Gate::default(),
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
                    .map(|new| (s.index, new.state.borrow().clone()))
            });
        // Ready new instances stay, and their old ones go; the others are undone.
        for slot in slots.iter().filter(|s| s.phase == Phase::Ready) {
            slot.old.send(Control::Stop);
        }
        let unfinished: Vec<&Slot> = slots
            .iter()
            .filter(|s| matches!(s.phase, Phase::Starting | Phase::Failed))
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
        let (index, why) = match failed {
            Some((index, s)) => {
                let why = match (s.status, s.last_exit) {
                    (Status::Online | Status::Starting, _) => format!(
                        "not ready within {}",
                        humantime::format_duration(limit.saturating_sub(SLACK))
                    ),
                    (_, Some(exit)) => format!("it failed ({exit})"),
                    (status, None) => format!("it is {}", status.as_str()),
                };
                (index, why)
            }
            None => (0, "the app is gone".to_owned()),
        };
        RolloutError::NotReady {
            app: target.app.clone(),
            index,
            why,
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

#[cfg(test)]
mod tests {
    use super::Phase::{Done, Failed, Old, Ready, Starting};
    use super::*;

    #[test]
    fn steps_by_phase() {
        // (slots, surge) -> steps
        let table: &[(&[Phase], usize, &[Step])] = &[
            (&[Old, Old], 1, &[Step::Launch(0)]),
            (&[Starting, Old], 1, &[Step::Wait]),
            (&[Ready, Old], 1, &[Step::Retire(0), Step::Launch(1)]),
            (&[Done, Starting], 1, &[Step::Wait]),
            (&[Done, Ready], 1, &[Step::Retire(1)]),
            (&[Done, Done], 1, &[Step::Finished]),
            (&[Old, Old, Old], 2, &[Step::Launch(0), Step::Launch(1)]),
            (
                &[Ready, Starting, Old],
                2,
                &[Step::Retire(0), Step::Launch(2)],
            ),
            (&[Done, Failed, Old], 1, &[Step::Abort]),
            (&[Old], 0, &[Step::Launch(0)]),
            (&[], 1, &[Step::Finished]),
        ];
        for (slots, surge, want) in table {
            assert_eq!(next_steps(slots, *surge), *want, "{slots:?} surge {surge}");
        }
    }
}
