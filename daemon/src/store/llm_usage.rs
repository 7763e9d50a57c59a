//! LLM token usage: each `llm` attempt's tokens added to the user's daily
//! total (`usage.llm_tokens`, read by the daily caps) and to the per-user,
//! per-pipeline, per-day table `llm_usage`.

use super::backend::read;
use super::{Change, Dialect, SqlArg, Store, StoreError};
use serde::Serialize;

/// Tokens one attempt spent, and whom they are charged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmCharge {
    /// The run's user (`limits::NO_USER` for none).
    pub user: String,
    /// The user's day (`YYYY-MM-DD` as the limits define it).
    pub day: String,
    /// The run's pipeline.
    pub pipeline: String,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Generated tokens.
    pub tokens_out: u64,
    /// Whether the counts are estimates.
    pub estimated: bool,
}

/// One row of `llm_usage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LlmUsageRow {
    /// The user.
    pub user: String,
    /// The pipeline.
    pub pipeline: String,
    /// The day.
    pub day: String,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Generated tokens.
    pub tokens_out: i64,
    /// Requests counted.
    pub requests: i64,
    /// Requests whose counts were estimated.
    pub estimated_requests: i64,
}

/// Most tokens one attempt is charged: a provider reporting more is wrong,
/// and counts this large could overflow SQLite's integer sums (which then
/// turn into floating point).
pub const MAX_CHARGED: u64 = 1_000_000_000_000;

/// Where a stored sum stops growing: far above any cap, far below `i64::MAX`.
pub const MAX_TOTAL: i64 = 1_000_000_000_000_000;

fn int(n: u64) -> SqlArg {
    SqlArg::Int(i64::try_from(n.min(MAX_CHARGED)).unwrap_or(i64::MAX))
}

/// `column` plus its `excluded` value, kept an integer below [`MAX_TOTAL`]
/// (a row written before the bound may hold a float: it is read as an integer).
fn bounded_sum(dialect: Dialect, table: &str, column: &str) -> String {
    dialect.least(
        &format!("CAST({table}.{column} AS BIGINT) + excluded.{column}"),
        &MAX_TOTAL.to_string(),
    )
}

