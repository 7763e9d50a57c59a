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

use std::sync::Arc;
use std::time::Duration;

use sluice_shared::model::node::OnCrash;
use sluice_shared::run::{AttemptState, NodeState, RunState};

use super::{EngineError, Inner, needs_driver};
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
    if !background {
        resume(inner, runs).await?;
        return Ok(count);
    }
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Err(e) = resume(&inner, runs).await {
            tracing::error!(error = %e, "recovery stopped; unfinished runs are picked up by the queue poller or the next start");
        }
    });
    Ok(count)
}

/// The per-run part of recovery.
async fn resume(inner: &Arc<Inner>, runs: Vec<crate::store::RunRecord>) -> Result<(), EngineError> {
    for run in runs {
        if inner.shutdown.is_cancelled() {
            return Ok(());
        }
        // A queued run has nothing to repair: it needs no reads here.
        if run.state == RunState::Queued {
            let leave_to_poller = inner.opts.poll_interval.is_some() && inner.driver_count() >= 256;
            if !leave_to_poller {
                inner.spawn_driver(run.id, false);
            }
            continue;
        }
        let version = match inner.version(run.version_id).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(run = %run.id, error = %e, "cannot load the run's pipeline version");
                inner.admission.release(run.id);
                let now = jiff::Timestamp::now().as_millisecond();
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
                continue;
            }
        };
        let nodes = inner.store.nodes(run.id).await?;
        let attempts = inner.store.attempts(run.id).await?;
        let mut changes = Vec::new();
        let mut needs_work = needs_driver(run.state);
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
            let change = if node.effective_on_crash() == OnCrash::Ask {
                NodeChange { state: Some(NodeState::NeedsDecision), error: Some(Some("interrupted by a daemon stop; not safe to repeat without a decision (retry, succeed or fail it)".into())), ..Default::default() }
            } else if interrupted >= MAX_INTERRUPTIONS {
                NodeChange {
                    state: Some(NodeState::Failed),
                    error: Some(Some(format!(
                        "interrupted {interrupted} times by daemon stops; not retried again"
                    ))),
                    finished_at: Some(Some(jiff::Timestamp::now().as_millisecond())),
                    ..Default::default()
                }
            } else {
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
        if needs_work || run.state == RunState::Running {
            inner.spawn_driver(run.id, false);
        } else if let Some(at) = run.wake_at.or(run.deadline) {
            let _ = inner.timers.send(super::TimerMsg::Wake(at, run.id));
        }
    }
    Ok(())
}
