//! What the limits keep across restarts: per-user daily counters (runs, LLM
//! tokens), users' webhook tokens (hashes only) and the aggregated ledger of
//! refused triggers.

use super::backend::{Cols, read};
use super::writer::{RunRow, Write, Written};
use super::{NewRun, SqlArg, Store, StoreError, now_ms};
use serde::Serialize;
use sluice_shared::run::{RunId, RunState};

/// A daily run cap to charge a new run to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyCharge {
    /// Whose count.
    pub user: String,
    /// The user's current day (`YYYY-MM-DD` in the user's zone).
    pub day: String,
    /// Runs allowed that day (`i64::MAX`: counted, not capped).
    pub cap: i64,
}

/// What a charged run creation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charged {
    /// The run was created and counted.
    Created(RunId),
    /// The delivery key named an earlier run; nothing was counted.
    Existing(RunId),
    /// The cap was reached; nothing was written. The count used so far.
    OverCap(i64),
}

/// One user's counters for one day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// The user.
    pub user: String,
    /// The day.
    pub day: String,
    /// Runs created.
    pub runs: i64,
    /// LLM tokens used.
    pub llm_tokens: i64,
}

/// A stored webhook token (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    /// Token id.
    pub id: i64,
    /// The user it authenticates as.
    pub user: String,
    /// The only pipeline it may trigger, if scoped.
    pub pipeline: Option<String>,
    /// Its first characters.
    pub prefix: String,
    /// When it was created (ms).
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// When it was revoked (ms).
    pub revoked_at: Option<i64>,
}

/// A minimal view of an unfinished run, for admission and its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunBrief {
    /// The run.
    pub id: RunId,
    /// Its pipeline.
    pub pipeline: String,
    /// Whose run it is.
    pub user: Option<String>,
    /// Its state.
    pub state: RunState,
}

fn token_row(r: &impl Cols) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: r.int("id")?,
        user: r.text("user")?,
        pipeline: r.opt_text("pipeline")?,
        prefix: r.text("prefix")?,
        created_at: r.int("created_at")?,
        created_by: r.text("created_by")?,
        revoked_at: r.opt_int("revoked_at")?,
    })
}

impl Store {
    /// Commits `run` charged to a daily count (see [`DailyCharge`]); with a
    /// `key`, an unexpired key of the pipeline returns its run instead.
    pub async fn create_run_charged(
        &self,
        run: NewRun,
        key: Option<(&str, i64)>,
        charge: &DailyCharge,
    ) -> Result<Charged, StoreError> {
        self.create_run_charged_shared(std::sync::Arc::new(run), key, charge)
            .await
            .map(|(charged, _)| charged)
    }

    /// [`Store::create_run_charged`] of a run the caller keeps; also returns
    /// the `created_at` a created run was stored with.
    pub(crate) async fn create_run_charged_shared(
        &self,
        run: std::sync::Arc<NewRun>,
        key: Option<(&str, i64)>,
        charge: &DailyCharge,
    ) -> Result<(Charged, i64), StoreError> {
        // A run executed before it was written was created before it started.
        let at = run.done.as_ref().map_or_else(now_ms, |d| d.created_at);
        let then = match key {
            Some((k, ttl_ms)) => Write::CreateRunOnce {
                run: RunRow::encode(run)?,
                key: k.to_owned(),
                expires_at: at.saturating_add(ttl_ms),
                at,
            },
            None => Write::CreateRun(RunRow::encode(run)?, at),
        };
        match self
            .write(Write::Charged {
                user: charge.user.clone(),
                day: charge.day.clone(),
                cap: charge.cap,
                then: Box::new(then),
            })
            .await?
        {
            Written::Id(id) => Ok((Charged::Created(RunId(id)), at)),
            Written::Existing(id) => Ok((Charged::Existing(RunId(id)), at)),
            Written::OverCap(used) => Ok((Charged::OverCap(used), at)),
            other => Err(StoreError::Data(format!(
                "unexpected write result {other:?}"
            ))),
        }
    }

