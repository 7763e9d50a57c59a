//! Limits: what protects the server and its users from runaway triggers.
//!
//! Every trigger passes [`Limits::check_rate`] (per-user and per-pipeline GCRA
//! rates, [`rate`]) and a daily run cap charged in the same store write that
//! creates the run (so a restart cannot reset it and concurrent triggers cannot
//! overshoot). Concurrency caps (global, per pipeline, per user) are applied
//! when a queued run starts, by the engine's admission (`engine/admission.rs`),
//! which reads its caps from here. Refusals are counted here and written to the
//! store and the audit trail in aggregate by [`ledger`].
//!
//! A trigger belongs to a user: the socket caller for manual triggers, the
//! token's (or the webhook trigger's configured) user for webhooks, the
//! pipeline's `owner` for cron. Runs without one count as [`NO_USER`].

pub mod backlog;
pub mod config;
pub mod ledger;
pub(crate) mod rate;
pub mod tokens;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

pub use config::{DayStart, GlobalLimits, LimitsConfig, PipelineLimits, Rate, UserLimits};
pub use rate::RateQuota;

use crate::store::usage::DailyCharge;

/// The user that runs without one (an ownerless pipeline's cron, an anonymous webhook) count as.
pub const NO_USER: &str = "-";

/// The user a run or trigger counts as.
pub fn user_key(user: Option<&str>) -> &str {
    user.filter(|u| !u.is_empty()).unwrap_or(NO_USER)
}

/// Which limit refused a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    /// The user's trigger rate.
    Rate,
    /// The pipeline's trigger rate.
    PipelineRate,
    /// The user's runs per day.
    DailyRuns,
    /// The user's LLM tokens per day.
    DailyLlmTokens,
    /// Runs accepted but not started, across every user.
    Queue,
    /// The user's runs accepted but not started.
    UserQueue,
}

impl LimitKind {
    /// The name used in messages, metrics and the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::PipelineRate => "pipeline_rate",
            Self::DailyRuns => "daily_runs",
            Self::DailyLlmTokens => "daily_llm_tokens",
            Self::Queue => "max_queued",
            Self::UserQueue => "user_max_queued",
        }
    }

    const ALL: [LimitKind; 6] = [
        Self::Rate,
        Self::PipelineRate,
        Self::DailyRuns,
        Self::DailyLlmTokens,
        Self::Queue,
        Self::UserQueue,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// A trigger refused by a limit: which one, whose, and when to retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The limit.
    pub limit: LimitKind,
    /// Whose trigger.
    pub user: String,
    /// The pipeline triggered.
    pub pipeline: String,
    /// When a retry can succeed.
    pub retry_after: Duration,
    /// The limit's quota and window in seconds (for `RateLimit-Policy`).
    pub quota: (u64, u64),
    /// For people: which limit, its value, when to retry.
    pub message: String,
}

impl Refusal {
    /// Whole seconds to wait (rounded up, at least 1), for `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = self.retry_after.as_millis();
        u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    /// Machine-readable details for a socket error.
    pub fn data(&self) -> Value {
        json!({
            "limit": self.limit.as_str(),
            "user": self.user,
            "pipeline": self.pipeline,
            "retry_after_ms": u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The `RateLimit-Policy` header value (IETF draft) naming the refusing limit.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.limit.as_str(),
            self.quota.0,
            self.quota.1
        )
    }

    /// The `RateLimit` header value: nothing left, reset after `Retry-After`.
    pub fn state_header(&self) -> String {
        format!(
            "\"{}\";r=0;t={}",
            self.limit.as_str(),
            self.retry_after_secs()
        )
    }
}

/// A rate check that let the trigger through, for `RateLimit` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateState {
    /// The user's quota.
    pub quota: RateQuota,
    /// Triggers that may follow at once.
    pub remaining: u32,
}

