//! Wire types of runs, their logs and the event stream.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::run::{AttemptState, NodeState, Resolution, RetryMode, RunId, RunState, TriggerInfo};

/// A run in lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Id.
    pub id: RunId,
    /// Pipeline.
    pub pipeline: String,
    /// Version number.
    #[serde(default)]
    pub version: Option<i64>,
    /// State.
    pub state: RunState,
    /// What started it.
    pub trigger: TriggerInfo,
    /// Owner of the run.
    #[serde(default)]
    pub user: Option<String>,
    /// Accepted at (ms since epoch).
    pub created_at: i64,
    /// Started at (ms).
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Finished at (ms).
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// The retried run.
    #[serde(default)]
    pub retry_of: Option<RunId>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Filters and paging for `runs.list`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunsListParams {
    /// Only this pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Only these states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<RunState>,
    /// Only this trigger kind (manual, cron, webhook, retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Only runs of this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Created at or after (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Created before (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Keyset paging: runs with ids below this (newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<RunId>,
    /// Page size (default 50, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `runs.list` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunsPage {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default)]
    pub next: Option<RunId>,
}

/// One attempt in `runs.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// Number from 1.
    pub attempt: u32,
    /// How it ended.
    pub state: AttemptState,
    /// Started (ms).
    pub started_at: i64,
    /// Ended (ms).
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// Error.
    #[serde(default)]
    pub error: Option<String>,
}

/// One node in `runs.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Needs.
    #[serde(default)]
    pub needs: Vec<String>,
    /// State.
    pub state: NodeState,
    /// Attempts started.
    pub attempts: Vec<AttemptInfo>,
    /// Output.
    #[serde(default)]
    pub output: Option<Value>,
    /// Error.
    #[serde(default)]
    pub error: Option<String>,
    /// Started (ms).
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Finished (ms).
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// Deadline of a wait (ms).
    #[serde(default)]
    pub wake_at: Option<i64>,
    /// Output reused from this run.
    #[serde(default)]
    pub reused_from: Option<RunId>,
}

/// `runs.get` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Inputs.
    pub inputs: Value,
    /// Nodes in topological order.
    pub nodes: Vec<NodeInfo>,
}

/// `runs.get`, `runs.cancel` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRef {
    /// The run.
    pub id: RunId,
}

/// `runs.retry` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryParams {
    /// The finished run.
    pub id: RunId,
    /// `failed` (default) or `all`.
    #[serde(default)]
    pub mode: RetryMode,
}

/// `runs.resolve` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolveParams {
    /// The run.
    pub id: RunId,
    /// The node in `needs_decision`.
    pub node: String,
    /// What to do.
    pub resolution: Resolution,
}

/// `runs.cancel` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelResult {
    /// The run.
    pub run: RunId,
    /// Always true: a run that cannot be cancelled is an error.
    pub cancelled: bool,
}

/// `runs.retry` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryResult {
    /// The new run.
    pub run: RunId,
    /// The run it retries.
    pub retry_of: RunId,
}

/// `runs.resolve` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolveResult {
    /// The run.
    pub run: RunId,
    /// The node resolved.
    pub node: String,
}

/// `logs.get` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogsParams {
    /// The run.
    pub run: RunId,
    /// Only this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Lines after this cursor (from a previous reply's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// At most this many lines (default 1000, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `logs.get` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogsPage {
    /// Lines in order (node, attempt, seq).
    pub lines: Vec<crate::run::LogLine>,
    /// Cursor for the next call.
    pub next: u64,
    /// Whether the run has finished (no more lines will come).
    pub finished: bool,
    /// More stored lines follow this page now (the line or byte cap ended it); since 1.2.
    #[serde(default)]
    pub more: bool,
}

/// `subscribe` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscribeParams {
    /// Only events of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
}

/// `subscribe` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Pass to `unsubscribe`; notifications carry it.
    pub subscription: u64,
    /// Sequence number of the newest event already published.
    pub seq: u64,
}

/// The params of an `event` notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventNotice {
    /// The subscription it belongs to.
    pub subscription: u64,
    /// Daemon-wide sequence number (gaps mean events were dropped for this client).
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// The params of a `lagged` notification: resynchronise with `runs.list`/`runs.get`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaggedNotice {
    /// The subscription.
    pub subscription: u64,
    /// How many events were dropped.
    pub missed: u64,
}

/// `unsubscribe` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnsubscribeParams {
    /// From `subscribe`'s result; absent or not a number matches no subscription.
    #[serde(default, deserialize_with = "super::lenient")]
    pub subscription: Option<u64>,
}
