//! Admission: when a queued run may start. A run starts only while it fits
//! under every concurrency cap: global (`[limits.global] max_concurrent`), its
//! pipeline's (`concurrency.max_runs`, unless `on_overlap: allow`) and its
//! user's (`max_concurrent`). Until then its driver parks here, holding no
//! worker.
//!
//! Slots are leases tied to live runs: a run holds one exactly while it is
//! `running` and its driver lives. A driver takes the lease when admission
//! grants it (queued → running), or at once when it picks up a run that is
//! already running (after a restart) or resumes a waiting one; the lease goes
//! back whenever the driver ends (finished, waiting, cancelled, stopped, even
//! panicked). Runs waiting on a delay, backoff or approval hold no slot, and
//! resume without queueing again — they were admitted once, and making an
//! approved run wait behind newer triggers would surprise its approver — so a
//! cap can be exceeded briefly by resuming runs; new runs then wait until the
//! count is under the cap again. After a crash the leases are rebuilt from the
//! runs that are running, and a periodic check makes held slots equal running
//! runs again should anything have drifted, so a queue never freezes behind a
//! leaked slot. A run of instant nodes executed as it is accepted (see
//! `driver::inline`) holds none: it executes only when `has_room` says it
//! would start at once, and is finished by the time it is written.
//!
//! Order: runs start fairly across users — round-robin between the users with
//! waiting runs, oldest first within a user. A user's run that only its
//! pipeline's cap holds back does not block that user's runs of other pipelines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sluice_shared::Pipeline;
use sluice_shared::event::Event;
use sluice_shared::model::OverlapPolicy;
use sluice_shared::run::{RunId, RunState};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use super::{EngineError, Inner};
use crate::limits::{Limits, user_key};
use crate::store::RunRecord;

/// How often held slots are compared with running runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

struct Lease {
    user: String,
    pipeline: String,
}

struct Waiter {
    pipeline: String,
    pipeline_max: Option<usize>,
    grant: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    held: HashMap<RunId, Lease>,
    /// Waiting runs per user, oldest first.
    queue: BTreeMap<String, BTreeMap<RunId, Waiter>>,
    /// The user served last (round-robin cursor).
    cursor: Option<String>,
    /// Leases whose run was not running at the last check.
    stale: HashSet<RunId>,
    /// Running runs without a lease at the last check.
    orphans: HashSet<RunId>,
    /// Slots taken back by the check since the start.
    reclaimed: u64,
}

/// Concurrency slots and the queue of runs waiting for one.
pub(crate) struct Admission {
    limits: Arc<Limits>,
    state: Mutex<State>,
}

/// A copy of admission's state, for `limits.usage` and `limits.explain`.
#[derive(Clone, Debug, Default)]
pub struct AdmissionView {
    /// Runs holding a slot: (run, user, pipeline).
    pub held: Vec<(RunId, String, String)>,
    /// Runs waiting for a slot, per user oldest first: (run, user, pipeline, pipeline cap).
    pub queued: Vec<(RunId, String, String, Option<usize>)>,
    /// Slots the periodic check took back since the start.
    pub reclaimed: u64,
    /// The user served last (round-robin goes on after it).
    pub cursor: Option<String>,
}

/// Why a queued run has not started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The cap that holds it back: `global`, `user`, `pipeline`, or `none`.
    pub cap: &'static str,
    /// In words.
    pub reason: String,
    /// Runs that start before it.
    pub ahead: u64,
    /// Of those, runs of the same user.
    pub ahead_same_user: u64,
}

impl AdmissionView {
    fn running_where(&self, f: impl Fn(&str, &str) -> bool) -> usize {
        self.held.iter().filter(|(_, u, p)| f(u, p)).count()
    }