    /// `user`'s counters for `day` (zero when nothing was counted).
    pub async fn usage(&self, user: &str, day: &str) -> Result<UsageRow, StoreError> {
        let row: Option<(i64, i64)> = read!(self, pool => sqlx::query_as(
            // An old sum may have overflowed into a float: read it as an integer.
            "SELECT runs, CAST(llm_tokens AS BIGINT) FROM usage WHERE \"user\" = $1 AND day = $2",
        )
        .bind(user)
        .bind(day)
        .fetch_optional(pool)
        .await?);
        let (runs, llm_tokens) = row.unwrap_or((0, 0));
        Ok(UsageRow {
            user: user.to_owned(),
            day: day.to_owned(),
            runs,
            llm_tokens,
        })
    }

    /// Every counter of a day on or after `day` (`YYYY-MM-DD` sorts as text).
    pub async fn usage_since(&self, day: &str) -> Result<Vec<UsageRow>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = read!(self, pool => sqlx::query_as(
            "SELECT \"user\", day, runs, CAST(llm_tokens AS BIGINT) FROM usage WHERE day >= $1 ORDER BY \"user\", day",
        )
        .bind(day)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(user, day, runs, llm_tokens)| UsageRow {
                user,
                day,
                runs,
                llm_tokens,
            })
            .collect())
    }

    /// Every queued, running or waiting run, oldest first.
    pub async fn unfinished_briefs(&self) -> Result<Vec<RunBrief>, StoreError> {
        let rows: Vec<(i64, String, Option<String>, String)> = read!(self, pool => sqlx::query_as(
            "SELECT id, pipeline, \"user\", state FROM runs WHERE finished_at IS NULL AND state IN ('queued', 'running', 'waiting') ORDER BY id",
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(id, pipeline, user, state)| {
                Ok(RunBrief {
                    id: RunId(id),
                    pipeline,
                    user,
                    state: state
                        .parse()
                        .map_err(|e: sluice_shared::run::UnknownState| {
                            StoreError::Data(e.to_string())
                        })?,
                })
            })
            .collect()
    }

    /// Adds aggregated refusals: `(user, limit, unix minute, pipeline, count)`.
    pub async fn record_refusals(
        &self,
        rows: Vec<(String, String, i64, String, i64)>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let statements = rows
            .into_iter()
            .map(|(user, limit, minute, pipeline, count)| {
                (
                    "INSERT INTO limit_refusals (\"user\", limit_name, minute, pipeline, count) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (\"user\", limit_name, minute, pipeline) DO UPDATE SET count = limit_refusals.count + excluded.count"
                        .to_owned(),
                    vec![
                        SqlArg::Text(user),
                        SqlArg::Text(limit),
                        SqlArg::Int(minute),
                        SqlArg::Text(pipeline),
                        SqlArg::Int(count),
                    ],
                )
            })
            .collect();
        self.exec(statements).await.map(|_| ())
    }

    /// Refusals per user and limit since `minute` (Unix minutes).
    pub async fn refusals_since(
        &self,
        minute: i64,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(read!(self, pool => sqlx::query_as(
            "SELECT \"user\", limit_name, CAST(SUM(count) AS BIGINT) FROM limit_refusals WHERE minute >= $1 GROUP BY \"user\", limit_name ORDER BY \"user\", limit_name",
        )
        .bind(minute)
        .fetch_all(pool)
        .await?))
    }

    /// Stores a new token's hash; returns its id.
    pub async fn create_token(
        &self,
        user: &str,
        pipeline: Option<&str>,
        hash: &str,
        prefix: &str,
        created_by: &str,
    ) -> Result<i64, StoreError> {
        self.exec(vec![(
            "INSERT INTO user_tokens (\"user\", pipeline, hash, prefix, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
                .to_owned(),
            vec![
                SqlArg::Text(user.to_owned()),
                SqlArg::opt_text(pipeline.map(str::to_owned)),
                SqlArg::Text(hash.to_owned()),
                SqlArg::Text(prefix.to_owned()),
                SqlArg::Int(now_ms()),
                SqlArg::Text(created_by.to_owned()),
            ],
        )])
        .await
    }

    /// Every token, newest first (revoked ones included).
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM user_tokens ORDER BY id DESC")
            .fetch_all(pool)
            .await?
            .iter()
            .map(token_row)
            .collect())
    }

    /// The unrevoked token with this hash.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM user_tokens WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(token_row)
        .transpose())
    }

    /// Revokes a token; false when there is no such unrevoked token.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let n = self
            .exec(vec![(
                "UPDATE user_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
                    .to_owned(),
                vec![SqlArg::Int(now_ms()), SqlArg::Int(id)],
            )])
            .await?;
        Ok(n > 0)
    }
}
