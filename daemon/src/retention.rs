//! Retention: finished runs older than `max_age`, or beyond the newest
//! `max_runs_per_pipeline` of their pipeline, are deleted with their nodes,
//! attempts and logs. Unfinished runs are never touched.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Retention;
use crate::store::{Store, StoreError};

/// How often the pruning task runs.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Prunes once; returns how many runs were deleted.
pub async fn prune_once(store: &Store, policy: &Retention) -> Result<u64, StoreError> {
    let age_ms = i64::try_from(policy.max_age.std().as_millis()).unwrap_or(i64::MAX);
    let before = jiff::Timestamp::now()
        .as_millisecond()
        .saturating_sub(age_ms);
    store
        .prune(before, i64::from(policy.max_runs_per_pipeline))
        .await
}

/// Prunes now and then every [`EVERY`] until `stop` is cancelled.
pub fn spawn(store: Store, policy: Retention, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            match prune_once(&store, &policy).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention: pruned finished runs"),
                Err(e) => tracing::warn!(error = %e, "retention: pruning failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    });
}
