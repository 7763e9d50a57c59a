//! The run's change buffer: node and run changes folded per row, recorded
//! in memory at once and committed together by `flush`, with their events
//! and log notes after the commit.

use sluice_shared::event::Event;
use sluice_shared::model::{Node, NodeKind};
use sluice_shared::run::{AttemptState, NodeState, RunState};

use super::Run;
use crate::engine::{EngineError, Inner};
use crate::nodes::NoteSlot;
use crate::store::{Change, NodeChange, RunChange};
use sluice_shared::time::now_ms;

impl Run {
    pub(super) fn node(&self, i: usize) -> &Node {
        &self.version.pipeline.nodes[i]
    }

    pub(super) fn set(&mut self, i: usize, change: NodeChange) {
        let id = self.node(i).id.clone();
        let rt = &mut self.nodes[i];
        if let Some(s) = change.state {
            rt.state = s;
        }
        if let Some(a) = change.attempts {
            rt.attempts = a;
        }
        if let Some(o) = &change.output {
            rt.output = o.clone();
        }
        if let Some(e) = &change.error {
            rt.error = e.clone();
        }
        if let Some(w) = change.wake_at {
            rt.wake_at = w;
        }
        if let Some(state) = change.state {
            self.events.push(Event::NodeState {
                run: self.id,
                node: id.clone(),
                state,
                attempt: rt.attempts,
                error: if state == NodeState::Failed {
                    rt.error.clone()
                } else {
                    None
                },
            });
            if let Some(text) = outcome_note(state, rt.error.as_deref()) {
                let attempt = rt.attempts;
                self.notes.push((i, attempt, NoteSlot::Outcome, text));
            }
        }
        self.push_node(id, change);
    }

    /// Queues a node change, folded into the pending one of the same node when
    /// no statement lies between: one UPDATE per row and flush.
    pub(super) fn push_node(&mut self, id: String, change: NodeChange) {
        let pending = self.foldable().find_map(|c| match c {
            Change::Node(_, n, prev) if *n == id => Some(prev),
            _ => None,
        });
        match pending {
            Some(prev) => prev.absorb(change),
            None => self.changes.push(Change::Node(self.id, id, change)),
        }
    }

    /// The pending changes after the last statement, newest first: a change
    /// of a row among them can take a later change of that row.
    pub(super) fn foldable(&mut self) -> impl Iterator<Item = &mut Change> {
        self.changes
            .iter_mut()
            .rev()
            .take_while(|c| !matches!(c, Change::Sql(_)))
    }

    pub(super) fn attempt_start(&mut self, i: usize, attempt: u32) {
        self.changes.push(Change::AttemptStart(
            self.id,
            self.node(i).id.clone(),
            attempt,
        ));
    }

    pub(super) fn attempt_end(
        &mut self,
        i: usize,
        attempt: u32,
        state: AttemptState,
        error: Option<String>,
    ) {
        self.changes.push(Change::AttemptEnd(
            self.id,
            self.node(i).id.clone(),
            attempt,
            state,
            error,
        ));
    }

    pub(super) fn set_run(&mut self, change: RunChange) {
        if let Some(state) = change.state {
            self.record.state = state;
            let error = change.error.clone().flatten();
            self.events.push(Event::RunState {
                run: self.id,
                state,
                error,
            });
        }
        let pending = self.foldable().find_map(|c| match c {
            Change::Run(_, prev) => Some(prev),
            _ => None,
        });
        match pending {
            // One UPDATE of the run per flush (see `push_node`).
            Some(prev) => prev.absorb(change),
            None => self.changes.push(Change::Run(self.id, change)),
        }
    }

