//! What the store hands back: plain records of runs, nodes, attempts and logs.

use serde::Serialize;
use serde_json::Value;
use sluice_shared::run::{AttemptState, LogLine, NodeState, RunId, RunState, TriggerInfo};

/// Identifies a stored pipeline version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct VersionId(pub i64);

/// A run as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// Pipeline name.
    pub pipeline: String,
    /// The pipeline version the run executes.
    pub version_id: VersionId,
    /// Current state.
    pub state: RunState,
    /// What started it.
    pub trigger: TriggerInfo,
    /// The user it belongs to.
    pub user: Option<String>,
    /// Input values.
    pub inputs: Value,
    /// The run this one retries.
    pub retry_of: Option<RunId>,
    /// Accepted at (ms).
    pub created_at: i64,
    /// First node started at (ms).
    pub started_at: Option<i64>,
    /// Finished at (ms).
    pub finished_at: Option<i64>,
    /// Run time limit (ms).
    pub deadline: Option<i64>,
    /// When a waiting run must be looked at again (ms).
    pub wake_at: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One node of a run as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeRecord {
    /// Node id.
    pub node_id: String,
    /// Position in the pipeline's node list.
    pub position: i64,
    /// Current state.
    pub state: NodeState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Output of the successful attempt (or partial output of a failed one).
    pub output: Option<Value>,
    /// Error of the last failed attempt.
    pub error: Option<String>,
    /// First attempt started at (ms).
    pub started_at: Option<i64>,
    /// Finished at (ms).
    pub finished_at: Option<i64>,
    /// Deadline of a wait (delay, backoff) (ms).
    pub wake_at: Option<i64>,
    /// For a retried run: the run whose output was reused.
    pub reused_from: Option<RunId>,
}

/// One attempt of one node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// Node id.
    pub node_id: String,
    /// Attempt number from 1.
    pub attempt: u32,
    /// How it ended (or running).
    pub state: AttemptState,
    /// Started at (ms).
    pub started_at: i64,
    /// Ended at (ms).
    pub finished_at: Option<i64>,
    /// Its error.
    pub error: Option<String>,
    /// The process group of its child, if it started one.
    pub pgid: Option<i32>,
    /// The group leader's start time (clock ticks since boot).
    pub pstart: Option<u64>,
}

/// A run to create, with its nodes' initial states.
#[derive(Clone, Debug)]
pub struct NewRun {
    /// Pipeline name.
    pub pipeline: String,
    /// Version to execute.
    pub version_id: VersionId,
    /// What started it.
    pub trigger: TriggerInfo,
    /// Input values (defaults applied).
    pub inputs: Value,
    /// The run this retries.
    pub retry_of: Option<RunId>,
    /// Time limit (ms since epoch), if any.
    pub deadline: Option<i64>,
    /// Nodes in pipeline order: id, and for reused nodes the output and source run.
    pub nodes: Vec<NewNode>,
    /// Set for a run executed before it was written (a run of instant nodes):
    /// it is stored already finished, in one write.
    pub done: Option<DoneRun>,
}

/// How a run executed before it was written ended.
#[derive(Clone, Debug)]
pub struct DoneRun {
    /// Its end state (a finished one).
    pub state: RunState,
    /// Created at (ms): taken before it executed, so it precedes `started_at`.
    pub created_at: i64,
    /// Started at (ms).
    pub started_at: i64,
    /// Ended at (ms).
    pub finished_at: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// The nodes' end states, in the order of [`NewRun::nodes`].
    pub nodes: Vec<DoneNode>,
    /// The attempts made.
    pub attempts: Vec<DoneAttempt>,
    /// Its nodes' closing notes (how each ended), stored with it: the log
    /// lines of a run that is written finished.
    pub notes: Vec<LogLine>,
}

/// How a node of a run executed before it was written ended.
#[derive(Clone, Debug)]
pub struct DoneNode {
    /// Its end state.
    pub state: NodeState,
    /// Attempts made.
    pub attempts: u32,
    /// Its output.
    pub output: Option<Value>,
    /// Its error.
    pub error: Option<String>,
    /// Started at (ms).
    pub started_at: Option<i64>,
    /// Ended at (ms).
    pub finished_at: Option<i64>,
}

