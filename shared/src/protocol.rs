//! The socket protocol between `sluiced` and its clients: newline-delimited
//! JSON-RPC 2.0 over a Unix stream socket. Documented in docs/protocol.md.
//!
//! Compatibility rule: `hello` and the envelope types never change. Other
//! methods may change only together with a new [`PROTOCOL_MAJOR`]; additions
//! (new methods, new optional fields) bump [`PROTOCOL_MINOR`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::event::Event;
use crate::run::{AttemptState, NodeState, Resolution, RetryMode, RunId, RunState, TriggerInfo};

/// Breaking-change counter: a client with another major version is refused.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Additions counter.
pub const PROTOCOL_MINOR: u32 = 2;
/// Largest frame (one JSON line) accepted by default.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Most bytes of encoded lines in one `logs.get` reply (one line always fits).
pub const LOGS_PAGE_BYTES: usize = 1024 * 1024;

/// The protocol version as text, e.g. "1.0".
pub fn protocol_version() -> String {
    format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
}

/// A request (with `id`) or notification (without) from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always "2.0".
    pub jsonrpc: String,
    /// Echoed in the response; absent for notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Method name, e.g. `runs.get`.
    pub method: String,
    /// Parameters (an object).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl Request {
    /// A request with an id.
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id: Some(Value::from(id)),
            method: method.into(),
            params,
        }
    }
}

/// A response to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Always "2.0".
    pub jsonrpc: String,
    /// The request's id (null when it could not be read).
    pub id: Value,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    /// A success.
    pub fn ok(id: Value, result: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: Value, error: RpcError) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A server-to-client notification (no id), e.g. an event of a subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Always "2.0".
    pub jsonrpc: String,
    /// `event` or `lagged`.
    pub method: String,
    /// The payload.
    pub params: Value,
}

/// Any message the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    /// A response.
    Response(Response),
    /// A notification.
    Notification(Notification),
}

/// A JSON-RPC error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// See [`ErrorCode`].
    pub code: i64,
    /// What went wrong, for people.
    pub message: String,
    /// Details for programs (e.g. `{"retry_after_s": 30}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Error codes: JSON-RPC's own, then sluice's (-32001 and below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum ErrorCode {
    /// The frame is not JSON.
    ParseError = -32700,
    /// The JSON is not a request.
    InvalidRequest = -32600,
    /// No such method.
    MethodNotFound = -32601,
    /// Parameters do not fit the method.
    InvalidParams = -32602,
    /// The daemon failed.
    Internal = -32603,
    /// A run, pipeline, node or approval does not exist.
    NotFound = -32001,
    /// The caller's role does not allow this.
    PermissionDenied = -32002,
    /// A limit refused it (rate, concurrency, daily cap).
    Refused = -32003,
    /// It does not fit the current state (run already finished, ...).
    Conflict = -32004,
    /// `hello` is required first, or the client's protocol major differs.
    Handshake = -32005,
    /// The frame is larger than the daemon accepts.
    FrameTooLarge = -32006,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i64,
            message: message.into(),
            data: None,
        }
    }

    /// Adds machine-readable details.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Whether the code is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code as i64
    }
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also trigger, cancel, retry, resolve and decide approvals.
    Operator,
    /// Also enable/disable pipelines, reload config, manage tokens.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// `hello` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloParams {
    /// The client's protocol version, "MAJOR.MINOR".
    pub protocol: String,
    /// Client name and version, for logs.
    #[serde(default)]
    pub client: String,
}

/// `hello` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The daemon's protocol version.
    pub protocol: String,
    /// The daemon's version.
    pub daemon_version: String,
    /// Who the daemon thinks the caller is.
    pub user: String,
    /// The caller's role.
    pub role: Role,
}

/// `status` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    /// Daemon version.
    pub daemon_version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Known pipelines.
    pub pipelines: usize,
    /// Files currently rejected.
    pub config_errors: usize,
    /// Runs by state (unfinished ones).
    pub queued: u64,
    /// Runs executing.
    pub running: u64,
    /// Runs waiting.
    pub waiting: u64,
    /// Approvals waiting for a decision.
    pub approvals_pending: u64,
    /// Where the state lives.
    pub state_dir: String,
    /// Why the audit trail is broken (rows cut or rewritten), until an admin
    /// acknowledges it with `audit.ack` (protocol 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_problem: Option<String>,
}

