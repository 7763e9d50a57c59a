//! Wire types of the audit trail.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One audit row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// Who.
    pub user: String,
    /// What, e.g. `runs.cancel`.
    pub action: String,
    /// On what, e.g. `run #12`.
    #[serde(default)]
    pub target: Option<String>,
    /// Details.
    pub detail: Value,
    /// Hash of the previous row.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// `audit.list` parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditListParams {
    /// Rows with ids below this (newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Page size (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `audit.verify` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditVerifyResult {
    /// Rows checked.
    pub rows: u64,
    /// True when the chain is intact.
    pub ok: bool,
    /// The first row that was altered, or after which rows were removed.
    #[serde(default)]
    pub first_bad: Option<i64>,
    /// What is wrong there.
    #[serde(default)]
    pub problem: Option<String>,
}

/// `audit.ack` parameters (protocol 1.2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditAckParams {
    /// What the admin found or did, kept in the acknowledging row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `audit.ack` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditAckResult {
    /// The row that records the acknowledgement.
    pub row: i64,
    /// The problem acknowledged.
    pub problem: String,
}
