//! An approval node's step: opening its request, then looking at votes,
//! reminders and expiry.

use sluice_shared::event::Event;
use sluice_shared::model::node::ApprovalNode;
use sluice_shared::run::{AttemptState, NodeState};
use tokio_util::sync::CancellationToken;

use super::Run;
use crate::engine::approval::{self, Step};
use crate::engine::{EngineError, Inner};
use crate::nodes::{NodeError, NoteSlot};
use crate::notify::approval::ApprovalEvent;
use crate::store::NodeChange;
use sluice_shared::time::now_ms;

impl Run {
    /// Opens or looks at approval node `i`; true when it finished or must be opened again.
    pub(super) async fn approval_step(
        &mut self,
        inner: &Inner,
        i: usize,
        a: &ApprovalNode,
    ) -> Result<bool, EngineError> {
        let node_id = self.node(i).id.clone();
        if self.nodes[i].state == NodeState::Pending {
            let attempt = self.nodes[i].attempts + 1;
            let ctx = self.node_context(inner, i, attempt, CancellationToken::new());
            let opening = approval::Opening {
                run: self.id,
                pipeline: &self.record.pipeline,
                user: self.record.trigger.user.as_deref(),
                node_id: &node_id,
                attempt,
                timeout: self.node(i).timeout,
            };
            let opened = approval::open(inner, &opening, a, &ctx).await?;
            self.attempt_start(i, attempt);
            return Ok(match opened.step {
                Step::Wait(wake) => {
                    self.set(i, approval::waiting(attempt, wake, true));
                    if opened.existed {
                        // Opened before a crash: look at what it holds now.
                        self.nodes[i].recheck = true;
                        return Ok(true);
                    }
                    if a.notify.is_some()
                        && let Some(info) = inner.store.approval(opened.id).await?
                    {
                        approval::announce(inner, a, &ctx, &info, ApprovalEvent::Requested);
                    }
                    self.events.push(Event::ApprovalRequested {
                        approval: opened.id,
                        run: self.id,
                        node: node_id,
                        pipeline: self.record.pipeline.clone(),
                        deadline: opened.deadline,
                    });
                    false
                }
                Step::Done(result) => {
                    self.set(
                        i,
                        NodeChange {
                            attempts: Some(attempt),
                            started_at: Some(now_ms()),
                            ..Default::default()
                        },
                    );
                    self.complete(inner, i, attempt, result, false);
                    true
                }
                Step::TimedOut(msg) => {
                    self.set(
                        i,
                        NodeChange {
                            attempts: Some(attempt),
                            started_at: Some(now_ms()),
                            ..Default::default()
                        },
                    );
                    self.complete(inner, i, attempt, Err(NodeError::fatal(msg)), false);
                    true
                }
            });
        }
        let attempt = self.nodes[i].attempts;
        let reminder_due = self.nodes[i].wake_at.is_some_and(|w| w <= now_ms());
        self.nodes[i].recheck = false;
        let log = self.log_sink(inner, i, attempt);
        let (step, events, notice) =
            approval::check(inner, self.id, &node_id, attempt, reminder_due, &log).await?;
        self.events.extend(events);
        if let Some((info, event)) = notice
            && a.notify.is_some()
        {
            let ctx = self.node_context(inner, i, attempt, CancellationToken::new());
            approval::announce(inner, a, &ctx, &info, event);
        }
        Ok(match step {
            Step::Wait(wake) => {
                if wake != self.nodes[i].wake_at {
                    self.set(
                        i,
                        NodeChange {
                            wake_at: Some(wake),
                            ..Default::default()
                        },
                    );
                }
                false
            }
            Step::Done(result) => {
                self.complete(inner, i, attempt, result, false);
                true
            }
            Step::TimedOut(msg) => {
                self.attempt_end(i, attempt, AttemptState::Failed, Some(msg.clone()));
                let policy = self.version.pipeline.retry_for(self.node(i));
                let again = attempt < policy.attempts;
                if again {
                    self.notes.push((
                        i,
                        attempt,
                        NoteSlot::Retry,
                        format!(
                            "{msg}; asking again (attempt {} of {})",
                            attempt + 1,
                            policy.attempts
                        ),
                    ));
                }
                self.set(
                    i,
                    NodeChange {
                        state: Some(if again {
                            NodeState::Pending
                        } else {
                            NodeState::Failed
                        }),
                        error: Some(Some(msg)),
                        wake_at: Some(None),
                        finished_at: Some((!again).then(now_ms)),
                        ..Default::default()
                    },
                );
                true
            }
        })
    }
}