/// One pipeline in `pipelines.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineSummary {
    /// Name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Version number in use.
    pub version: i64,
    /// Not disabled by an operator.
    pub enabled: bool,
    /// Its file still exists.
    pub present: bool,
    /// The file.
    pub source: String,
    /// Triggers, as short text ("cron 0 7 * * * Europe/Berlin", "webhook hmac").
    pub triggers: Vec<String>,
    /// Next cron fire time (RFC 3339), if scheduled.
    #[serde(default)]
    pub next_fire: Option<String>,
    /// State of the newest run.
    #[serde(default)]
    pub last_state: Option<RunState>,
    /// Id of the newest run.
    #[serde(default)]
    pub last_run: Option<RunId>,
}

/// `pipelines.get` result: the summary plus the definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: PipelineSummary,
    /// The pipeline as stored (JSON).
    pub definition: Value,
}

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

/// `pipelines.trigger` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerParams {
    /// Pipeline name.
    pub name: String,
    /// Input values.
    #[serde(default)]
    pub inputs: serde_json::Map<String, Value>,
    /// Reply only when the run has finished (with its detail).
    #[serde(default)]
    pub wait: bool,
}

/// `pipelines.trigger` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerResult {
    /// The new run.
    pub run: RunId,
    /// With `wait`: the finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<RunDetail>,
}

/// `pipelines.get`/`enable`/`disable` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineRef {
    /// Pipeline name.
    pub name: String,
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

/// `metrics` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsResult {
    /// Runs started per minute, oldest first, last 60 minutes.
    pub started_per_minute: Vec<u64>,
    /// Runs finished per minute, last 60 minutes.
    pub finished_per_minute: Vec<u64>,
    /// Runs started per hour, last 24 hours.
    pub started_per_hour: Vec<u64>,
    /// Runs finished per hour, last 24 hours.
    pub finished_per_hour: Vec<u64>,
    /// Finished runs that succeeded, last 24 hours (0..1; absent when none finished).
    #[serde(default)]
    pub success_rate: Option<f64>,
    /// Duration percentiles per pipeline.
    pub durations: Vec<PipelineDurations>,
    /// Runs queued.
    pub queue_depth: u64,
    /// Runs running.
    pub active: u64,
    /// Runs waiting.
    pub waiting: u64,
    /// Approvals pending.
    pub approvals_pending: u64,
    /// Triggers refused by limits since start.
    pub limit_refusals: u64,
    /// The backlog bound: past `queue_max` queued runs, triggers are refused (`[limits.global] max_queued`).
    #[serde(default)]
    pub queue_max: u64,
    /// Worker slots (`[engine] workers`).
    #[serde(default)]
    pub workers: u64,
    /// Worker slots executing a node now.
    #[serde(default)]
    pub workers_busy: u64,
    /// Runs with a ready node waiting for a worker.
    #[serde(default)]
    pub waiting_for_worker: u64,
}

/// Duration percentiles of one pipeline's recent runs (milliseconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineDurations {
    /// Pipeline.
    pub pipeline: String,
    /// Runs measured.
    pub count: u64,
    /// Median.
    pub p50_ms: u64,
    /// 95th percentile.
    pub p95_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
}

/// One audit row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// Who.
    pub user: String,
    /// What, e.g. `runs.cancel`.
    pub action: String,
    /// On what, e.g. `run #12`.
    #[serde(default)]
    pub target: Option<String>,
    /// Details.
    pub detail: Value,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// `audit.list` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditListParams {
    /// Rows with ids below this (newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Page size (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `audit.verify` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditVerifyResult {
    /// Rows checked.
    pub rows: u64,
    /// True when the chain is intact.
    pub ok: bool,
    /// The first row that was altered, or after which rows were removed.
    #[serde(default)]
    pub first_bad: Option<i64>,
    /// What is wrong there.
    #[serde(default)]
    pub problem: Option<String>,
}

