//! How the daemon's errors become socket errors: one mapping per source, so
//! every method answers the same failure with the same code and words.

use serde_json::json;
use sluice_shared::protocol::{ErrorCode, RpcError};

use crate::audit::AuditError;
use crate::engine::EngineError;
use crate::store::StoreError;
use crate::triggers::TriggerError;

/// A store failure: a missing row is not found, the rest internal.
pub(crate) fn store_err(e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound(what) => {
            RpcError::new(ErrorCode::NotFound, format!("not found: {what}"))
        }
        other => RpcError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// An engine refusal, by kind: bad inputs, not found, conflict, denied.
pub(crate) fn engine_err(e: EngineError) -> RpcError {
    match e {
        EngineError::Input(m) => {
            RpcError::new(ErrorCode::InvalidParams, format!("invalid inputs: {m}"))
        }
        EngineError::NotFound(run) => {
            RpcError::new(ErrorCode::NotFound, format!("run {run} not found"))
        }
        EngineError::Conflict(m) => RpcError::new(ErrorCode::Conflict, m),
        EngineError::Missing(what) => {
            RpcError::new(ErrorCode::NotFound, format!("{what} not found"))
        }
        EngineError::Denied(m) => RpcError::new(ErrorCode::PermissionDenied, m),
        EngineError::Store(s) => store_err(s),
        other => RpcError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// A trigger refused: unknown or removed pipeline, disabled, bad inputs, a limit.
pub(crate) fn trigger_err(e: TriggerError) -> RpcError {
    match e {
        TriggerError::UnknownPipeline(name) => {
            RpcError::new(ErrorCode::NotFound, format!("no pipeline '{name}'"))
        }
        // A removed pipeline is gone for a trigger as for a retry (not found).
        TriggerError::Disabled {
            name,
            why,
            removed: true,
        } => RpcError::new(ErrorCode::NotFound, format!("pipeline '{name}' is {why}"))
            .with_data(json!({ "pipeline": name, "reason": "removed" })),
        TriggerError::Disabled { name, why, .. } => {
            RpcError::new(ErrorCode::Conflict, format!("pipeline '{name}' is {why}"))
        }
        TriggerError::Input(m) => {
            RpcError::new(ErrorCode::InvalidParams, format!("invalid inputs: {m}"))
        }
        TriggerError::Engine(e) => engine_err(e),
        TriggerError::Store(e) => store_err(e),
        TriggerError::Limited(r) => {
            let data = r.data();
            RpcError::new(ErrorCode::Refused, r.message).with_data(data)
        }
    }
}

/// A retry's refusal: a removed pipeline is gone (not found), a disabled one
/// refuses (as a limit would); the rest as for triggers.
pub(crate) fn retry_err(e: TriggerError) -> RpcError {
    match e {
        TriggerError::Disabled {
            name,
            removed: false,
            ..
        } => RpcError::new(
            ErrorCode::Refused,
            format!(
                "pipeline '{name}' is disabled; `sluice enable {name}` before retrying its runs"
            ),
        )
        .with_data(json!({ "pipeline": name, "reason": "disabled" })),
        TriggerError::Disabled { name, why, .. } => RpcError::new(
            ErrorCode::NotFound,
            format!("pipeline '{name}' is {why}; its runs cannot be retried"),
        )
        .with_data(json!({ "pipeline": name, "reason": "removed" })),
        other => trigger_err(other),
    }
}

/// An audit-trail failure; acknowledging a trail that is not broken is a conflict.
pub(crate) fn audit_err(e: AuditError) -> RpcError {
    match e {
        AuditError::Store(s) => store_err(s),
        AuditError::NotBroken => RpcError::new(ErrorCode::Conflict, e.to_string()),
        other => RpcError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// Anything else that failed inside the daemon.
pub(crate) fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(ErrorCode::Internal, e.to_string())
}