    /// Why queued `run` waits, or `None` when it is not waiting here.
    pub fn explain(&self, run: RunId, limits: &crate::limits::LimitsConfig) -> Option<Explanation> {
        let (_, user, pipeline, pipeline_max) = self.queued.iter().find(|q| q.0 == run)?.clone();
        let mine: Vec<RunId> = self
            .queued
            .iter()
            .filter(|q| q.1 == user)
            .map(|q| q.0)
            .collect();
        let position = mine.iter().filter(|id| **id < run).count();
        // Round-robin: every other user gets up to one start per start of this user,
        // those served before this user in the round one more.
        let mut per_user: BTreeMap<&str, usize> = BTreeMap::new();
        for q in &self.queued {
            if q.1 != user {
                *per_user.entry(q.1.as_str()).or_default() += 1;
            }
        }
        let served_first = |other: &str| match self.cursor.as_deref() {
            // The round starts after the cursor: `other` comes first if it sorts
            // between the cursor and this user, cyclically.
            Some(c) => {
                let after = |u: &str| u > c;
                match (after(other), after(&user)) {
                    (true, false) => true,
                    (false, true) => false,
                    _ => other < user.as_str(),
                }
            }
            None => other < user.as_str(),
        };
        let others: usize = per_user
            .iter()
            .map(|(u, n)| (*n).min(position + usize::from(served_first(u))))
            .sum();
        let ahead = (position + others) as u64;
        let user_max = limits.for_user(&user).max_concurrent;
        let user_running = self.running_where(|u, _| u == user);
        let pipeline_running = self.running_where(|_, p| p == pipeline);
        let g = limits.global.max_concurrent();
        let (cap, reason) = if self.held.len() >= g as usize {
            (
                "global",
                format!(
                    "the global cap is reached: {} of max_concurrent {g} runs are running",
                    self.held.len()
                ),
            )
        } else if let Some(m) = user_max
            && user_running >= m as usize
        {
            (
                "user",
                format!(
                    "user '{user}' is at its cap: {user_running} of max_concurrent {m} runs are running"
                ),
            )
        } else if let Some(m) = pipeline_max
            && pipeline_running >= m
        {
            (
                "pipeline",
                format!(
                    "pipeline '{pipeline}' is at its cap: {pipeline_running} of concurrency.max_runs {m} runs are running"
                ),
            )
        } else if position > 0 {
            (
                "none",
                format!("older runs of user '{user}' start first ({position} ahead)"),
            )
        } else {
            (
                "none",
                "no cap holds it back; it starts at the next admission pass".to_owned(),
            )
        };
        Some(Explanation {
            cap,
            reason,
            ahead,
            ahead_same_user: position as u64,
        })
    }
}