/// `audit.ack` parameters (protocol 1.2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditAckParams {
    /// What the admin found or did, kept in the acknowledging row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `audit.ack` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditAckResult {
    /// The row that records the acknowledgement.
    pub row: i64,
    /// The problem acknowledged.
    pub problem: String,
}

/// `config.errors` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigErrors {
    /// Problems of every rejected file.
    pub diagnostics: Vec<Diagnostic>,
}

/// One approval in `approvals.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    /// Approval id.
    pub id: i64,
    /// The run.
    pub run: RunId,
    /// The approval node.
    pub node: String,
    /// pending, approved, rejected, expired, cancelled.
    pub state: String,
    /// What is asked.
    #[serde(default)]
    pub message: Option<String>,
    /// Requested at (ms).
    pub requested_at: i64,
    /// Deadline (ms).
    #[serde(default)]
    pub deadline: Option<i64>,
    /// Who decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The run's pipeline.
    #[serde(default)]
    pub pipeline: String,
    /// Who may decide: users and `@groups` (empty: any operator).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    #[serde(default = "one")]
    pub min_approvals: u32,
    /// Approvals so far.
    #[serde(default)]
    pub votes: Vec<ApprovalVote>,
    /// approved or rejected, once decided (also after an expiry).
    #[serde(default)]
    pub decision: Option<String>,
    /// Decided, expired or cancelled at (ms).
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// The user who triggered the run.
    #[serde(default)]
    pub requested_by: Option<String>,
    /// Whether that user may approve it too.
    #[serde(default)]
    pub allow_self_approval: bool,
}

fn one() -> u32 {
    1
}

/// One approval vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// Who.
    pub user: String,
    /// When (ms).
    pub at: i64,
    /// Their note.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `approvals.decide` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecideResult {
    /// The approval after the decision.
    pub approval: ApprovalInfo,
    /// True once the approval is decided; false while more approvals are needed.
    pub decided: bool,
}

/// `approvals.decide` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecideParams {
    /// Approval id.
    pub id: i64,
    /// true to approve, false to reject.
    pub approve: bool,
    /// Why (required to reject).
    #[serde(default)]
    pub reason: Option<String>,
}

/// One cron schedule in `schedules.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// Short schedule id within the pipeline (six hex digits, no quoting needed).
    pub id: String,
    /// The stored key (`<expression>@<zone>`), also accepted by pause and resume.
    #[serde(default)]
    pub key: String,
    /// The cron expression.
    pub cron: String,
    /// The zone it is read in.
    pub timezone: String,
    /// Paused by the file or an operator.
    pub paused: bool,
    /// Next fire, RFC 3339 with offset.
    #[serde(default)]
    pub next: Option<String>,
}

/// `schedules.pause` / `schedules.resume` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRef {
    /// Pipeline name.
    pub pipeline: String,
    /// One schedule; all of the pipeline's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One misfire ledger entry in `misfires.list`: fires that were due and did not run as scheduled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MisfireEntry {
    /// Entry id.
    pub id: i64,
    /// Recorded at (ms).
    pub recorded_at: i64,
    /// Pipeline.
    pub pipeline: String,
    /// Schedule id.
    pub schedule: String,
    /// First missed fire (ms).
    pub due_first: i64,
    /// Last missed fire (ms).
    pub due_last: i64,
    /// How many fires.
    pub missed: i64,
    /// Why they did not run.
    pub reason: String,
    /// What was done.
    pub action: String,
    /// The run started instead.
    #[serde(default)]
    pub run: Option<RunId>,
}

// --- limits (issue 7) ---

/// `data` of a [`ErrorCode::Refused`] error from a limit: which limit and when to retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedData {
    /// `rate`, `pipeline_rate`, `daily_runs` or `daily_llm_tokens`.
    pub limit: String,
    /// Whose trigger.
    pub user: String,
    /// The pipeline triggered.
    pub pipeline: String,
    /// Milliseconds until a retry can succeed.
    pub retry_after_ms: u64,
}

/// `limits.usage` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsUsageParams {
    /// Only this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `limits.usage` result: each user's usage against each limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsUsageResult {
    /// Over every user.
    pub global: GlobalUsage,
    /// Users with limits configured, runs in flight or usage today.
    pub users: Vec<UserUsage>,
}

