//! Readiness: which nodes can start now, which are skipped, and when the
//! run must look again.

use std::time::Duration;

use sluice_shared::model::NodeKind;
use sluice_shared::run::{AttemptState, NodeState};
use tokio_util::sync::CancellationToken;

use super::Run;
use crate::engine::Inner;
use crate::store::NodeChange;
use sluice_shared::time::now_ms;

/// Evaluates node `i`'s `when` for attempt `attempt`: whether it holds, or why
/// it cannot be evaluated (already redacted).
pub(super) type WhenEval<'a> = dyn FnMut(&Run, usize, u32) -> Result<bool, String> + 'a;

impl Run {
    /// Evaluates node `i`'s `when` condition against its context.
    pub(super) fn eval_when(&self, inner: &Inner, i: usize, attempt: u32) -> Result<bool, String> {
        let Some(expr) = &self.node(i).when else {
            return Ok(true);
        };
        let ctx = self.node_context(inner, i, attempt, CancellationToken::new());
        inner
            .templates
            .eval_condition(expr, &ctx.template)
            .map_err(|e| inner.redactor.redact(&e.message).into_owned())
    }

    /// Marks pending nodes whose needs did not all succeed (or whose `when` is
    /// false) as skipped, and returns the nodes that can start now. Waiting
    /// nodes past their deadline become ready (backoff) or succeed (delay).
    pub(super) fn ready(&mut self, now: i64, when: &mut WhenEval<'_>) -> Vec<usize> {
        let mut ready = Vec::new();
        let order = self.version.order.clone();
        for i in order {
            match self.nodes[i].state {
                NodeState::Pending => {
                    let deps = self.version.graph.deps(i).to_vec();
                    if deps.iter().any(|&d| !self.nodes[d].state.is_finished()) {
                        continue;
                    }
                    if let Some(&d) = deps.iter().find(|&&d| {
                        self.nodes[d].state != NodeState::Succeeded || self.nodes[d].stopped
                    }) {
                        let why = if self.nodes[d].stopped {
                            format!("filter '{}' stopped the run here", self.node(d).id)
                        } else {
                            format!("needs '{}', which {}", self.node(d).id, self.nodes[d].state)
                        };
                        self.set(
                            i,
                            NodeChange {
                                state: Some(NodeState::Skipped),
                                error: Some(Some(why)),
                                finished_at: Some(Some(now)),
                                ..Default::default()
                            },
                        );
                        continue;
                    }
                    if self.node(i).when.is_some() {
                        let attempt = self.nodes[i].attempts + 1;
                        match when(self, i, attempt) {
                            Ok(true) => {}
                            Ok(false) => {
                                self.set(
                                    i,
                                    NodeChange {
                                        state: Some(NodeState::Skipped),
                                        error: Some(Some("`when` was false".into())),
                                        finished_at: Some(Some(now)),
                                        ..Default::default()
                                    },
                                );
                                continue;
                            }
                            Err(e) => {
                                let msg = format!("cannot evaluate `when`: {e}");
                                self.attempt_end(
                                    i,
                                    attempt,
                                    AttemptState::Failed,
                                    Some(msg.clone()),
                                );
                                self.set(
                                    i,
                                    NodeChange {
                                        state: Some(NodeState::Failed),
                                        attempts: Some(attempt),
                                        error: Some(Some(msg)),
                                        finished_at: Some(Some(now)),
                                        ..Default::default()
                                    },
                                );
                                continue;
                            }
                        }
                    }
                    ready.push(i);
                }
                NodeState::Waiting
                    if self.nodes[i].recheck || self.nodes[i].wake_at.is_some_and(|w| w <= now) =>
                {
                    let is_delay = matches!(self.node(i).kind, NodeKind::Delay(_));
                    if is_delay && self.nodes[i].output.is_some() {
                        let attempt = self.nodes[i].attempts;
                        self.attempt_end(i, attempt, AttemptState::Succeeded, None);
                        self.set(
                            i,
                            NodeChange {
                                state: Some(NodeState::Succeeded),
                                wake_at: Some(None),
                                finished_at: Some(Some(now)),
                                ..Default::default()
                            },
                        );
                    } else {
                        ready.push(i);
                    }
                }
                _ => {}
            }
        }
        ready
    }