impl Admission {
    pub(crate) fn new(limits: Arc<Limits>) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Starts waiting runs while they fit, round-robin across users.
    fn pump(&self, s: &mut State) {
        let config = self.limits.config();
        let global = config.global.max_concurrent() as usize;
        loop {
            if s.held.len() >= global || s.queue.is_empty() {
                return;
            }
            let users: Vec<String> = match &s.cursor {
                Some(c) => s
                    .queue
                    .range::<String, _>((Bound::Excluded(c.clone()), Bound::Unbounded))
                    .chain(s.queue.range::<String, _>(..=c.clone()))
                    .map(|(u, _)| u.clone())
                    .collect(),
                None => s.queue.keys().cloned().collect(),
            };
            let mut progressed = false;
            for user in users {
                let cap = config.for_user(&user).max_concurrent.map(|m| m as usize);
                if cap.is_some_and(|c| s.held.values().filter(|l| l.user == user).count() >= c) {
                    continue;
                }
                let Some(waiters) = s.queue.get(&user) else {
                    continue;
                };
                let pick = waiters
                    .iter()
                    .find(|(_, w)| {
                        w.pipeline_max.is_none_or(|m| {
                            s.held.values().filter(|l| l.pipeline == w.pipeline).count() < m
                        })
                    })
                    .map(|(id, _)| *id);
                let Some(id) = pick else { continue };
                let Some(waiter) = s.queue.get_mut(&user).and_then(|w| w.remove(&id)) else {
                    continue;
                };
                if s.queue.get(&user).is_some_and(BTreeMap::is_empty) {
                    s.queue.remove(&user);
                }
                progressed = true;
                // A driver that stopped waiting (cancelled, stopping) takes no slot.
                if waiter.grant.send(()).is_ok() {
                    s.held.insert(
                        id,
                        Lease {
                            user: user.clone(),
                            pipeline: waiter.pipeline,
                        },
                    );
                    s.cursor = Some(user);
                }
                break;
            }
            if !progressed {
                return;
            }
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        // A poisoned lock means a panic mid-update; the state is still usable.
        Some(
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn enqueue(
        &self,
        run: RunId,
        user: String,
        pipeline: String,
        pipeline_max: Option<usize>,
    ) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Some(mut s) = self.lock() {
            s.queue.entry(user).or_default().insert(
                run,
                Waiter {
                    pipeline,
                    pipeline_max,
                    grant: tx,
                },
            );
            self.pump(&mut s);
        }
        rx
    }

    /// Forgets a waiting run (its driver stopped waiting); frees its slot if it
    /// was granted one it will not use.
    fn withdraw(&self, run: RunId) {
        if let Some(mut s) = self.lock() {
            let mut emptied = None;
            for (user, waiters) in &mut s.queue {
                if waiters.remove(&run).is_some() && waiters.is_empty() {
                    emptied = Some(user.clone());
                }
            }
            if let Some(u) = emptied {
                s.queue.remove(&u);
            }
            if s.held.remove(&run).is_some() {
                self.pump(&mut s);
            }
        }
    }

    /// Gives `record` a slot without queueing: it is running already (picked
    /// up after a restart) or resumes after a wait.
    pub(crate) fn hold(&self, record: &RunRecord) {
        if let Some(mut s) = self.lock() {
            s.held.insert(
                record.id,
                Lease {
                    user: user_key(record.trigger.user.as_deref()).to_owned(),
                    pipeline: record.pipeline.clone(),
                },
            );
        }
    }

    /// Whether a run of `pipeline` for `user` would start at once: every cap
    /// has room for it and none of the user's runs waits for a slot (it would
    /// start first).
    pub(crate) fn has_room(&self, user: &str, pipeline: &str, pipeline_max: Option<usize>) -> bool {
        let Some(s) = self.lock() else { return false };
        let config = self.limits.config();
        if s.held.len() >= config.global.max_concurrent() as usize || s.queue.contains_key(user) {
            return false;
        }
        let user_cap = config.for_user(user).max_concurrent.map(|m| m as usize);
        let held = |f: &dyn Fn(&Lease) -> bool| s.held.values().filter(|l| f(l)).count();
        user_cap.is_none_or(|c| held(&|l| l.user == user) < c)
            && pipeline_max.is_none_or(|m| held(&|l| l.pipeline == pipeline) < m)
    }

    /// Frees `run`'s slot, if it holds one, and starts whoever fits now.
    pub(crate) fn release(&self, run: RunId) {
        if let Some(mut s) = self.lock()
            && s.held.remove(&run).is_some()
        {
            self.pump(&mut s);
        }
    }

    /// Starts whoever fits (after a change of the limits).
    pub(crate) fn wake(&self) {
        if let Some(mut s) = self.lock() {
            self.pump(&mut s);
        }
    }

    pub(crate) fn view(&self) -> AdmissionView {
        let Some(s) = self.lock() else {
            return AdmissionView::default();
        };
        let mut held: Vec<_> = s
            .held
            .iter()
            .map(|(id, l)| (*id, l.user.clone(), l.pipeline.clone()))
            .collect();
        held.sort_by_key(|h| h.0);
        AdmissionView {
            held,
            queued: s
                .queue
                .iter()
                .flat_map(|(u, ws)| {
                    ws.iter()
                        .map(|(id, w)| (*id, u.clone(), w.pipeline.clone(), w.pipeline_max))
                })
                .collect(),
            reclaimed: s.reclaimed,
            cursor: s.cursor.clone(),
        }
    }
}

/// The number of runs `pipeline` may have running, when its own cap limits it.
pub fn slot_limit(pipeline: &Pipeline) -> Option<usize> {
    match pipeline.concurrency.on_overlap {
        OverlapPolicy::Allow => None,
        _ => pipeline
            .concurrency
            .max_runs
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
    }
}

/// Withdraws a parked run from the queue however its wait ends.
struct Parked<'a> {
    admission: &'a Admission,
    run: RunId,
    granted: bool,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if !self.granted {
            self.admission.withdraw(self.run);
        }
    }
}

