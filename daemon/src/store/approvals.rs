//! Approvals: one row per approval node attempt. Every decision — a vote, a
//! rejection, the expiry, a cancel — is one conditional UPDATE on that row
//! through the single writer, so whichever arrives first wins and the rest see
//! the winner.

use sluice_shared::protocol::{ApprovalInfo, ApprovalVote};
use sluice_shared::run::RunId;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{SqlArg, Store, StoreError};

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

fn info(r: &SqliteRow) -> Result<ApprovalInfo, StoreError> {
    let text = |col: &str| -> Result<String, StoreError> { Ok(r.try_get::<String, _>(col)?) };
    let approvers: Vec<String> = serde_json::from_str(&text("approvers")?)
        .map_err(|e| StoreError::Data(format!("approval approvers: {e}")))?;
    let votes: Vec<ApprovalVote> = serde_json::from_str(&text("votes")?)
        .map_err(|e| StoreError::Data(format!("approval votes: {e}")))?;
    Ok(ApprovalInfo {
        id: r.try_get("id")?,
        run: RunId(r.try_get("run_id")?),
        node: r.try_get("node_id")?,
        state: r.try_get("state")?,
        message: r.try_get("message")?,
        requested_at: r.try_get("requested_at")?,
        deadline: r.try_get("deadline")?,
        decided_by: r.try_get("decided_by")?,
        reason: r.try_get("reason")?,
        pipeline: r.try_get("pipeline")?,
        approvers,
        min_approvals: u32::try_from(r.try_get::<i64, _>("min_approvals")?).unwrap_or(1),
        votes,
        decision: r.try_get("decision")?,
        decided_at: r.try_get("decided_at")?,
        requested_by: r.try_get("requested_by")?,
        allow_self_approval: r.try_get::<i64, _>("allow_self")? != 0,
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
             VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id, node_id, attempt) DO UPDATE SET id = id RETURNING id"
                .into(),
            vec![
                SqlArg::Int(a.run.0),
                SqlArg::Text(a.node),
                SqlArg::Int(i64::from(a.attempt)),
                a.message.map_or(SqlArg::Null, SqlArg::Text),
                SqlArg::Text(approvers),
                SqlArg::Int(i64::from(a.min_approvals.max(1))),
                SqlArg::Int(a.requested_at),
                a.deadline.map_or(SqlArg::Null, SqlArg::Int),
                SqlArg::Text(a.pipeline),
                a.requested_by.map_or(SqlArg::Null, SqlArg::Text),
                SqlArg::Int(i64::from(a.allow_self)),
                SqlArg::Text(a.on_timeout),
                a.remind_every.map_or(SqlArg::Null, SqlArg::Int),
            ],
        )])
        .await
    }

    /// One approval.
    pub async fn approval(&self, id: i64) -> Result<Option<ApprovalInfo>, StoreError> {
        let row = sqlx::query("SELECT * FROM approvals WHERE id = ?")
            .bind(id)
            .fetch_optional(self.reads())
            .await?;
        row.as_ref().map(info).transpose()
    }

    /// The approval of one node attempt, with its timeout settings.
    pub async fn approval_of(
        &self,
        run: RunId,
        node: &str,
        attempt: u32,
    ) -> Result<Option<(ApprovalInfo, ApprovalTimeout)>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM approvals WHERE run_id = ? AND node_id = ? AND attempt = ?")
                .bind(run.0)
                .bind(node)
                .bind(i64::from(attempt))
                .fetch_optional(self.reads())
                .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((
                info(&r)?,
                ApprovalTimeout {
                    on_timeout: r.try_get("on_timeout")?,
                    remind_every: r.try_get("remind_every")?,
                },
            ))),
        }
    }

    /// Approvals: the pending queue oldest first, or every approval newest first.
    pub async fn approvals(
        &self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<ApprovalInfo>, StoreError> {
        let sql = if pending_only {
            "SELECT * FROM approvals WHERE state = 'pending' ORDER BY id LIMIT ?"
        } else {
            "SELECT * FROM approvals ORDER BY id DESC LIMIT ?"
        };
        let rows = sqlx::query(sql).bind(limit).fetch_all(self.reads()).await?;
        rows.iter().map(info).collect()
    }

    /// How many approvals wait for a decision.
    pub async fn pending_approvals(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE state = 'pending'")
            .fetch_one(self.reads())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Applies a vote if the approval is still pending, before its deadline,
    /// and the user has not voted yet. Returns the state after the vote, or
    /// `None` when the vote lost (the caller reads the row to say why).
    pub async fn vote(&self, v: Vote) -> Result<Option<String>, StoreError> {
        let reason = v.reason.map_or(SqlArg::Null, SqlArg::Text);
        let open = "WHERE id = ? AND state = 'pending' AND (deadline IS NULL OR deadline > ?)";
        // One vote per user; anyone allowed may still reject (an approver changing their mind too).
        let guard = format!(
            "{open} AND NOT EXISTS (SELECT 1 FROM json_each(approvals.votes) \
             WHERE json_extract(value, '$.user') = ?) RETURNING 1"
        );
        let (sql, args) = if v.approve {
            (
                format!(
                    "UPDATE approvals SET \
                     votes = json_insert(votes, '$[#]', json_object('user', ?, 'at', ?, 'reason', ?)), \
                     state = CASE WHEN json_array_length(votes) + 1 >= min_approvals \
                             THEN 'approved' ELSE 'pending' END, \
                     decision = CASE WHEN json_array_length(votes) + 1 >= min_approvals \
                                THEN 'approved' END, \
                     decided_by = CASE WHEN json_array_length(votes) + 1 >= min_approvals \
                                  THEN ? END, \
                     decided_at = CASE WHEN json_array_length(votes) + 1 >= min_approvals \
                                  THEN ? END, \
                     reason = CASE WHEN json_array_length(votes) + 1 >= min_approvals \
                              THEN ? END \
                     {guard}"
                ),
                vec![
                    SqlArg::Text(v.user.clone()),
                    SqlArg::Int(v.at),
                    reason.clone(),
                    SqlArg::Text(v.user.clone()),
                    SqlArg::Int(v.at),
                    reason,
                    SqlArg::Int(v.id),
                    SqlArg::Int(v.at),
                    SqlArg::Text(v.user),
                ],
            )
        } else {
            (
                format!(
                    "UPDATE approvals SET state = 'rejected', decision = 'rejected', \
                     decided_by = ?, decided_at = ?, reason = ? {open} RETURNING 1"
                ),
                vec![
                    SqlArg::Text(v.user),
                    SqlArg::Int(v.at),
                    reason,
                    SqlArg::Int(v.id),
                    SqlArg::Int(v.at),
                ],
            )
        };
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
                "UPDATE approvals SET state = 'expired', decision = ?, decided_at = ?, \
                 reason = 'no decision before the deadline' \
                 WHERE id = ? AND state = 'pending' AND deadline IS NOT NULL AND deadline <= ? \
                 RETURNING 1"
                    .into(),
                vec![
                    decision.map_or(SqlArg::Null, |d| SqlArg::Text(d.to_owned())),
                    SqlArg::Int(now),
                    SqlArg::Int(id),
                    SqlArg::Int(now),
                ],
            )])
            .await?;
        Ok(n != 0)
    }

    /// The statement that cancels a finished run's pending approvals (applied
    /// with the run's final state, in one transaction).
    pub fn cancel_approvals_sql(run: RunId, now: i64) -> (String, Vec<SqlArg>) {
        (
            "UPDATE approvals SET state = 'cancelled', decided_at = ? \
             WHERE run_id = ? AND state = 'pending'"
                .into(),
            vec![SqlArg::Int(now), SqlArg::Int(run.0)],
        )
    }
}
