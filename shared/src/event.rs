//! Events the daemon announces as runs progress: the console's live feed and
//! the socket's subscription stream carry these.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::{LogLine, NodeState, RunId, RunState};

/// One change in the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A run was accepted (committed).
    RunCreated {
        /// The run.
        run: RunId,
        /// Its pipeline.
        pipeline: String,
    },
    /// A run changed state.
    RunState {
        /// The run.
        run: RunId,
        /// Its new state.
        state: RunState,
        /// Why it failed, when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A node changed state.
    NodeState {
        /// The run.
        run: RunId,
        /// The node id.
        node: String,
        /// Its new state.
        state: NodeState,
        /// The attempt number (1-based).
        attempt: u32,
        /// The error of a failed attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A node wrote a log line.
    Log {
        /// The run.
        run: RunId,
        /// The node id.
        node: String,
        /// The attempt number.
        attempt: u32,
        /// Position in the attempt's log (dedupe against `logs.get`).
        seq: u32,
        /// Which stream: stdout, stderr or sluice (the daemon's own notes).
        stream: String,
        /// The line, secrets redacted.
        line: String,
    },
    /// A run waits for a person's decision.
    ApprovalRequested {
        /// Approval id.
        approval: i64,
        /// The run.
        run: RunId,
        /// The approval node.
        node: String,
        /// The pipeline.
        pipeline: String,
        /// Deadline (ms since the epoch), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<i64>,
    },
    /// An approval got a vote, or was decided.
    ApprovalDecided {
        /// Approval id.
        approval: i64,
        /// The run.
        run: RunId,
        /// The approval node.
        node: String,
        /// `approved`, `rejected`, or `pending` while more approvals are needed.
        state: String,
        /// Who voted.
        by: String,
    },
    /// An approval's deadline passed undecided.
    ApprovalExpired {
        /// Approval id.
        approval: i64,
        /// The run.
        run: RunId,
        /// The approval node.
        node: String,
        /// What the node's `on_timeout` made of it: reject, approve or fail.
        outcome: String,
    },
    /// A pipeline was added, changed, enabled, disabled or removed.
    PipelineChanged {
        /// Its name.
        name: String,
        /// Its newest stored version number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<i64>,
        /// Whether triggers may start it.
        enabled: bool,
        /// What happened: added, updated, enabled, disabled, removed.
        change: String,
    },
    /// A pipeline file was rejected; the previous version (if any) stays active.
    ConfigError {
        /// The file.
        file: String,
        /// The problems, as `sluice validate` prints them.
        diagnostics: Vec<crate::diagnostic::Diagnostic>,
    },
    /// Something else, as data.
    Other {
        /// What happened.
        what: String,
        /// Details.
        #[serde(default)]
        details: Value,
    },
}

impl Event {
    /// The announcement of a stored log line.
    pub fn log(line: &LogLine) -> Self {
        Self::Log {
            run: line.run,
            node: line.node.clone(),
            attempt: line.attempt,
            seq: line.seq,
            stream: line.stream.clone(),
            line: line.line.clone(),
        }
    }
}
