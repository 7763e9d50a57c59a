//! Writes refusals down in aggregate: every few seconds, one ledger row per
//! (user, limit, minute, pipeline) with a count, and one audit row summing
//! them up — never one row per refused request, so a flood cannot flood the store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_shared::event::Event;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::audit::Audit;
use crate::store::Store;

/// How often pending refusals are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Writes what is pending now and announces it on `events` (one `other` event
/// with `what: "limit_hit"` per user, limit and pipeline, with the count);
/// returns how many refusals were written.
pub async fn flush(
    limits: &Limits,
    store: &Store,
    audit: Option<&Audit>,
    events: Option<&broadcast::Sender<Event>>,
) -> i64 {
    let pending = limits.take_pending();
    if pending.is_empty() {
        return 0;
    }
    let minute = sluice_shared::time::now_ms().div_euclid(60_000);
    let total: i64 = pending.iter().map(|(_, n)| *n).sum();
    let mut summary: Vec<_> = pending
        .iter()
        .map(|((user, limit, pipeline), n)| {
            json!({ "user": user, "limit": limit.as_str(), "pipeline": pipeline, "count": n })
        })
        .collect();
    summary.sort_by_key(|v| v.to_string());
    let rows = pending
        .into_iter()
        .map(|((user, limit, pipeline), n)| (user, limit.as_str().to_owned(), minute, pipeline, n))
        .collect();
    if let Err(e) = store.record_refusals(rows).await {
        tracing::error!(error = %e, "cannot record limit refusals");
    }
    if let Some(audit) = audit
        && let Err(e) = audit
            .record(
                "sluiced",
                "limits.refused",
                None,
                json!({ "total": total, "refusals": summary }),
            )
            .await
    {
        tracing::error!(error = %e, "cannot write limit refusals to the audit trail");
    }
    // Announced last, so whoever hears of a refusal finds it recorded.
    if let Some(events) = events {
        for details in summary {
            let _ = events.send(Event::Other {
                what: "limit_hit".into(),
                details,
            });
        }
    }
    total
}

/// Flushes every [`FLUSH_EVERY`] until `stop`, then once more.
pub fn spawn(
    limits: Arc<Limits>,
    store: Store,
    audit: Option<Arc<Audit>>,
    events: Option<broadcast::Sender<Event>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => false,
                () = stop.cancelled() => true,
            };
            flush(&limits, &store, audit.as_deref(), events.as_ref()).await;
            if stopping {
                return;
            }
        }
    });
}