/// Waits until queued `record` may start under every cap and returns true:
/// the slot is then the run's. Returns false, leaving it queued, when `cancel`
/// fires or the engine stops. The run is not written as running here: the
/// driver commits that with its first step (for a run of instant nodes, in the
/// same write as its end), and until then a crash leaves it queued, which is
/// what it is to the next start.
pub(crate) async fn wait_for_slot(
    inner: &Arc<Inner>,
    record: &RunRecord,
    pipeline: &Pipeline,
    cancel: &CancellationToken,
) -> bool {
    let user = user_key(record.trigger.user.as_deref()).to_owned();
    let granted = inner.admission.enqueue(
        record.id,
        user,
        record.pipeline.clone(),
        slot_limit(pipeline),
    );
    let mut parked = Parked {
        admission: &inner.admission,
        run: record.id,
        granted: false,
    };
    tokio::select! {
        r = granted => if r.is_err() { return false },
        () = cancel.cancelled() => return false,
        () = inner.shutdown.cancelled() => return false,
    }
    // From here the slot is the run's; the driver's end releases it.
    parked.granted = true;
    true
}

/// Frees a driver's slot and entry if the driver panics (normal ends go
/// through `driver_exited`), so the periodic check can drive the run again.
pub(crate) struct PanicGuard {
    inner: Arc<Inner>,
    run: RunId,
    armed: bool,
}

impl PanicGuard {
    pub(crate) fn new(inner: &Arc<Inner>, run: RunId) -> Self {
        Self {
            inner: Arc::clone(inner),
            run,
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::error!(run = %self.run, "run driver ended abnormally; its slot is freed");
            self.inner.admission.release(self.run);
            if let Ok(mut d) = self.inner.drivers.lock() {
                d.remove(&self.run);
            }
        }
    }
}

/// Compares held slots with running runs and repairs what has drifted: a
/// slot whose run is not running (seen twice in a row, so a run between its
/// commit and its driver's end is left alone) is taken back; a running run
/// without a slot gets one (and a driver, if it has none).
pub(crate) async fn check_slots(inner: &Arc<Inner>) -> Result<(), EngineError> {
    let runs = inner.store.unfinished_briefs().await?;
    let running: HashMap<RunId, _> = runs
        .into_iter()
        .filter(|r| r.state == RunState::Running)
        .map(|r| (r.id, r))
        .collect();
    let drivers: HashSet<RunId> = inner
        .drivers
        .lock()
        .map(|d| d.keys().copied().collect())
        .unwrap_or_default();
    let mut respawn = Vec::new();
    if let Some(mut guard) = inner.admission.lock() {
        let s: &mut State = &mut guard;
        let stale_now: HashSet<RunId> = s
            .held
            .keys()
            .filter(|id| !running.contains_key(id))
            .copied()
            .collect();
        let reclaim: Vec<RunId> = stale_now.intersection(&s.stale).copied().collect();
        for id in &reclaim {
            s.held.remove(id);
            tracing::warn!(run = %id, "reclaimed a concurrency slot held by a run that is not running");
        }
        s.reclaimed += reclaim.len() as u64;
        s.stale = stale_now
            .difference(&reclaim.iter().copied().collect())
            .copied()
            .collect();
        let orphans_now: HashSet<RunId> = running
            .keys()
            .filter(|id| !s.held.contains_key(id))
            .copied()
            .collect();
        for id in orphans_now.intersection(&s.orphans) {
            let Some(r) = running.get(id) else { continue };
            tracing::warn!(run = %id, "a running run held no concurrency slot; it holds one now");
            s.held.insert(
                *id,
                Lease {
                    user: user_key(r.user.as_deref()).to_owned(),
                    pipeline: r.pipeline.clone(),
                },
            );
            if !drivers.contains(id) {
                respawn.push(*id);
            }
        }
        s.orphans = orphans_now
            .into_iter()
            .filter(|id| !s.held.contains_key(id))
            .collect();
        inner.admission.pump(s);
    }
    for id in respawn {
        inner.spawn_driver(id, false);
    }
    Ok(())
}

