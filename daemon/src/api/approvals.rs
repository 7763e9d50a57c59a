//! Approvals over the socket: `approvals.list`, `approvals.decide`.

use sluice_shared::protocol::{
    ApprovalInfo, ApprovalsListParams, DecideParams, DecideResult, RpcError,
};

use super::dispatch::Cx;
use super::errors::{engine_err, store_err};
use crate::engine::Decider;

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
        .map_err(store_err)
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
        .map_err(engine_err)
}
