//! Wire types of approvals.

use serde::{Deserialize, Serialize};

use crate::run::RunId;

/// One approval in `approvals.list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    /// Approval id.
    pub id: i64,
    /// The run.
    pub run: RunId,
    /// The approval node.
    pub node: String,
    /// pending, approved, rejected, expired, cancelled.
    pub state: String,
    /// What is asked.
    #[serde(default)]
    pub message: Option<String>,
    /// Requested at (ms).
    pub requested_at: i64,
    /// Deadline (ms).
    #[serde(default)]
    pub deadline: Option<i64>,
    /// Who decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The run's pipeline.
    #[serde(default)]
    pub pipeline: String,
    /// Who may decide: users and `@groups` (empty: any operator).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Distinct approvals needed.
    #[serde(default = "one")]
    pub min_approvals: u32,
    /// Approvals so far.
    #[serde(default)]
    pub votes: Vec<ApprovalVote>,
    /// approved or rejected, once decided (also after an expiry).
    #[serde(default)]
    pub decision: Option<String>,
    /// Decided, expired or cancelled at (ms).
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// The user who triggered the run.
    #[serde(default)]
    pub requested_by: Option<String>,
    /// Whether that user may approve it too.
    #[serde(default)]
    pub allow_self_approval: bool,
}

fn one() -> u32 {
    1
}

/// One approval vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// Who.
    pub user: String,
    /// When (ms).
    pub at: i64,
    /// Their note.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `approvals.decide` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecideResult {
    /// The approval after the decision.
    pub approval: ApprovalInfo,
    /// True once the approval is decided; false while more approvals are needed.
    pub decided: bool,
}

/// `approvals.decide` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecideParams {
    /// Approval id.
    pub id: i64,
    /// true to approve, false to reject.
    pub approve: bool,
    /// Why (required to reject).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `approvals.list` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalsListParams {
    /// The pending queue (true, the default) or every approval (false).
    #[serde(
        default,
        deserialize_with = "super::lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pending: Option<bool>,
}
