//! Calls refused for the caller's role (a viewer triggering a run, an
//! operator disabling a pipeline) reach the audit trail in aggregate: every
//! few seconds one `access.denied` row, written by `sluiced`, counts them per
//! user, method and target — never a row per refused call, so repeating one
//! cannot flood the trail or the store (as for limit refusals, see
//! `limits::ledger`). The refused call's parameters are not kept: they could
//! carry secret values, and whoever was refused chose them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;

/// The audit action of the summary row.
pub const ACTION: &str = "access.denied";

/// Distinct (user, method, target) counted between two writes; refusals
/// beyond are counted in `others`.
const MAX_KEYS: usize = 1000;

/// Targets are cut to this many characters (a caller chooses them).
const MAX_TARGET: usize = 200;

type Key = (String, String, Option<String>);

#[derive(Default)]
struct Pending {
    counts: BTreeMap<Key, u64>,
    others: u64,
}

/// Refusals not yet written to the audit trail.
#[derive(Default)]
pub(crate) struct Denials {
    pending: Mutex<Pending>,
}

impl Denials {
    /// Counts `user` refused `method` on `target`.
    pub(crate) fn note(&self, user: &str, method: &str, target: Option<String>) {
        let target = target.map(|t| {
            if t.chars().count() > MAX_TARGET {
                let mut cut: String = t.chars().take(MAX_TARGET - 1).collect();
                cut.push('…');
                cut
            } else {
                t
            }
        });
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let key = (user.to_owned(), method.to_owned(), target);
        if let Some(n) = p.counts.get_mut(&key) {
            *n += 1;
        } else if p.counts.len() < MAX_KEYS {
            p.counts.insert(key, 1);
        } else {
            p.others += 1;
        }
    }

    /// The pending refusals as an audit row's detail, or `None` when there are none.
    fn take(&self) -> Option<Value> {
        let p = std::mem::take(&mut *self.pending.lock().ok()?);
        if p.counts.is_empty() && p.others == 0 {
            return None;
        }
        let total = p.counts.values().sum::<u64>() + p.others;
        let denials: Vec<Value> = p
            .counts
            .into_iter()
            .map(|((user, method, target), count)| {
                json!({ "user": user, "method": method, "target": target, "count": count })
            })
            .collect();
        let mut detail = json!({ "total": total, "denials": denials });
        if p.others > 0 {
            detail["others"] = json!(p.others);
        }
        Some(detail)
    }

    /// Writes the pending refusals as one audit row; returns how many it counted.
    pub(crate) async fn flush(&self, audit: &Audit) -> u64 {
        let Some(detail) = self.take() else {
            return 0;
        };
        let total = detail["total"].as_u64().unwrap_or(0);
        if let Err(e) = audit.record("sluiced", ACTION, None, detail).await {
            tracing::error!(error = %e, refused = total, "cannot write refused calls to the audit trail");
        }
        total
    }
}

/// Flushes every [`crate::limits::ledger::FLUSH_EVERY`] until `stop`, then once more.
pub(crate) fn spawn(denials: Arc<Denials>, audit: Arc<Audit>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(crate::limits::ledger::FLUSH_EVERY) => false,
                () = stop.cancelled() => true,
            };
            denials.flush(&audit).await;
            if stopping {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::method::{ConfigReload, Method, PipelinesTrigger, RunsCancel};

    #[test]
    fn refusals_are_counted_per_user_method_and_target_and_bounded() {
        let d = Denials::default();
        assert!(d.take().is_none());
        d.note(
            "bob",
            PipelinesTrigger::NAME,
            Some("pipeline deploy".into()),
        );
        d.note(
            "bob",
            PipelinesTrigger::NAME,
            Some("pipeline deploy".into()),
        );
        d.note("bob", RunsCancel::NAME, Some("run #3".into()));
        d.note("eve", ConfigReload::NAME, None);
        let detail = d.take().unwrap();
        assert_eq!(detail["total"], 4);
        assert_eq!(
            detail["denials"],
            json!([
                { "user": "bob", "method": PipelinesTrigger::NAME, "target": "pipeline deploy", "count": 2 },
                { "user": "bob", "method": RunsCancel::NAME, "target": "run #3", "count": 1 },
                { "user": "eve", "method": ConfigReload::NAME, "target": null, "count": 1 },
            ])
        );
        assert!(d.take().is_none(), "taken once");

        for i in 0..MAX_KEYS + 5 {
            d.note("eve", RunsCancel::NAME, Some(format!("run #{i}")));
        }
        d.note(
            "eve",
            PipelinesTrigger::NAME,
            Some(format!("pipeline {}", "x".repeat(500))),
        );
        let detail = d.take().unwrap();
        assert_eq!(detail["total"], MAX_KEYS as u64 + 6);
        assert_eq!(detail["others"], 6);
        assert_eq!(detail["denials"].as_array().unwrap().len(), MAX_KEYS);

        d.note("eve", PipelinesTrigger::NAME, Some("y".repeat(500)));
        let detail = d.take().unwrap();
        let target = detail["denials"][0]["target"].as_str().unwrap();
        assert_eq!(target.chars().count(), MAX_TARGET);
        assert!(target.ends_with('…'));
    }
}
