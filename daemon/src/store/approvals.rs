//! Approvals: one row per approval node attempt. Every decision — a vote, a
//! rejection, the expiry, a cancel — is one conditional UPDATE on that row
//! through the single writer, so whichever arrives first wins and the rest see
//! the winner.

use super::backend::{Cols, read};
use super::{Dialect, SqlArg, Store, StoreError};
use sluice_shared::run::RunId;

/// A new approval request.
#[derive(Clone, Debug)]
pub struct NewApproval {
    /// The run.
    pub run: RunId,
    /// The approval node.
    pub node: String,
    /// Its attempt.
    pub attempt: u32,
    /// The run's pipeline.
    pub pipeline: String,
    /// The rendered question.
    pub message: Option<String>,
    /// Users and `@groups` who may decide; empty: any operator.
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    pub min_approvals: u32,
    /// The user who triggered the run.
    pub requested_by: Option<String>,
    /// Whether that user may approve.
    pub allow_self: bool,
    /// `reject`, `approve` or `fail`.
    pub on_timeout: String,
    /// Reminder period (ms).
    pub remind_every: Option<i64>,
    /// Requested at (ms).
    pub requested_at: i64,
    /// Deadline (ms).
    pub deadline: Option<i64>,
}

/// A vote or a rejection to apply.
#[derive(Clone, Debug)]
pub struct Vote {
    /// The approval.
    pub id: i64,
    /// Who.
    pub user: String,
    /// Approve (true) or reject.
    pub approve: bool,
    /// Their reason.
    pub reason: Option<String>,
    /// When (ms); a vote at or after the deadline loses to the expiry.
    pub at: i64,
}

/// Approval states that are final.
pub const FINAL: [&str; 4] = ["approved", "rejected", "expired", "cancelled"];

/// A vote as stored in an approval's `votes`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct VoteRecord {
    /// Who.
    pub user: String,
    /// When (ms).
    pub at: i64,
    /// Their note.
    #[serde(default)]
    pub reason: Option<String>,
}

/// An approval as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRecord {
    /// Approval id.
    pub id: i64,
    /// The run.
    pub run: RunId,
    /// The approval node.
    pub node: String,
    /// pending, approved, rejected, expired, cancelled.
    pub state: String,
    /// What is asked.
    pub message: Option<String>,
    /// Requested at (ms).
    pub requested_at: i64,
    /// Deadline (ms).
    pub deadline: Option<i64>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// The run's pipeline.
    pub pipeline: String,
    /// Who may decide: users and `@groups` (empty: any operator).
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    pub min_approvals: u32,
    /// Approvals so far.
    pub votes: Vec<VoteRecord>,
    /// approved or rejected, once decided (also after an expiry).
    pub decision: Option<String>,
    /// Decided, expired or cancelled at (ms).
    pub decided_at: Option<i64>,
    /// The user who triggered the run.
    pub requested_by: Option<String>,
    /// Whether that user may approve it too.
    pub allow_self_approval: bool,
}

fn info(r: &impl Cols) -> Result<ApprovalRecord, StoreError> {
    let approvers: Vec<String> = serde_json::from_str(&r.text("approvers")?)
        .map_err(|e| StoreError::Data(format!("approval approvers: {e}")))?;
    let votes: Vec<VoteRecord> = r.json_as("votes")?.unwrap_or_default();
    Ok(ApprovalRecord {
        id: r.int("id")?,
        run: RunId(r.int("run_id")?),
        node: r.text("node_id")?,
        state: r.text("state")?,
        message: r.opt_text("message")?,
        requested_at: r.int("requested_at")?,
        deadline: r.opt_int("deadline")?,
        decided_by: r.opt_text("decided_by")?,
        reason: r.opt_text("reason")?,
        pipeline: r.text("pipeline")?,
        approvers,
        min_approvals: u32::try_from(r.int("min_approvals")?).unwrap_or(1),
        votes,
        decision: r.opt_text("decision")?,
        decided_at: r.opt_int("decided_at")?,
        requested_by: r.opt_text("requested_by")?,
        allow_self_approval: r.int("allow_self")? != 0,
    })
}

/// The attempt an approval belongs to and how it ends on timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalTimeout {
    /// `reject`, `approve` or `fail`.
    pub on_timeout: String,
    /// Reminder period (ms).
    pub remind_every: Option<i64>,
}

impl Store {
    /// Records a request, or returns the id of the one already recorded for
    /// this attempt (a crash between recording and waiting repeats the call).
    pub async fn open_approval(&self, a: NewApproval) -> Result<i64, StoreError> {
        let approvers = serde_json::to_string(&a.approvers)
            .map_err(|e| StoreError::Data(format!("approvers: {e}")))?;
        self.exec(vec![(
            "INSERT INTO approvals (run_id, node_id, attempt, state, message, approvers, \
             min_approvals, requested_at, deadline, pipeline, requested_by, allow_self, \
             on_timeout, remind_every) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (run_id, node_id, attempt) DO UPDATE SET id = approvals.id RETURNING id"
                .into(),
            vec![
                SqlArg::Int(a.run.0),
                SqlArg::Text(a.node),
                SqlArg::Int(i64::from(a.attempt)),
                SqlArg::opt_text(a.message),
                SqlArg::Text(approvers),
                SqlArg::Int(i64::from(a.min_approvals.max(1))),
                SqlArg::Int(a.requested_at),
                SqlArg::opt_int(a.deadline),
                SqlArg::Text(a.pipeline),
                SqlArg::opt_text(a.requested_by),
                SqlArg::Int(i64::from(a.allow_self)),
                SqlArg::Text(a.on_timeout),
                SqlArg::opt_int(a.remind_every),
            ],
        )])
        .await
    }