    /// Commits the pending changes, writes the notes on them, then announces them.
    pub(super) async fn flush(&mut self, inner: &Inner) -> Result<(), EngineError> {
        let committed = !self.changes.is_empty();
        // Attempts that end in this flush, counted once it is committed.
        let ended: Vec<(usize, AttemptState)> = self
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::AttemptEnd(_, node, _, state, _) => self
                    .version
                    .pipeline
                    .nodes
                    .iter()
                    .position(|n| &n.id == node)
                    .map(|i| (i, *state)),
                _ => None,
            })
            .collect();
        if committed {
            inner.store.apply(std::mem::take(&mut self.changes)).await?;
        }
        // In order, and before the run's end below waits for the log to settle.
        for (i, attempt, slot, text) in std::mem::take(&mut self.notes) {
            self.log_sink(inner, i, attempt)
                .closing_note(slot, &text)
                .await;
        }
        if !committed {
            return Ok(());
        }
        for (i, state) in ended {
            inner
                .opts
                .telemetry
                .attempt_finished(self.node(i).kind.name(), state);
        }
        let finished = self.events.iter().find_map(|e| match e {
            Event::RunState { state, .. } if state.is_finished() => Some(*state),
            _ => None,
        });
        if let Some(state) = finished {
            let took = self.record.started_at.and_then(|at| {
                u64::try_from(now_ms() - at)
                    .ok()
                    .map(std::time::Duration::from_millis)
            });
            inner
                .opts
                .telemetry
                .run_finished(&self.record.pipeline, state, took);
        }
        let ends_run = finished.is_some();
        if ends_run {
            // Followers stop at the run's end: its last lines must be out first.
            inner.logs_settled().await;
        }
        for e in self.events.drain(..) {
            inner.publish(e);
        }
        Ok(())
    }

    pub(super) fn finish(&mut self, state: RunState, error: Option<String>) {
        let now = now_ms();
        if self
            .version
            .pipeline
            .nodes
            .iter()
            .any(|n| matches!(n.kind, NodeKind::Approval(_)))
        {
            // A run that ends takes its undecided approvals with it.
            self.changes.push(Change::Sql(vec![
                crate::store::Store::cancel_approvals_sql(self.id, now),
            ]));
        }
        if state != RunState::Succeeded {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].state.is_finished() {
                    if matches!(self.nodes[i].state, NodeState::Waiting)
                        && matches!(
                            self.node(i).kind,
                            NodeKind::Delay(_) | NodeKind::Approval(_)
                        )
                    {
                        let attempt = self.nodes[i].attempts;
                        self.attempt_end(i, attempt, AttemptState::Cancelled, error.clone());
                    }
                    let s = if state == RunState::Cancelled {
                        NodeState::Cancelled
                    } else {
                        NodeState::Skipped
                    };
                    self.set(
                        i,
                        NodeChange {
                            state: Some(s),
                            error: Some(error.clone()),
                            wake_at: Some(None),
                            finished_at: Some(Some(now)),
                            ..Default::default()
                        },
                    );
                }
            }
        }
        self.set_run(RunChange {
            state: Some(state),
            finished_at: Some(now),
            wake_at: Some(None),
            error: Some(error),
            ..Default::default()
        });
    }
}