impl RateState {
    /// `RateLimit-Policy` value.
    pub fn policy_header(&self) -> String {
        format!(
            "\"rate\";q={};w={}",
            self.quota.rate.count,
            self.quota.rate.per.as_secs().max(1)
        )
    }

    /// `RateLimit` value: remaining and seconds until the burst is whole again.
    pub fn state_header(&self) -> String {
        let missing = self.quota.burst.saturating_sub(self.remaining);
        let t = (self.quota.rate.interval() * missing).as_secs_f64().ceil() as u64;
        format!("\"rate\";r={};t={t}", self.remaining)
    }
}

/// The live limits: configuration (swapped on reload), rate limiters and
/// refusal counters. Shared by the triggers, the engine's admission and the API.
pub struct Limits {
    config: RwLock<Arc<LimitsConfig>>,
    rates: rate::RateLimiters,
    totals: [AtomicU64; 6],
    backlog: Arc<backlog::Backlog>,
    /// Refusals not yet written to the ledger: (user, limit, pipeline) → count.
    pending: Mutex<HashMap<(String, LimitKind, String), i64>>,
    changed: tokio::sync::Notify,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitsConfig::default())
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limits as configured.
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config: RwLock::new(Arc::new(config)),
            rates: rate::RateLimiters::default(),
            totals: Default::default(),
            backlog: Arc::default(),
            pending: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<LimitsConfig> {
        self.config
            .read()
            .map_or_else(|_| Arc::new(LimitsConfig::default()), |c| Arc::clone(&c))
    }

    /// Applies a new configuration: counters (daily usage in the store, running
    /// runs, rate state of unchanged quotas) are kept; queued runs are looked at again.
    pub fn reload(&self, config: LimitsConfig) {
        let config = Arc::new(config);
        if let Ok(mut c) = self.config.write() {
            *c = Arc::clone(&config);
        }
        self.rates.retain(|key| match key.split_once(':') {
            Some(("p", name)) => config.pipelines.get(name).is_some_and(|p| p.rate.is_some()),
            _ => true,
        });
        self.changed.notify_waiters();
    }

    /// Signalled after every reload.
    pub(crate) fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// The user's rate quota, if any.
    pub fn user_quota(&self, user: &str) -> Option<RateQuota> {
        let l = self.config().for_user(user);
        l.rate.map(|r| RateQuota::new(r, l.burst))
    }

    /// Whether a trigger of `pipeline` by `user` can be refused before its run
    /// is written: a user or pipeline rate, or (for a pipeline with an LLM
    /// node) a daily token cap. The daily run cap is not one: it is charged in
    /// the write itself, which finds a redelivered trigger's run first.
    pub fn may_refuse_trigger(&self, user: &str, pipeline: &str, uses_llm: bool) -> bool {
        let config = self.config();
        let user_limits = config.for_user(user);
        config
            .pipelines
            .get(pipeline)
            .is_some_and(|p| p.rate.is_some())
            || user_limits.rate.is_some()
            || (uses_llm && user_limits.daily_llm_tokens.is_some())
    }

    /// Runs accepted but not started, counted against `max_queued`.
    pub fn backlog(&self) -> &Arc<backlog::Backlog> {
        &self.backlog
    }

    /// The backlog bounds: (global, `user`'s).
    pub fn queue_bounds(&self, user: &str) -> (u64, u64) {
        let config = self.config();
        (
            config
                .global
                .max_queued
                .unwrap_or(backlog::DEFAULT_MAX_QUEUED),
            config
                .for_user(user)
                .max_queued
                .unwrap_or(backlog::DEFAULT_MAX_QUEUED_PER_USER),
        )
    }

    /// Reserves a place in the backlog for a new run of `pipeline` by `user`,
    /// or refuses it: the queue is full (globally, or the user's share).
    pub fn reserve_queued(
        &self,
        user: &str,
        pipeline: &str,
    ) -> Result<backlog::Reservation, Refusal> {
        let (max_total, max_user) = self.queue_bounds(user);
        self.backlog
            .reserve(user, max_total, max_user)
            .map_err(|full| {
                // The queue drains at the engine's pace: a short wait is a fair first guess.
                let wait = QUEUE_RETRY_AFTER;
                let (limit, message, max) = match full {
                    backlog::Full::Global { depth, max } => (
                        LimitKind::Queue,
                        format!(
                            "the daemon's queue is full ({depth} runs waiting to start, max_queued {max}); retry in {}",
                            retry_text(wait)
                        ),
                        max,
                    ),
                    backlog::Full::User { depth, max } => (
                        LimitKind::UserQueue,
                        format!(
                            "user '{user}' has {depth} runs waiting to start (max_queued {max}); retry in {}",
                            retry_text(wait)
                        ),
                        max,
                    ),
                };
                self.refused(Refusal {
                    limit,
                    user: user.to_owned(),
                    pipeline: pipeline.to_owned(),
                    retry_after: wait,
                    quota: (max, 0),
                    message,
                })
            })
    }

    /// Takes one trigger from the user's (and the pipeline's) rate allowance.
    pub fn check_rate(&self, user: &str, pipeline: &str) -> Result<Option<RateState>, Refusal> {
        let config = self.config();
        if let Some(p) = config.pipelines.get(pipeline)
            && let Some(rate) = p.rate
        {
            let quota = RateQuota::new(rate, p.burst);
            if let Err(wait) = self.rates.check(&format!("p:{pipeline}"), quota) {
                return Err(self.refused(Refusal {
                    limit: LimitKind::PipelineRate,
                    user: user.to_owned(),
                    pipeline: pipeline.to_owned(),
                    retry_after: wait,
                    quota: (u64::from(rate.count), rate.per.as_secs().max(1)),
                    message: format!(
                        "pipeline '{pipeline}' is over its trigger rate {rate} (burst {}); retry in {}",
                        quota.burst,
                        retry_text(wait)
                    ),
                }));
            }
        }
        let limits = config.for_user(user);
        let Some(rate) = limits.rate else {
            return Ok(None);
        };
        let quota = RateQuota::new(rate, limits.burst);
        match self.rates.check(&format!("u:{user}"), quota) {
            Ok(allowed) => Ok(Some(RateState {
                quota,
                remaining: allowed.remaining,
            })),
            Err(wait) => Err(self.refused(Refusal {
                limit: LimitKind::Rate,
                user: user.to_owned(),
                pipeline: pipeline.to_owned(),
                retry_after: wait,
                quota: (u64::from(rate.count), rate.per.as_secs().max(1)),
                message: format!(
                    "user '{user}' is over the trigger rate {rate} (burst {}); retry in {}",
                    quota.burst,
                    retry_text(wait)
                ),
            })),
        }
    }

    /// The user's rate allowance left after the last trigger (without taking any).
    pub fn rate_remaining(&self, user: &str) -> Option<(RateQuota, u32)> {
        let quota = self.user_quota(user)?;
        Some((quota, self.rates.remaining(&format!("u:{user}"), quota)))
    }

    /// What a new run of `user` is charged to: the user's current day (in the
    /// configured zone), its cap (`i64::MAX` when uncapped: runs are still
    /// counted), and when the next day starts.
    pub fn daily(&self, user: &str, now: jiff::Timestamp) -> (DailyCharge, jiff::Timestamp) {
        let limits = self.config().for_user(user);
        let (day, next) = limits.day_starts.unwrap_or_default().day_of(now);
        let cap = limits
            .daily_runs
            .map_or(i64::MAX, |c| i64::try_from(c).unwrap_or(i64::MAX));
        (
            DailyCharge {
                user: user.to_owned(),
                day,
                cap,
            },
            next,
        )
    }

    /// The refusal for a daily cap reached: `used` of `cap`, from `now` until the day resets at `next`.
    pub fn daily_refusal(
        &self,
        limit: LimitKind,
        user: &str,
        pipeline: &str,
        (used, cap): (i64, u64),
        (now, next): (jiff::Timestamp, jiff::Timestamp),
    ) -> Refusal {
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
        let what = match limit {
            LimitKind::DailyLlmTokens => "LLM tokens",
            _ => "runs",
        };
        self.refused(Refusal {
            limit,
            user: user.to_owned(),
            pipeline: pipeline.to_owned(),
            retry_after: wait,
            quota: (cap, 86_400),
            message: format!(
                "user '{user}' has used {used} of {cap} {what} today ({}); the day resets at {next} (in {})",
                limit.as_str(),
                retry_text(wait)
            ),
        })
    }

    /// Counts a refusal (metrics now, ledger and audit at the next flush).
    pub fn refused(&self, refusal: Refusal) -> Refusal {
        self.totals[refusal.limit.index()].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut p) = self.pending.lock() {
            *p.entry((
                refusal.user.clone(),
                refusal.limit,
                refusal.pipeline.clone(),
            ))
            .or_default() += 1;
        }
        refusal
    }

    /// Refusals since the start, per limit.
    pub fn refusal_totals(&self) -> Vec<(&'static str, u64)> {
        LimitKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.totals[k.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Every refusal since the start.
    pub fn refusals_total(&self) -> u64 {
        self.totals.iter().map(|t| t.load(Ordering::Relaxed)).sum()
    }

    /// Takes the refusals not yet written to the ledger.
    pub(crate) fn take_pending(&self) -> Vec<((String, LimitKind, String), i64)> {
        self.pending
            .lock()
            .map(|mut p| p.drain().collect())
            .unwrap_or_default()
    }
}

/// `Retry-After` for a trigger refused because the queue is full.
pub const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// "6s", "1h 5m": how long to wait, rounded up to whole seconds.
pub fn retry_text(wait: Duration) -> String {
    let secs = u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1);
    sluice_shared::Duration::from_secs(secs).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> Limits {
        Limits::new(toml::from_str(text).unwrap())
    }

    #[test]
    fn a_pipeline_rate_applies_whoever_triggers() {
        let l = limits("[pipelines.report]\nrate = \"1/h\"\nburst = 2\n");
        assert!(l.check_rate("alice", "report").is_ok());
        assert!(l.check_rate("bob", "report").is_ok());
        let r = l.check_rate("carol", "report").unwrap_err();
        assert_eq!(r.limit, LimitKind::PipelineRate);
        assert!(r.message.contains("pipeline 'report'"), "{}", r.message);
        assert!(
            l.check_rate("carol", "other").is_ok(),
            "other pipelines are not limited"
        );
        assert_eq!(l.refusals_total(), 1);
    }

    #[test]
    fn reload_keeps_rate_state_of_unchanged_quotas() {
        let l = limits("[default]\nrate = \"1/h\"\nburst = 1\n");
        l.check_rate("alice", "p").unwrap();
        l.reload(toml::from_str("[default]\nrate = \"1/h\"\nburst = 1\ndaily_runs = 5\n").unwrap());
        assert!(
            l.check_rate("alice", "p").is_err(),
            "not a fresh burst after a reload"
        );
        assert_eq!(l.config().default.daily_runs, Some(5));
    }

    #[test]
    fn refusals_say_which_limit_and_when() {
        let l = limits("[default]\nrate = \"10/min\"\nburst = 1\n");
        l.check_rate("alice", "p").unwrap();
        let r = l.check_rate("alice", "p").unwrap_err();
        assert_eq!(r.retry_after_secs(), 6);
        assert_eq!(r.policy_header(), "\"rate\";q=10;w=60");
        assert_eq!(r.state_header(), "\"rate\";r=0;t=6");
        assert_eq!(r.data()["limit"], "rate");
        let pending = l.take_pending();
        assert_eq!(
            pending,
            vec![(("alice".to_owned(), LimitKind::Rate, "p".to_owned()), 1)]
        );
        assert!(l.take_pending().is_empty());
    }
}
