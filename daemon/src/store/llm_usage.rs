//! LLM token usage: each `llm` attempt's tokens added to the user's daily
//! total (`usage.llm_tokens`, read by the daily caps) and to the per-user,
//! per-pipeline, per-day table `llm_usage`.

use serde::Serialize;
use sqlx::Row;

use super::{Change, SqlArg, Store, StoreError};

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

fn int(n: u64) -> SqlArg {
    SqlArg::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl LlmCharge {
    /// The change that records this charge, to commit with the attempt's end.
    pub fn into_change(self) -> Change {
        let total = self.tokens_in.saturating_add(self.tokens_out);
        Change::Sql(vec![
            (
                "INSERT INTO usage (user, day, llm_tokens) VALUES (?, ?, ?)
                 ON CONFLICT (user, day) DO UPDATE SET llm_tokens = llm_tokens + excluded.llm_tokens"
                    .to_owned(),
                vec![
                    SqlArg::Text(self.user.clone()),
                    SqlArg::Text(self.day.clone()),
                    int(total),
                ],
            ),
            (
                "INSERT INTO llm_usage (user, pipeline, day, tokens_in, tokens_out, requests, estimated_requests)
                 VALUES (?, ?, ?, ?, ?, 1, ?)
                 ON CONFLICT (user, pipeline, day) DO UPDATE SET
                    tokens_in = tokens_in + excluded.tokens_in,
                    tokens_out = tokens_out + excluded.tokens_out,
                    requests = requests + 1,
                    estimated_requests = estimated_requests + excluded.estimated_requests"
                    .to_owned(),
                vec![
                    SqlArg::Text(self.user),
                    SqlArg::Text(self.pipeline),
                    SqlArg::Text(self.day),
                    int(self.tokens_in),
                    int(self.tokens_out),
                    SqlArg::Int(i64::from(self.estimated)),
                ],
            ),
        ])
    }
}

impl Store {
    /// Records a charge on its own (the engine commits it with the attempt's end instead).
    pub async fn add_llm_usage(&self, charge: LlmCharge) -> Result<(), StoreError> {
        self.apply(vec![charge.into_change()]).await
    }

    /// Per-user, per-pipeline usage of days on or after `day` (`YYYY-MM-DD`).
    pub async fn llm_usage_since(&self, day: &str) -> Result<Vec<LlmUsageRow>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM llm_usage WHERE day >= ? ORDER BY day, user, pipeline")
                .bind(day)
                .fetch_all(self.reads())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(LlmUsageRow {
                    user: r.try_get("user")?,
                    pipeline: r.try_get("pipeline")?,
                    day: r.try_get("day")?,
                    tokens_in: r.try_get("tokens_in")?,
                    tokens_out: r.try_get("tokens_out")?,
                    requests: r.try_get("requests")?,
                    estimated_requests: r.try_get("estimated_requests")?,
                })
            })
            .collect()
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
        .fetch_one(store.reads())
        .await
        .unwrap();
        assert_eq!(total, 118);
    }
}