    /// When the run must look again: its next node wait or its deadline.
    pub(super) fn next_wake(&self) -> Option<i64> {
        let nodes = self
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Waiting)
            .filter_map(|n| n.wake_at)
            .min();
        match (nodes, self.record.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// How long a run that waits for a worker may sleep: until its deadline or
/// the next wait of another node (a delay ending, an approval expiring, a
/// backoff ending) — those need no worker. Waits already due are left out:
/// what they made ready is what waits for the worker, and waking for them
/// again would only spin.
pub(super) fn starved_wake(run: &Run) -> Option<Duration> {
    let now = now_ms();
    let next = run
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Waiting)
        .filter_map(|n| n.wake_at)
        .filter(|&w| w > now)
        .min();
    let at = match (next, run.record.deadline) {
        (Some(w), Some(d)) => Some(w.min(d)),
        (w, d) => w.or(d),
    }?;
    Some(Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use sluice_shared::event::Event;
    use sluice_shared::run::{AttemptState, NodeState};

    use super::super::test_run;
    use crate::store::Change;

    const CHAIN: &str = "
nodes:
  - { id: a, kind: transform, output: { x: 1 } }
  - { id: b, kind: transform, needs: [a], output: { x: 2 } }
  - { id: c, kind: transform, output: { x: 3 } }
";

    fn never(_: &super::Run, _: usize, _: u32) -> Result<bool, String> {
        panic!("no node here has a `when`")
    }

    #[test]
    fn roots_are_ready_and_a_node_waits_for_its_needs() {
        let mut run = test_run(CHAIN);
        assert_eq!(run.ready(10, &mut never), vec![0, 2]);
        assert!(
            run.changes.is_empty(),
            "nothing is recorded for ready nodes"
        );
        run.nodes[0].state = NodeState::Running;
        assert_eq!(run.ready(10, &mut never), vec![2], "b waits while a runs");
        run.nodes[0].state = NodeState::Succeeded;
        assert_eq!(run.ready(10, &mut never), vec![1, 2]);
    }

    #[test]
    fn a_failed_need_skips_its_dependents_with_the_reason() {
        let mut run = test_run(CHAIN);
        run.nodes[0].state = NodeState::Failed;
        assert_eq!(run.ready(10, &mut never), vec![2]);
        assert_eq!(run.nodes[1].state, NodeState::Skipped);
        assert_eq!(
            run.nodes[1].error.as_deref(),
            Some("needs 'a', which failed")
        );
        let Some(Change::Node(_, id, change)) = run.changes.first() else {
            panic!("{:?}", run.changes);
        };
        assert_eq!(id, "b");
        assert_eq!(change.finished_at, Some(Some(10)));
        assert!(run.events.iter().any(|e| matches!(
            e,
            Event::NodeState { node, state: NodeState::Skipped, .. } if node == "b"
        )));
    }

    #[test]
    fn a_stopped_filter_skips_what_follows_it() {
        let mut run = test_run(CHAIN);
        run.nodes[0].state = NodeState::Succeeded;
        run.nodes[0].stopped = true;
        run.ready(10, &mut never);
        assert_eq!(run.nodes[1].state, NodeState::Skipped);
        assert_eq!(
            run.nodes[1].error.as_deref(),
            Some("filter 'a' stopped the run here")
        );
    }

    #[test]
    fn when_decides_and_a_broken_when_fails_the_node() {
        let mut run = test_run(
            "
nodes:
  - { id: go, kind: transform, when: 'true', output: {} }
  - { id: stop, kind: transform, when: 'false', output: {} }
  - { id: bad, kind: transform, when: 'trigger.kind', output: {} }
",
        );
        let mut asked = Vec::new();
        let ready = run.ready(10, &mut |run, i, attempt| {
            asked.push((run.node(i).id.clone(), attempt));
            match run.node(i).id.as_str() {
                "go" => Ok(true),
                "stop" => Ok(false),
                _ => Err("boom".into()),
            }
        });
        assert_eq!(ready, vec![0]);
        assert_eq!(
            asked,
            [
                ("go".to_owned(), 1),
                ("stop".to_owned(), 1),
                ("bad".to_owned(), 1)
            ]
        );
        assert_eq!(run.nodes[1].state, NodeState::Skipped);
        assert_eq!(run.nodes[1].error.as_deref(), Some("`when` was false"));
        assert_eq!(run.nodes[2].state, NodeState::Failed);
        assert_eq!(
            run.nodes[2].attempts, 1,
            "the failed evaluation is an attempt"
        );
        assert_eq!(
            run.nodes[2].error.as_deref(),
            Some("cannot evaluate `when`: boom")
        );
        assert!(run.changes.iter().any(|c| matches!(
            c,
            Change::AttemptEnd(_, n, 1, AttemptState::Failed, Some(m)) if n == "bad" && m.contains("boom")
        )));
    }

    #[test]
    fn due_waits_come_back_and_early_ones_do_not() {
        let mut run = test_run(
            "
nodes:
  - { id: pause, kind: delay, for: 1m }
  - { id: flaky, kind: transform, output: {} }
",
        );
        for rt in &mut run.nodes {
            rt.state = NodeState::Waiting;
            rt.wake_at = Some(100);
            rt.attempts = 1;
        }
        // The delay's output says it has begun; the other waits out a backoff.
        run.nodes[0].output = Some(serde_json::json!({ "until": "later" }));
        assert!(run.ready(99, &mut never).is_empty(), "not due yet");
        assert_eq!(run.next_wake(), Some(100));
        assert_eq!(run.ready(100, &mut never), vec![1], "the backoff is over");
        assert_eq!(
            run.nodes[0].state,
            NodeState::Succeeded,
            "the delay is over"
        );
        assert!(run.changes.iter().any(|c| matches!(
            c,
            Change::AttemptEnd(_, n, 1, AttemptState::Succeeded, None) if n == "pause"
        )));
    }

    #[test]
    fn a_starved_run_wakes_for_the_next_future_wait_or_its_deadline() {
        let mut run = test_run(CHAIN);
        assert_eq!(super::starved_wake(&run), None, "nothing to wake for");
        let far = super::now_ms() + 3_600_000;
        run.record.deadline = Some(far);
        let woke = super::starved_wake(&run).expect("the deadline");
        assert!(woke > std::time::Duration::from_secs(3_000), "{woke:?}");
        run.nodes[2].state = super::NodeState::Waiting;
        run.nodes[2].wake_at = Some(super::now_ms() + 60_000);
        let woke = super::starved_wake(&run).expect("the wait");
        assert!(woke <= std::time::Duration::from_secs(60), "{woke:?}");
        run.nodes[2].wake_at = Some(1);
        let woke = super::starved_wake(&run).expect("the deadline again");
        assert!(
            woke > std::time::Duration::from_secs(3_000),
            "a due wait is left out: {woke:?}"
        );
    }
}