    /// One approval.
    pub async fn approval(&self, id: i64) -> Result<Option<ApprovalRecord>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(info)
            .transpose())
    }

    /// The approval of one node attempt, with its timeout settings.
    pub async fn approval_of(
        &self,
        run: RunId,
        node: &str,
        attempt: u32,
    ) -> Result<Option<(ApprovalRecord, ApprovalTimeout)>, StoreError> {
        read!(self, pool => {
            let row = sqlx::query(
                "SELECT * FROM approvals WHERE run_id = $1 AND node_id = $2 AND attempt = $3",
            )
            .bind(run.0)
            .bind(node)
            .bind(i64::from(attempt))
            .fetch_optional(pool)
            .await?;
            match row {
                None => Ok(None),
                Some(r) => Ok(Some((
                    info(&r)?,
                    ApprovalTimeout {
                        on_timeout: r.text("on_timeout")?,
                        remind_every: r.opt_int("remind_every")?,
                    },
                ))),
            }
        })
    }

    /// Approvals: the pending queue oldest first, or every approval newest first.
    pub async fn approvals(
        &self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let sql = if pending_only {
            "SELECT * FROM approvals WHERE state = 'pending' ORDER BY id LIMIT $1"
        } else {
            "SELECT * FROM approvals ORDER BY id DESC LIMIT $1"
        };
        read!(self, pool => sqlx::query(sql)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(info)
            .collect())
    }

    /// How many approvals wait for a decision.
    pub async fn pending_approvals(&self) -> Result<u64, StoreError> {
        let n: i64 = read!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE state = 'pending'",
        )
        .fetch_one(pool)
        .await?);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Applies a vote if the approval is still pending, before its deadline,
    /// and the user has not voted yet. Returns the state after the vote, or
    /// `None` when the vote lost (the caller reads the row to say why).
    pub async fn vote(&self, v: Vote) -> Result<Option<String>, StoreError> {
        let reason = SqlArg::opt_text(v.reason);
        // $1 user, $2 at, $3 reason, $4 approval id.
        let open = "WHERE id = $4 AND state = 'pending' AND (deadline IS NULL OR deadline > $2)";
        let sql = if v.approve {
            // One vote per user; anyone allowed may still reject (an approver changing their mind too).
            let (append, count, voted) = match self.dialect() {
                Dialect::Sqlite => (
                    "json_insert(votes, '$[#]', json_object('user', $1, 'at', $2, 'reason', $3))",
                    "json_array_length(votes)",
                    "SELECT 1 FROM json_each(approvals.votes) WHERE json_extract(value, '$.user') = $1",
                ),
                Dialect::Postgres => (
                    "votes || jsonb_build_array(jsonb_build_object('user', $1::text, 'at', $2::bigint, 'reason', $3::text))",
                    "jsonb_array_length(votes)",
                    "SELECT 1 FROM jsonb_array_elements(approvals.votes) AS v WHERE v->>'user' = $1",
                ),
            };
            let decided = format!("CASE WHEN {count} + 1 >= min_approvals");
            format!(
                "UPDATE approvals SET votes = {append}, \
                 state = {decided} THEN 'approved' ELSE 'pending' END, \
                 decision = {decided} THEN 'approved' END, \
                 decided_by = {decided} THEN $1 END, \
                 decided_at = {decided} THEN $2 END, \
                 reason = {decided} THEN $3 END \
                 {open} AND NOT EXISTS ({voted}) RETURNING 1"
            )
        } else {
            format!(
                "UPDATE approvals SET state = 'rejected', decision = 'rejected', \
                 decided_by = $1, decided_at = $2, reason = $3 {open} RETURNING 1"
            )
        };
        let args = vec![
            SqlArg::Text(v.user),
            SqlArg::Int(v.at),
            reason,
            SqlArg::Int(v.id),
        ];
        let n = self.exec(vec![(sql, args)]).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(self.approval(v.id).await?.map(|a| a.state))
    }

    /// Ends a pending approval whose deadline has passed; `decision` is what
    /// `on_timeout` makes of it. False when it was decided first.
    pub async fn expire_approval(
        &self,
        id: i64,
        decision: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .exec(vec![(
                "UPDATE approvals SET state = 'expired', decision = $1, decided_at = $2, \
                 reason = 'no decision before the deadline' \
                 WHERE id = $3 AND state = 'pending' AND deadline IS NOT NULL AND deadline <= $2 \
                 RETURNING 1"
                    .into(),
                vec![
                    SqlArg::opt_text(decision.map(str::to_owned)),
                    SqlArg::Int(now),
                    SqlArg::Int(id),
                ],
            )])
            .await?;
        Ok(n != 0)
    }

    /// The statement that cancels a finished run's pending approvals (applied
    /// with the run's final state, in one transaction).
    pub fn cancel_approvals_sql(run: RunId, now: i64) -> (String, Vec<SqlArg>) {
        (
            "UPDATE approvals SET state = 'cancelled', decided_at = $1 \
             WHERE run_id = $2 AND state = 'pending'"
                .into(),
            vec![SqlArg::Int(now), SqlArg::Int(run.0)],
        )
    }
}
