//! The audit trail over the socket: `audit.list`, `audit.verify`, `audit.ack`.

use sluice_shared::protocol::{
    AuditAckParams, AuditAckResult, AuditEntry, AuditListParams, AuditVerifyResult, NoParams,
    RpcError,
};

use super::dispatch::Cx;
use super::errors::{audit_err, store_err};
use crate::audit::AuditError;

/// `audit.list`: rows newest first.
pub(crate) async fn list(cx: &Cx<'_>, p: AuditListParams) -> Result<Vec<AuditEntry>, RpcError> {
    cx.engine
        .store()
        .audit_page(p.before, p.limit.unwrap_or(100).min(1000))
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|r| AuditEntry {
                    id: r.id,
                    at: r.at,
                    user: r.user,
                    action: r.action,
                    target: r.target,
                    detail: r.detail,
                    prev_hash: r.prev_hash,
                    hash: r.hash,
                })
                .collect()
        })
        .map_err(store_err)
}

/// `audit.verify`.
pub(crate) async fn verify(cx: &Cx<'_>, _: NoParams) -> Result<AuditVerifyResult, RpcError> {
    cx.audit.verify().await.map_err(audit_err)
}

/// `audit.ack`: an admin acknowledges a broken trail; the row it writes says what was found.
pub(crate) async fn ack(cx: &Cx<'_>, p: AuditAckParams) -> Result<AuditAckResult, RpcError> {
    let problem = cx
        .audit
        .problem()
        .await
        .ok_or_else(|| audit_err(AuditError::NotBroken))?;
    let note = p.note.map(|n| cx.engine.redactor().redact(&n).into_owned());
    let row = cx
        .audit
        .acknowledge(cx.user(), note)
        .await
        .map_err(audit_err)?;
    Ok(AuditAckResult { row, problem })
}
