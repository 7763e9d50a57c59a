//! Start-up: every unfinished run is picked up again. Attempts that were
//! running when the daemon stopped are marked interrupted; their nodes are
//! attempted again (at-least-once) unless they are not safe to repeat
//! (`on_crash: ask`), in which case an operator decides.

use std::sync::Arc;

use sluice_shared::model::node::OnCrash;
use sluice_shared::run::{AttemptState, NodeState, RunState};

use super::{EngineError, Inner, needs_driver};
use crate::store::{Change, NodeChange, RunChange};

/// An attempt interrupted this many times is failed instead of retried again,
/// so a node that crashes the daemon cannot loop forever.
const MAX_INTERRUPTIONS: usize = 3;

pub(crate) async fn recover(inner: &Arc<Inner>) -> Result<usize, EngineError> {
    let runs = inner.store.unfinished_runs().await?;
    let count = runs.len();
    // Running runs hold their slots before any queued run's driver can ask for
    // one: drivers start concurrently, and a queued run must not slip in ahead.
    for run in runs.iter().filter(|r| r.state == RunState::Running) {
        inner.admission.hold(run);
    }
    for run in runs {
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
        // A backlog of queued runs is left to the queue poller (when there is one),
        // which starts them a bounded number at a time.
        let leave_to_poller = run.state == RunState::Queued
            && inner.opts.poll_interval.is_some()
            && inner.driver_count() >= 256;
        if leave_to_poller {
            continue;
        }
        if needs_work || run.state == RunState::Running {
            inner.spawn_driver(run.id, false);
        } else if let Some(at) = run.wake_at.or(run.deadline) {
            let _ = inner.timers.send((at, run.id));
        }
    }
    Ok(count)
}