/// Global concurrency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GlobalUsage {
    /// Concurrency slots held (runs admitted and running).
    pub held: u64,
    /// Runs in state `running` in the store (equal to `held` unless a slot leaked).
    pub running: u64,
    /// Runs waiting for a slot.
    pub queued: u64,
    /// `[limits.global] max_concurrent`.
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    /// Slots taken back by the periodic check since the daemon started.
    pub reclaimed: u64,
    /// Refusals since the daemon started, per limit.
    pub refusals: BTreeMap<String, u64>,
    /// Runs accepted and not started (the backlog), counted against `max_queued`.
    #[serde(default)]
    pub backlog: u64,
    /// `[limits.global] max_queued` in force (default 10,000).
    #[serde(default)]
    pub max_queued: u64,
    /// Worker slots (`[engine] workers`).
    #[serde(default)]
    pub workers: u64,
    /// Worker slots executing a node now.
    #[serde(default)]
    pub workers_busy: u64,
    /// Runs with a ready node waiting for a worker.
    #[serde(default)]
    pub waiting_for_worker: u64,
}

/// One user's usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserUsage {
    /// The user (`-` for runs without one).
    pub user: String,
    /// Trigger rate, e.g. `60/min`.
    #[serde(default)]
    pub rate: Option<String>,
    /// Burst size.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Triggers that may follow at once.
    #[serde(default)]
    pub rate_remaining: Option<u64>,
    /// Runs holding a slot.
    pub running: u64,
    /// Runs waiting for a slot.
    pub queued: u64,
    /// `max_concurrent`.
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    /// The user's runs accepted and not started, counted against its `max_queued`.
    #[serde(default)]
    pub backlog: u64,
    /// The user's `max_queued` in force (default 2,000).
    #[serde(default)]
    pub max_queued: u64,
    /// The user's current day (`YYYY-MM-DD` in its zone).
    pub day: String,
    /// When the day resets (RFC 3339).
    pub day_resets_at: String,
    /// Runs created today.
    pub daily_runs: u64,
    /// `daily_runs` cap.
    #[serde(default)]
    pub daily_runs_max: Option<u64>,
    /// LLM tokens used today.
    pub daily_llm_tokens: u64,
    /// `daily_llm_tokens` cap.
    #[serde(default)]
    pub daily_llm_tokens_max: Option<u64>,
    /// Triggers refused in the last 24 hours, per limit.
    pub refused_24h: BTreeMap<String, u64>,
}

/// `limits.explain` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitsExplainParams {
    /// The run.
    pub run: RunId,
}

/// `limits.explain` result: why a run has (not) started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitsExplainResult {
    /// The run.
    pub run: RunId,
    /// Its state.
    pub state: RunState,
    /// Whose run it is.
    pub user: String,
    /// The pipeline.
    pub pipeline: String,
    /// The cap holding it back: `global`, `user`, `pipeline`, `none`; absent when not queued.
    #[serde(default)]
    pub cap: Option<String>,
    /// In words.
    pub reason: String,
    /// Queued runs that start before it.
    pub ahead: u64,
    /// Of those, runs of the same user.
    pub ahead_same_user: u64,
}

/// `tokens.create` parameters (admin only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenCreateParams {
    /// The user the token triggers webhooks as.
    pub user: String,
    /// The only pipeline it may trigger; any pipeline with a webhook trigger when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

/// `tokens.create` result: the token, shown this once (only its hash is stored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenCreateResult {
    /// Token id (for `tokens.revoke`).
    pub id: i64,
    /// The bearer token.
    pub token: String,
    /// Its user.
    pub user: String,
    /// Its pipeline scope.
    #[serde(default)]
    pub pipeline: Option<String>,
}

/// One token in `tokens.list` (never the token itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Token id.
    pub id: i64,
    /// Its user.
    pub user: String,
    /// Its pipeline scope.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Its first characters.
    pub prefix: String,
    /// Created at (ms).
    pub created_at: i64,
    /// Created by.
    pub created_by: String,
    /// Revoked at (ms).
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

/// `tokens.revoke` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRevokeParams {
    /// Token id.
    pub id: i64,
}
