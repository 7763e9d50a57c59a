//! The audit trail's rows. Hashing and verification live in `crate::audit`.

use super::backend::{Cols, read};
use super::{SqlArg, Store, StoreError};
use serde_json::Value;

/// An audit row to append.
#[derive(Clone, Debug)]
pub struct NewAudit {
    /// When (ms).
    pub at: i64,
    /// Who.
    pub user: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Details (JSON text, as hashed).
    pub detail: String,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// An audit row as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Row id.
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// Who.
    pub user: String,
    /// What, e.g. `runs.cancel`.
    pub action: String,
    /// On what, e.g. `run #12`.
    pub target: Option<String>,
    /// Details (the stored text parsed; text that is not JSON as a string).
    pub detail: Value,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

fn entry(r: &impl Cols) -> Result<AuditRecord, StoreError> {
    let detail = r.text("detail")?;
    Ok(AuditRecord {
        id: r.int("id")?,
        at: r.int("at")?,
        user: r.text("user")?,
        action: r.text("action")?,
        target: r.opt_text("target")?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
        prev_hash: r.text("prev_hash")?,
        hash: r.text("hash")?,
    })
}

impl Store {
    /// Appends an audit row; returns its id.
    pub async fn append_audit(&self, row: NewAudit) -> Result<i64, StoreError> {
        self.exec(vec![(
            "INSERT INTO audit (at, \"user\", action, target, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id".into(),
            vec![
                SqlArg::Int(row.at),
                SqlArg::Text(row.user),
                SqlArg::Text(row.action),
                SqlArg::opt_text(row.target),
                SqlArg::Text(row.detail),
                SqlArg::Text(row.prev_hash),
                SqlArg::Text(row.hash),
            ],
        )])
        .await
    }

    /// The newest row's hash and id.
    pub async fn last_audit(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?))
    }

    /// The hash of row `id`, if it exists.
    pub async fn audit_hash(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(
            read!(self, pool => sqlx::query_scalar("SELECT hash FROM audit WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?),
        )
    }

    /// A stored pipeline version's definition (JSON text) and source file.
    pub async fn version_definition(
        &self,
        pipeline: &str,
        version: i64,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT definition, source_path FROM pipeline_versions WHERE pipeline = $1 AND version = $2",
        )
        .bind(pipeline)
        .bind(version)
        .fetch_optional(pool)
        .await?))
    }

    /// Rows newest first, below `before`.
    pub async fn audit_page(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM audit WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(entry)
        .collect())
    }

    /// Every row in order, for verification (with the raw detail text as hashed).
    pub async fn audit_all(&self) -> Result<Vec<(AuditRecord, String)>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM audit ORDER BY id")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((entry(r)?, r.text("detail")?)))
            .collect())
    }
}

impl Store {
    /// Runs created since `since_ms` (for seeding metrics).
    pub async fn runs_since(&self, since_ms: i64) -> Result<Vec<super::RunRecord>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM runs_full WHERE created_at >= $1 ORDER BY id")
            .bind(since_ms)
            .fetch_all(pool)
            .await?
            .iter()
            .map(super::run_record)
            .collect())
    }

    /// Stored durations (ms) of the runs that finished at or after `since_ms`
    /// and had started, with their pipelines: what percentiles are computed from.
    pub async fn durations_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = read!(self, pool => sqlx::query_as(
            "SELECT pipeline, finished_at - started_at FROM runs WHERE finished_at >= $1 AND started_at IS NOT NULL",
        )
        .bind(since_ms)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// Unfinished runs by state: (queued, running, waiting).
    pub async fn state_counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let rows: Vec<(String, i64)> = read!(self, pool => sqlx::query_as(
            "SELECT state, COUNT(*) FROM runs WHERE finished_at IS NULL AND state IN ('queued', 'running', 'waiting') GROUP BY state",
        )
        .fetch_all(pool)
        .await?);
        let get = |s: &str| {
            rows.iter()
                .find(|(k, _)| k == s)
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0))
        };
        Ok((get("queued"), get("running"), get("waiting")))
    }
}

/// Filters for [`Store::runs_page`].
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Pipeline name.
    pub pipeline: Option<String>,
    /// States.
    pub states: Vec<String>,
    /// Trigger kind.
    pub trigger: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Created at or after (ms).
    pub since: Option<i64>,
    /// Created before (ms).
    pub until: Option<i64>,
    /// Ids below this.
    pub before: Option<i64>,
    /// Page size.
    pub limit: i64,
}

impl Store {
    /// A page of runs, newest first (keyset paging on id).
    pub async fn runs_page(&self, f: &RunFilter) -> Result<Vec<super::RunRecord>, StoreError> {
        read!(self, pool => {
            let mut q = sqlx::QueryBuilder::new("SELECT * FROM runs_full WHERE 1 = 1");
            if let Some(p) = &f.pipeline {
                q.push(" AND pipeline = ").push_bind(p.clone());
            }
            if !f.states.is_empty() {
                q.push(" AND state IN (");
                let mut sep = q.separated(", ");
                for s in &f.states {
                    sep.push_bind(s.clone());
                }
                q.push(")");
            }
            if let Some(t) = &f.trigger {
                q.push(" AND trigger_kind = ").push_bind(t.clone());
            }
            if let Some(u) = &f.user {
                q.push(" AND \"user\" = ").push_bind(u.clone());
            }
            if let Some(s) = f.since {
                q.push(" AND created_at >= ").push_bind(s);
            }
            if let Some(u) = f.until {
                q.push(" AND created_at < ").push_bind(u);
            }
            if let Some(b) = f.before {
                q.push(" AND id < ").push_bind(b);
            }
            q.push(" ORDER BY id DESC LIMIT ").push_bind(f.limit);
            q.build().fetch_all(pool).await?.iter().map(super::run_record).collect()
        })
    }

    /// Log lines after cursor `after`, in storage order, with their cursor.
    pub async fn logs_after(
        &self,
        run: sluice_shared::run::RunId,
        node: Option<&str>,
        attempt: Option<u32>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, sluice_shared::run::LogLine)>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM logs WHERE run_id = $1 AND ($2 IS NULL OR node_id = $2) AND ($3 IS NULL OR attempt = $3) AND id > $4 ORDER BY id LIMIT $5",
        )
        .bind(run.0)
        .bind(node)
        .bind(attempt.map(i64::from))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.int("id")?, super::log_line(r, run)?)))
        .collect())
    }
}
