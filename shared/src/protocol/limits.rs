//! Wire types of the limits and of webhook tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::run::{RunId, RunState};

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

/// `tokens.revoke` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRevokeResult {
    /// Token id.
    pub id: i64,
    /// Always true: an unknown or revoked token is an error.
    pub revoked: bool,
}
