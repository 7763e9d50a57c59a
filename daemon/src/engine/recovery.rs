//! Start-up: every unfinished run is picked up again. Attempts that were
//! running when the daemon stopped are marked interrupted; their nodes are
//! attempted again (at-least-once) unless they are not safe to repeat
//! (`on_crash: ask`), in which case an operator decides. A child process of an
//! interrupted attempt that is still alive is stopped first, so the attempt
//! never runs twice at once.
//!
//! Recovery is split so that a restart is ready at once whatever the backlog:
//! the quick part (one read; slots of running runs held, queued runs counted)
//! runs before the daemon answers, the per-run work after, in the background.
//! Queued runs get drivers only up to [`background::MAX_STARTING`] at once;
//! the rest are left to the backlog drainer ([`background::drain_backlog`]),
//! which starts them as room frees up and ends once none is left.

use std::sync::Arc;
use std::time::Duration;

use sluice_shared::model::NodeKind;
use sluice_shared::model::node::OnCrash;
use sluice_shared::run::{AttemptState, NodeState, RunId, RunState};

use super::driver::outcome_note;
use super::{EngineError, Inner, background, needs_driver};
use crate::nodes::{LogSink, NoteSlot};
use crate::store::{Change, NodeChange, RunChange};

/// An attempt interrupted this many times is failed instead of retried again,
/// so a node that crashes the daemon cannot loop forever.
const MAX_INTERRUPTIONS: usize = 3;

/// How long a leftover process group gets between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// Recovers unfinished runs; with `background`, returns after the quick part
/// and leaves the per-run work to a task.
pub(crate) async fn recover(inner: &Arc<Inner>, background: bool) -> Result<usize, EngineError> {
    let runs = inner.store.unfinished_runs().await?;
    let count = runs.len();
    // Running runs hold their slots before any queued run's driver can ask for
    // one: drivers start concurrently, and a queued run must not slip in ahead.
    for run in runs.iter().filter(|r| r.state == RunState::Running) {
        inner.admission.hold(run);
    }
    // Queued runs count against the backlog bound from the first trigger on.
    let backlog = inner.opts.limits.backlog();
    for run in runs.iter().filter(|r| r.state == RunState::Queued) {
        backlog.insert(run.id, crate::limits::user_key(run.trigger.user.as_deref()));
    }
    // Before anything can start a driver: a cancel or a decision that arrives
    // while the background part works finds its run still to be repaired.
    if let Ok(mut pending) = inner.recovering.lock() {
        pending.extend(
            runs.iter()
                .filter(|r| r.state != RunState::Queued)
                .map(|r| (r.id, Pending::default())),
        );
    }
    if !background {
        resume(inner, runs).await;
        return Ok(count);
    }
    let inner = Arc::clone(inner);
    tokio::spawn(async move { resume(&inner, runs).await });
    Ok(count)
}

/// The per-run part of recovery. A run it cannot repair (the store failing)
/// is handed to a driver, which repairs it first and tries again until it can.
async fn resume(inner: &Arc<Inner>, runs: Vec<crate::store::RunRecord>) {
    let mut left_queued = false;
    for run in runs {
        if inner.shutdown.is_cancelled() {
            return;
        }
        // A queued run has nothing to repair: it needs no reads here. Past
        // the bound on drivers it is left to the backlog drainer, so a
        // backlog of thousands does not get thousands of drivers at once.
        if run.state == RunState::Queued {
            if inner.driver_count() < background::MAX_STARTING {
                inner.spawn_driver(run.id, false);
            } else {
                left_queued = true;
            }
            continue;
        }
        let needs_work = match repair_if_pending(inner, &run, pending(inner, run.id)).await {
            Ok(repaired) => repaired.unwrap_or(false),
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "cannot repair the interrupted run now; its driver tries again");
                true
            }
        };
        if needs_work || needs_driver(run.state) {
            inner.spawn_driver(run.id, false);
        } else if let Some(at) = run.wake_at.or(run.deadline) {
            let _ = inner.timers.send(super::TimerMsg::Wake(at, run.id));
        }
    }
    if left_queued {
        tokio::spawn(background::drain_backlog(
            Arc::downgrade(inner),
            background::DRAIN_EVERY,
            inner.shutdown.clone(),
        ));
    }
}

/// A run still to be repaired after a start. Whoever reaches it first (the
/// background recovery, or a driver started by a cancel or a decision)
/// repairs it while holding the lock; anyone else waits for that repair to
/// end, never going on past a repair in progress. (A cancel that went on
/// while the recovery was between claiming a run and reading its nodes
/// cancelled the run with its attempt still marked running and its process
/// group alive.)
#[derive(Clone, Debug, Default)]
pub(crate) struct Pending(Arc<tokio::sync::Mutex<bool>>);

/// The repair still pending for `run`, if any. Taken before the run is
/// read, so that a repair ending meanwhile is not missed: the handle outlives
/// the run's removal from the pending set.
pub(crate) fn pending(inner: &Inner, run: RunId) -> Option<Pending> {
    inner
        .recovering
        .lock()
        .ok()
        .and_then(|p| p.get(&run).cloned())
}