/// An attempt of a run executed before it was written.
#[derive(Clone, Debug)]
pub struct DoneAttempt {
    /// The node.
    pub node: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// How it ended.
    pub state: AttemptState,
    /// Started and ended at (ms): an instant attempt takes no time.
    pub at: i64,
    /// Its error.
    pub error: Option<String>,
}

/// A node of a new run.
#[derive(Clone, Debug)]
pub struct NewNode {
    /// Node id.
    pub id: String,
    /// Reused output from an earlier run (the node starts succeeded).
    pub reused: Option<(RunId, Value)>,
}

impl NewNode {
    /// Every node of `pipeline`, fresh (none reused), in pipeline order.
    pub fn fresh(pipeline: &sluice_shared::Pipeline) -> Vec<Self> {
        pipeline
            .nodes
            .iter()
            .map(|n| Self {
                id: n.id.clone(),
                reused: None,
            })
            .collect()
    }
}

/// A change to a node of a run.
#[derive(Clone, Debug, Default)]
pub struct NodeChange {
    /// New state.
    pub state: Option<NodeState>,
    /// New attempts count.
    pub attempts: Option<u32>,
    /// New output (`Some(None)` clears it).
    pub output: Option<Option<Value>>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<String>>,
    /// Set started_at if not set.
    pub started_at: Option<i64>,
    /// Set finished_at.
    pub finished_at: Option<Option<i64>>,
    /// New wake time (`Some(None)` clears it).
    pub wake_at: Option<Option<i64>>,
}

/// A change to a run.
#[derive(Clone, Debug, Default)]
pub struct RunChange {
    /// New state.
    pub state: Option<RunState>,
    /// Set started_at if not set.
    pub started_at: Option<i64>,
    /// Set finished_at.
    pub finished_at: Option<i64>,
    /// New wake time (`Some(None)` clears it).
    pub wake_at: Option<Option<i64>>,
    /// New error.
    pub error: Option<Option<String>>,
    /// New run deadline (ms; `Some(None)` clears it).
    pub deadline: Option<Option<i64>>,
}

impl RunChange {
    /// Folds a later change of the same run into this one: applying the
    /// result is applying both in order (`started_at` is only ever set once).
    pub fn absorb(&mut self, later: RunChange) {
        self.state = later.state.or(self.state);
        self.started_at = self.started_at.or(later.started_at);
        self.finished_at = later.finished_at.or(self.finished_at);
        self.wake_at = later.wake_at.or(self.wake_at.take());
        self.error = later.error.or(self.error.take());
        self.deadline = later.deadline.or(self.deadline);
    }
}

impl NodeChange {
    /// Folds a later change of the same node into this one (see [`RunChange::absorb`]).
    pub fn absorb(&mut self, later: NodeChange) {
        self.state = later.state.or(self.state);
        self.attempts = later.attempts.or(self.attempts);
        self.output = later.output.or(self.output.take());
        self.error = later.error.or(self.error.take());
        self.started_at = self.started_at.or(later.started_at);
        self.finished_at = later.finished_at.or(self.finished_at);
        self.wake_at = later.wake_at.or(self.wake_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_changes_apply_as_both_in_order() {
        let mut run = RunChange {
            state: Some(RunState::Running),
            started_at: Some(10),
            deadline: Some(Some(99)),
            ..Default::default()
        };
        run.absorb(RunChange {
            state: Some(RunState::Succeeded),
            started_at: Some(20),
            finished_at: Some(30),
            ..Default::default()
        });
        assert_eq!(run.state, Some(RunState::Succeeded));
        assert_eq!(run.started_at, Some(10), "started_at is set once");
        assert_eq!(run.finished_at, Some(30));
        assert_eq!(
            run.deadline,
            Some(Some(99)),
            "kept when the later change leaves it"
        );

        let mut node = NodeChange {
            attempts: Some(1),
            started_at: Some(10),
            wake_at: Some(Some(50)),
            ..Default::default()
        };
        node.absorb(NodeChange {
            state: Some(NodeState::Succeeded),
            output: Some(Some(serde_json::json!({"ok": true}))),
            wake_at: Some(None),
            finished_at: Some(Some(30)),
            ..Default::default()
        });
        assert_eq!(node.attempts, Some(1));
        assert_eq!(node.state, Some(NodeState::Succeeded));
        assert_eq!(node.wake_at, Some(None), "a later clear wins");
        assert_eq!(node.started_at, Some(10));
        assert_eq!(node.output, Some(Some(serde_json::json!({"ok": true}))));
    }
}
