//! Wire types of the daemon's metrics.

use serde::{Deserialize, Serialize};

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
