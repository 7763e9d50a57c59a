//! Wire types of the daemon's status, pipelines, configuration and schedules.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunDetail;
use crate::diagnostic::Diagnostic;
use crate::run::{RunId, RunState};

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

/// `pipelines.enable` / `pipelines.disable` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineEnabled {
    /// Pipeline name.
    pub name: String,
    /// Whether it is enabled now.
    pub enabled: bool,
}

/// `config.errors` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigErrors {
    /// Problems of every rejected file.
    pub diagnostics: Vec<Diagnostic>,
}

/// `config.reload` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// Pipelines added or changed (new versions).
    #[serde(default)]
    pub updated: Vec<String>,
    /// Pipelines whose file disappeared.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Files rejected (`config.errors` says why).
    #[serde(default)]
    pub rejected: Vec<String>,
    /// The directory or files that could not be read; what was loaded from
    /// them stays active (absent from daemons that did not report it).
    #[serde(default)]
    pub unreadable: Vec<String>,
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

/// `schedules.pause` / `schedules.resume` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulesPaused {
    /// Pipeline name.
    pub pipeline: String,
    /// The schedules paused or resumed.
    pub schedules: Vec<String>,
    /// Whether they are paused now.
    pub paused: bool,
}

/// `misfires.list` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MisfiresListParams {
    /// Only this pipeline.
    #[serde(
        default,
        deserialize_with = "super::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pipeline: Option<String>,
    /// Page size (default 100, 1 to 1000).
    #[serde(
        default,
        deserialize_with = "super::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<i64>,
}