/// The line that ends a node's log, once the node reached `state` (None while it is not finished).
pub(crate) fn outcome_note(state: NodeState, error: Option<&str>) -> Option<String> {
    let why = error.filter(|e| !e.is_empty());
    Some(match (state, why) {
        (NodeState::Succeeded, _) => "node succeeded".to_owned(),
        (NodeState::Failed, Some(e)) => format!("node failed: {e}"),
        (NodeState::Failed, None) => "node failed".to_owned(),
        (NodeState::Skipped, Some(e)) => format!("node skipped: {e}"),
        (NodeState::Skipped, None) => "node skipped".to_owned(),
        (NodeState::Cancelled, Some(e)) if e != "cancelled" => format!("node cancelled: {e}"),
        (NodeState::Cancelled, _) => "node cancelled".to_owned(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use sluice_shared::event::Event;
    use sluice_shared::run::{NodeState, RunState};

    use super::super::test_run;
    use crate::store::{Change, NodeChange, RunChange};

    const TWO: &str = "
nodes:
  - { id: a, kind: transform, output: { x: 1 } }
  - { id: b, kind: transform, output: { x: 2 } }
";

    fn node_changes(run: &super::Run) -> Vec<(&str, &NodeChange)> {
        run.changes
            .iter()
            .filter_map(|c| match c {
                Change::Node(_, id, change) => Some((id.as_str(), change)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn changes_of_one_node_fold_into_one_update() {
        let mut run = test_run(TWO);
        run.set(
            0,
            NodeChange {
                attempts: Some(1),
                started_at: Some(5),
                ..Default::default()
            },
        );
        run.set(
            1,
            NodeChange {
                attempts: Some(1),
                ..Default::default()
            },
        );
        run.attempt_start(0, 1);
        run.set(
            0,
            NodeChange {
                state: Some(NodeState::Succeeded),
                output: Some(Some(serde_json::json!({ "x": 1 }))),
                started_at: Some(9),
                finished_at: Some(Some(6)),
                ..Default::default()
            },
        );
        let nodes = node_changes(&run);
        assert_eq!(nodes.len(), 2, "one change per node: {nodes:?}");
        let (id, a) = nodes[0];
        assert_eq!(id, "a");
        assert_eq!(a.attempts, Some(1));
        assert_eq!(a.started_at, Some(5), "the first start is kept");
        assert_eq!(a.state, Some(NodeState::Succeeded), "the later state wins");
        assert_eq!(a.finished_at, Some(Some(6)));
        assert_eq!(
            run.nodes[0].state,
            NodeState::Succeeded,
            "memory follows at once"
        );
        // A state change is announced and its log note queued, once per change.
        assert_eq!(run.events.len(), 1);
        assert!(
            matches!(&run.events[0], Event::NodeState { node, state: NodeState::Succeeded, attempt: 1, .. } if node == "a")
        );
        assert_eq!(run.notes.len(), 1);
        assert_eq!(run.notes[0].3, "node succeeded");
    }

    #[test]
    fn a_statement_between_two_changes_keeps_them_apart() {
        let mut run = test_run(TWO);
        run.set(
            0,
            NodeChange {
                attempts: Some(1),
                ..Default::default()
            },
        );
        run.changes.push(Change::Sql(Vec::new()));
        run.set(
            0,
            NodeChange {
                attempts: Some(2),
                ..Default::default()
            },
        );
        let nodes = node_changes(&run);
        assert_eq!(
            nodes.len(),
            2,
            "the statement may depend on the first: {nodes:?}"
        );
        assert_eq!(nodes[0].1.attempts, Some(1));
        assert_eq!(nodes[1].1.attempts, Some(2));
    }

    #[test]
    fn run_changes_fold_and_every_state_is_announced() {
        let mut run = test_run(TWO);
        run.set_run(RunChange {
            state: Some(RunState::Running),
            started_at: Some(3),
            ..Default::default()
        });
        run.finish(RunState::Succeeded, None);
        let runs: Vec<&RunChange> = run
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Run(_, change) => Some(change),
                _ => None,
            })
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].state, Some(RunState::Succeeded));
        assert_eq!(runs[0].started_at, Some(3));
        assert!(runs[0].finished_at.is_some());
        let states: Vec<RunState> = run
            .events
            .iter()
            .filter_map(|e| match e {
                Event::RunState { state, .. } => Some(*state),
                _ => None,
            })
            .collect();
        assert_eq!(states, [RunState::Running, RunState::Succeeded]);
        assert_eq!(run.record.state, RunState::Succeeded);
    }

    #[test]
    fn a_failed_run_skips_what_never_ran_and_a_cancelled_one_cancels_it() {
        let mut run = test_run(TWO);
        run.nodes[0].state = NodeState::Succeeded;
        run.finish(RunState::Failed, Some("boom".into()));
        assert_eq!(
            run.nodes[0].state,
            NodeState::Succeeded,
            "finished nodes stay"
        );
        assert_eq!(run.nodes[1].state, NodeState::Skipped);
        assert_eq!(run.nodes[1].error.as_deref(), Some("boom"));

        let mut run = test_run(TWO);
        run.finish(RunState::Cancelled, Some("cancelled".into()));
        assert!(run.nodes.iter().all(|n| n.state == NodeState::Cancelled));
        assert_eq!(run.notes.len(), 2);
        assert_eq!(run.notes[0].3, "node cancelled");
    }

    #[test]
    fn outcome_notes_say_why() {
        assert_eq!(super::outcome_note(NodeState::Running, None), None);
        assert_eq!(
            super::outcome_note(NodeState::Failed, Some("exit 3")).as_deref(),
            Some("node failed: exit 3")
        );
        assert_eq!(
            super::outcome_note(NodeState::Cancelled, Some("run timed out")).as_deref(),
            Some("node cancelled: run timed out")
        );
    }
}