/// Repairs `run` (read after `pending` was taken) if recovery has not yet:
/// stops what its interrupted attempts left running and marks them
/// interrupted. `None` when there was nothing to do; otherwise whether the
/// run has nodes to work on (`false` too when this call found the repair
/// made elsewhere: the caller's view of the run is then out of date).
pub(crate) async fn repair_if_pending(
    inner: &Arc<Inner>,
    run: &crate::store::RunRecord,
    pending: Option<Pending>,
) -> Result<Option<bool>, EngineError> {
    let Some(Pending(slot)) = pending else {
        return Ok(None);
    };
    let mut repaired = slot.lock().await;
    if *repaired {
        return Ok(Some(false));
    }
    // On an error the run stays pending: its next driver tries again.
    let needs_work = repair(inner, run).await?;
    *repaired = true;
    if let Ok(mut p) = inner.recovering.lock() {
        p.remove(&run.id);
    }
    Ok(Some(needs_work))
}

async fn repair(inner: &Arc<Inner>, run: &crate::store::RunRecord) -> Result<bool, EngineError> {
    let version = match inner.version(run.version_id).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(run = %run.id, error = %e, "cannot load the run's pipeline version");
            inner.admission.release(run.id);
            let now = sluice_shared::time::now_ms();
            inner
                .store
                .apply(vec![
                    Change::Run(
                        run.id,
                        RunChange {
                            state: Some(RunState::Failed),
                            finished_at: Some(now),
                            error: Some(Some(format!("cannot load pipeline version: {e}"))),
                            ..Default::default()
                        },
                    ),
                    Change::Sql(vec![crate::store::Store::cancel_approvals_sql(run.id, now)]),
                ])
                .await?;
            return Ok(false);
        }
    };
    let nodes = inner.store.nodes(run.id).await?;
    let attempts = inner.store.attempts(run.id).await?;
    let mut changes = Vec::new();
    // Notes for the interrupted attempts' logs, written once the repair is committed.
    let mut notes = Vec::new();
    let mut needs_work = false;
    for n in nodes.iter().filter(|n| n.state == NodeState::Running) {
        let Some(node) = version.pipeline.node(&n.node_id) else {
            continue;
        };
        // Whatever the attempt started and is still running is stopped
        // before the node is retried or held for a decision.
        if let Some(a) = attempts
            .iter()
            .find(|a| a.node_id == n.node_id && a.attempt == n.attempts)
            && let Some(pgid) = a.pgid
            && crate::nodes::pgroup::stop_leftover(pgid, a.pstart.unwrap_or(0), LEFTOVER_GRACE)
                .await
        {
            tracing::warn!(run = %run.id, node = %n.node_id, pgid, "stopped processes an interrupted attempt left running");
        }
        // Its processes are also found by their marker: the group may never
        // have been recorded (a crash right after the spawn), or some may
        // have left it (setsid).
        if matches!(node.kind, NodeKind::Shell(_) | NodeKind::Plugin(_)) {
            let marker =
                crate::nodes::attempt_marker(run.id, run.created_at, &n.node_id, n.attempts);
            if crate::nodes::pgroup::stop_marked(
                crate::nodes::ATTEMPT_MARKER,
                &marker,
                LEFTOVER_GRACE,
            )
            .await
            {
                tracing::warn!(run = %run.id, node = %n.node_id, "stopped processes an interrupted attempt left running (found by their marker)");
            }
        }
        changes.push(Change::AttemptEnd(
            run.id,
            n.node_id.clone(),
            n.attempts,
            AttemptState::Interrupted,
            Some("interrupted: the daemon stopped during this attempt".into()),
        ));
        let interrupted = attempts
            .iter()
            .filter(|a| a.node_id == n.node_id && a.state == AttemptState::Interrupted)
            .count()
            + 1;
        let attempt = n.attempts;
        let change = if node.effective_on_crash() == OnCrash::Ask {
            notes.push((n.node_id.clone(), attempt, NoteSlot::Retry, format!("attempt {attempt} interrupted by a daemon stop; not safe to repeat: waiting for an operator to retry, succeed or fail it")));
            NodeChange { state: Some(NodeState::NeedsDecision), error: Some(Some("interrupted by a daemon stop; not safe to repeat without a decision (retry, succeed or fail it)".into())), ..Default::default() }
        } else if interrupted >= MAX_INTERRUPTIONS {
            let error =
                format!("interrupted {interrupted} times by daemon stops; not retried again");
            notes.push((
                n.node_id.clone(),
                attempt,
                NoteSlot::Retry,
                format!("attempt {attempt} interrupted by a daemon stop"),
            ));
            if let Some(text) = outcome_note(NodeState::Failed, Some(&error)) {
                notes.push((n.node_id.clone(), attempt, NoteSlot::Outcome, text));
            }
            NodeChange {
                state: Some(NodeState::Failed),
                error: Some(Some(error)),
                finished_at: Some(Some(sluice_shared::time::now_ms())),
                ..Default::default()
            }
        } else {
            notes.push((
                n.node_id.clone(),
                attempt,
                NoteSlot::Retry,
                format!("attempt {attempt} interrupted by a daemon stop; retrying"),
            ));
            NodeChange {
                state: Some(NodeState::Pending),
                ..Default::default()
            }
        };
        changes.push(Change::Node(run.id, n.node_id.clone(), change));
        needs_work = true;
    }
    if !changes.is_empty() {
        inner.store.apply(changes).await?;
    }
    for (node, attempt, slot, text) in notes {
        LogSink::new(
            run.id,
            &node,
            attempt,
            inner.logs.clone(),
            Arc::clone(&inner.redactor),
        )
        .closing_note(slot, &text)
        .await;
    }
    Ok(needs_work)
}
