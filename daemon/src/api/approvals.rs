//! Approvals over the socket: `approvals.list`, `approvals.decide`.

use sluice_shared::protocol::{
    ApprovalInfo, ApprovalVote, ApprovalsListParams, DecideParams, DecideResult, RpcError,
};

use super::dispatch::Cx;
use super::errors::{engine_err, store_err};
use crate::engine::Decider;
use crate::store::approvals::ApprovalRecord;

/// Most approvals one `approvals.list` returns.
const LIST_MAX: i64 = 500;

/// `approvals.list`: the pending queue oldest first (the default), or every approval newest first.
pub(crate) async fn list(
    cx: &Cx<'_>,
    p: ApprovalsListParams,
) -> Result<Vec<ApprovalInfo>, RpcError> {
    cx.engine
        .store()
        .approvals(p.pending.unwrap_or(true), LIST_MAX)
        .await
        .map(|rows| rows.into_iter().map(info).collect())
        .map_err(store_err)
}

/// An approval as the protocol shows it.
pub(crate) fn info(a: ApprovalRecord) -> ApprovalInfo {
    ApprovalInfo {
        id: a.id,
        run: a.run,
        node: a.node,
        state: a.state,
        message: a.message,
        requested_at: a.requested_at,
        deadline: a.deadline,
        decided_by: a.decided_by,
        reason: a.reason,
        pipeline: a.pipeline,
        approvers: a.approvers,
        min_approvals: a.min_approvals,
        votes: a
            .votes
            .into_iter()
            .map(|v| ApprovalVote {
                user: v.user,
                at: v.at,
                reason: v.reason,
            })
            .collect(),
        decision: a.decision,
        decided_at: a.decided_at,
        requested_by: a.requested_by,
        allow_self_approval: a.allow_self_approval,
    }
}

/// `approvals.decide`: a vote by the caller, who must be among the approvers.
pub(crate) async fn decide(cx: &Cx<'_>, p: DecideParams) -> Result<DecideResult, RpcError> {
    let who = Decider {
        user: cx.session.caller.user.clone(),
        groups: cx.session.caller.groups.clone(),
    };
    cx.engine
        .decide(p.id, &who, p.approve, p.reason)
        .await
        .map(|d| DecideResult {
            approval: info(d.approval),
            decided: d.decided,
        })
        .map_err(engine_err)
}