impl LlmCharge {
    /// The change that records this charge, to commit with the attempt's end.
    pub fn into_change(self, dialect: Dialect) -> Change {
        let tokens_in = self.tokens_in.min(MAX_CHARGED);
        let tokens_out = self.tokens_out.min(MAX_CHARGED);
        let total = tokens_in + tokens_out;
        Change::Sql(vec![
            (
                format!(
                    "INSERT INTO usage (\"user\", day, llm_tokens) VALUES ($1, $2, $3)
                     ON CONFLICT (\"user\", day) DO UPDATE SET llm_tokens = {}",
                    bounded_sum(dialect, "usage", "llm_tokens")
                ),
                vec![
                    SqlArg::Text(self.user.clone()),
                    SqlArg::Text(self.day.clone()),
                    SqlArg::Int(i64::try_from(total).unwrap_or(MAX_TOTAL)),
                ],
            ),
            (
                format!(
                    "INSERT INTO llm_usage (\"user\", pipeline, day, tokens_in, tokens_out, requests, estimated_requests)
                     VALUES ($1, $2, $3, $4, $5, 1, $6)
                     ON CONFLICT (\"user\", pipeline, day) DO UPDATE SET
                        tokens_in = {},
                        tokens_out = {},
                        requests = llm_usage.requests + 1,
                        estimated_requests = llm_usage.estimated_requests + excluded.estimated_requests",
                    bounded_sum(dialect, "llm_usage", "tokens_in"),
                    bounded_sum(dialect, "llm_usage", "tokens_out")
                ),
                vec![
                    SqlArg::Text(self.user),
                    SqlArg::Text(self.pipeline),
                    SqlArg::Text(self.day),
                    int(tokens_in),
                    int(tokens_out),
                    SqlArg::Int(i64::from(self.estimated)),
                ],
            ),
        ])
    }
}

impl Store {
    /// Records a charge on its own (the engine commits it with the attempt's end instead).
    pub async fn add_llm_usage(&self, charge: LlmCharge) -> Result<(), StoreError> {
        self.apply(vec![charge.into_change(self.dialect())]).await
    }

    /// Per-user, per-pipeline usage of days on or after `day` (`YYYY-MM-DD`).
    pub async fn llm_usage_since(&self, day: &str) -> Result<Vec<LlmUsageRow>, StoreError> {
        type Row = (String, String, String, i64, i64, i64, i64);
        let rows: Vec<Row> = read!(self, pool => sqlx::query_as(
            "SELECT \"user\", pipeline, day,
                    CAST(tokens_in AS BIGINT), CAST(tokens_out AS BIGINT),
                    requests, estimated_requests
             FROM llm_usage WHERE day >= $1 ORDER BY day, \"user\", pipeline",
        )
        .bind(day)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(
                |(user, pipeline, day, tokens_in, tokens_out, requests, estimated_requests)| {
                    LlmUsageRow {
                        user,
                        pipeline,
                        day,
                        tokens_in,
                        tokens_out,
                        requests,
                        estimated_requests,
                    }
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;

    #[tokio::test]
    async fn charges_add_up_per_user_pipeline_and_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::Normal)
            .await
            .unwrap();
        let charge = |pipeline: &str, tokens_in, tokens_out, estimated| LlmCharge {
            user: "alice".into(),
            day: "2026-11-22".into(),
            pipeline: pipeline.into(),
            tokens_in,
            tokens_out,
            estimated,
        };
        store
            .add_llm_usage(charge("p", 10, 5, false))
            .await
            .unwrap();
        store.add_llm_usage(charge("p", 1, 2, true)).await.unwrap();
        store
            .add_llm_usage(charge("q", 100, 0, false))
            .await
            .unwrap();
        let rows = store.llm_usage_since("2026-11-22").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].tokens_in,
                rows[0].tokens_out,
                rows[0].requests,
                rows[0].estimated_requests
            ),
            (11, 7, 2, 1)
        );
        assert_eq!(rows[1].pipeline, "q");
        let total: i64 = sqlx::query_scalar(
            "SELECT llm_tokens FROM usage WHERE user = 'alice' AND day = '2026-11-22'",
        )
        .fetch_one(store.sqlite_reads())
        .await
        .unwrap();
        assert_eq!(total, 118);
    }

    #[tokio::test]
    async fn absurd_counts_are_bounded_and_old_float_sums_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::Normal)
            .await
            .unwrap();
        let charge = |user: &str| LlmCharge {
            user: user.into(),
            day: "2026-11-22".into(),
            pipeline: "p".into(),
            tokens_in: u64::MAX,
            tokens_out: u64::MAX / 2,
            estimated: false,
        };
        for _ in 0..3 {
            store.add_llm_usage(charge("alice")).await.unwrap();
        }
        let usage = store.usage("alice", "2026-11-22").await.unwrap();
        assert_eq!(usage.llm_tokens, 6 * MAX_CHARGED as i64);
        let rows = store.llm_usage_since("2026-11-22").await.unwrap();
        assert_eq!(
            (rows[0].tokens_in, rows[0].tokens_out, rows[0].requests),
            (3 * MAX_CHARGED as i64, 3 * MAX_CHARGED as i64, 3)
        );
        // Sums stop at MAX_TOTAL; a float left by an overflow before this
        // bound existed reads as an integer and adds up again.
        store
            .exec(vec![
                (
                    "UPDATE usage SET llm_tokens = 9.3e18 WHERE user = 'alice'".to_owned(),
                    vec![],
                ),
                (
                    "UPDATE llm_usage SET tokens_in = 9.3e18, tokens_out = ? WHERE user = 'alice'"
                        .to_owned(),
                    vec![SqlArg::Int(MAX_TOTAL - 1)],
                ),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.usage("alice", "2026-11-22").await.unwrap().llm_tokens,
            i64::MAX
        );
        assert_eq!(
            store.usage_since("2026-11-22").await.unwrap()[0].llm_tokens,
            i64::MAX
        );
        assert_eq!(
            store.llm_usage_since("2026-11-22").await.unwrap()[0].tokens_in,
            i64::MAX
        );
        store.add_llm_usage(charge("alice")).await.unwrap();
        assert_eq!(
            store.usage("alice", "2026-11-22").await.unwrap().llm_tokens,
            MAX_TOTAL
        );
        let rows = store.llm_usage_since("2026-11-22").await.unwrap();
        assert_eq!(
            (rows[0].tokens_in, rows[0].tokens_out),
            (MAX_TOTAL, MAX_TOTAL)
        );
        let kinds: (String, String) = sqlx::query_as(
            "SELECT typeof(u.llm_tokens), typeof(l.tokens_in) FROM usage u, llm_usage l",
        )
        .fetch_one(store.sqlite_reads())
        .await
        .unwrap();
        assert_eq!(kinds, ("integer".to_owned(), "integer".to_owned()));
    }
}
