//! How an attempt's end, or an operator's resolution, changes a node.

use serde_json::Value;
use sluice_shared::model::NodeKind;
use sluice_shared::run::{AttemptState, NodeState, Resolution};

use super::Run;
use crate::engine::{Command, EngineError, Inner};
use crate::nodes::{NodeError, NoteSlot, Outcome};
use crate::store::NodeChange;
use sluice_shared::time::{self as backoff, now_ms};

impl Run {
    /// Records how an attempt ended: success, wait, retry after backoff, or failure.
    pub(super) fn complete(
        &mut self,
        inner: &Inner,
        i: usize,
        attempt: u32,
        result: Result<Outcome, NodeError>,
        cancelled: bool,
    ) {
        let now = now_ms();
        if matches!(self.node(i).kind, NodeKind::Llm(_)) {
            self.charge_llm(inner, &result);
        }
        match result {
            // A cancelled attempt is cancelled whatever it returned.
            _ if cancelled => {
                self.attempt_end(
                    i,
                    attempt,
                    AttemptState::Cancelled,
                    Some("cancelled".into()),
                );
                self.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Cancelled),
                        error: Some(Some("cancelled".into())),
                        finished_at: Some(Some(now)),
                        ..Default::default()
                    },
                );
            }
            Ok(Outcome::Done(out)) | Ok(Outcome::Stop(out)) => {
                let stop = matches!(out.get("passed"), Some(Value::Bool(false)))
                    && matches!(self.node(i).kind, NodeKind::Filter(_));
                let out = inner.redactor.redact_json(out);
                self.attempt_end(i, attempt, AttemptState::Succeeded, None);
                self.nodes[i].stopped = stop;
                self.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Succeeded),
                        output: Some(Some(out)),
                        error: Some(None),
                        finished_at: Some(Some(now)),
                        wake_at: Some(None),
                        ..Default::default()
                    },
                );
            }
            Ok(Outcome::WaitUntil(until, out)) => {
                let at = until.as_millisecond();
                self.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Waiting),
                        output: Some(Some(out)),
                        wake_at: Some(Some(at)),
                        ..Default::default()
                    },
                );
            }
            Err(e) => {
                let message = inner.redactor.redact(&e.message).into_owned();
                let output = e.output.clone().map(|o| inner.redactor.redact_json(o));
                self.attempt_end(i, attempt, AttemptState::Failed, Some(message.clone()));
                let policy = self.version.pipeline.retry_for(self.node(i));
                if e.retryable && attempt < policy.attempts {
                    let wait = backoff::delay(&policy, attempt + 1, e.retry_after);
                    let wake =
                        now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2));
                    let note = format!(
                        "attempt {attempt} failed: {message}; retrying in {} (attempt {} of {})",
                        sluice_shared::Duration(std::time::Duration::from_millis(
                            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                        )),
                        attempt + 1,
                        policy.attempts
                    );
                    self.notes.push((i, attempt, NoteSlot::Retry, note));
                    self.set(
                        i,
                        NodeChange {
                            state: Some(NodeState::Waiting),
                            output: Some(output),
                            error: Some(Some(message)),
                            wake_at: Some(Some(wake)),
                            ..Default::default()
                        },
                    );
                } else {
                    self.set(
                        i,
                        NodeChange {
                            state: Some(NodeState::Failed),
                            output: Some(output),
                            error: Some(Some(message)),
                            finished_at: Some(Some(now)),
                            wake_at: Some(None),
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }

    /// Applies an operator's resolution of a node that needs a decision, or a
    /// nudge to look at an approval again.
    pub(super) fn apply_command(&mut self, cmd: Command) {
        let (node_id, resolution, reply) = match cmd {
            Command::Resolve(node_id, resolution, reply) => (node_id, resolution, reply),
            Command::Recheck(node_id) => {
                if let Some(rt) = self
                    .version
                    .pipeline
                    .nodes
                    .iter()
                    .position(|n| n.id == node_id)
                    .and_then(|i| self.nodes.get_mut(i))
                {
                    rt.recheck = true;
                }
                return;
            }
        };
        let Some(i) = self
            .version
            .pipeline
            .nodes
            .iter()
            .position(|n| n.id == node_id)
        else {
            let _ = reply.send(Err(EngineError::Conflict(format!(
                "run {} has no node '{node_id}'",
                self.id
            ))));
            return;
        };
        if self.nodes[i].state != NodeState::NeedsDecision {
            let _ = reply.send(Err(EngineError::Conflict(format!(
                "node '{node_id}' of run {} is {}, not needs_decision",
                self.id, self.nodes[i].state
            ))));
            return;
        }
        let now = now_ms();
        match resolution {
            Resolution::Retry => self.set(
                i,
                NodeChange {
                    state: Some(NodeState::Pending),
                    ..Default::default()
                },
            ),
            Resolution::Succeed { output } => self.set(
                i,
                NodeChange {
                    state: Some(NodeState::Succeeded),
                    output: Some(Some(output)),
                    error: Some(None),
                    finished_at: Some(Some(now)),
                    ..Default::default()
                },
            ),
            Resolution::Fail { reason } => self.set(
                i,
                NodeChange {
                    state: Some(NodeState::Failed),
                    error: Some(Some(
                        reason.unwrap_or_else(|| "failed by an operator after a crash".into()),
                    )),
                    finished_at: Some(Some(now)),
                    ..Default::default()
                },
            ),
        }
        let _ = reply.send(Ok(()));
    }
}