/// Admission's housekeeping: starts queued runs when the limits change and
/// checks the slots every [`CHECK_EVERY`]. Runs until the engine is dropped or stops.
pub(crate) async fn wake_on_finish(
    inner: Weak<Inner>,
    events: broadcast::Receiver<Event>,
    shutdown: CancellationToken,
) {
    // Slots are released by drivers directly; events are not needed here.
    drop(events);
    let Some(limits) = inner.upgrade().map(|i| Arc::clone(&i.opts.limits)) else {
        return;
    };
    loop {
        let changed = limits.changed().notified();
        let check = tokio::select! {
            () = changed => false,
            () = tokio::time::sleep(CHECK_EVERY) => true,
            () = shutdown.cancelled() => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        if check {
            if let Err(e) = check_slots(&inner).await {
                tracing::warn!(error = %e, "cannot check concurrency slots");
            }
        } else {
            inner.admission.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineOptions};
    use crate::limits::LimitsConfig;
    use crate::secrets::Secrets;
    use crate::store::{Durability, Store};
    use sluice_shared::run::TriggerInfo;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leaked_slot_is_reclaimed_and_the_queue_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::Normal)
            .await
            .unwrap();
        let config: LimitsConfig = toml::from_str("[global]\nmax_concurrent = 1\n").unwrap();
        let opts = EngineOptions {
            limits: Arc::new(Limits::new(config)),
            ..EngineOptions::default()
        };
        let engine = Engine::start(store, &Secrets::default(), opts).unwrap();
        // A slot held by no running run, as a lost release would leave it.
        engine.inner.admission.lock().unwrap().held.insert(
            RunId(9999),
            Lease {
                user: "ghost".into(),
                pipeline: "gone".into(),
            },
        );
        let source = "nodes:\n  - id: a\n    kind: transform\n    output: { ok: true }\n";
        let file =
            sluice_shared::load_source(std::path::Path::new("p.yaml"), source, &Default::default());
        let pipeline = file.pipeline.unwrap();
        let run = engine
            .submit(
                &pipeline,
                None,
                &Default::default(),
                TriggerInfo::manual(None),
            )
            .await
            .unwrap();
        // Queued behind the leaked slot until the check has seen the leak twice.
        let parked = async {
            loop {
                let v = engine.admission();
                if v.queued.iter().any(|q| q.0 == run) {
                    return v;
                }
                tokio::task::yield_now().await;
            }
        };
        let view = tokio::time::timeout(Duration::from_secs(10), parked)
            .await
            .unwrap();
        assert_eq!(view.held.len(), 1);
        check_slots(&engine.inner).await.unwrap();
        assert!(
            engine.admission().queued.iter().any(|q| q.0 == run),
            "one sighting is not enough"
        );
        check_slots(&engine.inner).await.unwrap();
        let done = tokio::time::timeout(Duration::from_secs(10), engine.wait(run))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.state, RunState::Succeeded);
        // The run is announced finished before its driver exits and frees its slot.
        let freed = async {
            loop {
                let v = engine.admission();
                if v.held.is_empty() {
                    return v;
                }
                tokio::task::yield_now().await;
            }
        };
        let view = tokio::time::timeout(Duration::from_secs(10), freed)
            .await
            .expect("the run's own slot is freed once its driver exits");
        assert_eq!(view.reclaimed, 1);
    }
}
