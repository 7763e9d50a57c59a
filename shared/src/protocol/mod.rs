//! The socket protocol between `sluiced` and its clients: newline-delimited
//! JSON-RPC 2.0 over a Unix stream socket. Documented in docs/protocol.md.
//!
//! Compatibility rule: `hello` and the envelope types never change. Other
//! methods may change only together with a new [`PROTOCOL_MAJOR`]; additions
//! (new methods, new optional fields) bump [`PROTOCOL_MINOR`]. Which method
//! takes which params and answers with which result is said once, in
//! [`crate::method`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

mod approvals;
mod audit;
mod limits;
mod metrics;
mod pipelines;
mod runs;

pub use approvals::*;
pub use audit::*;
pub use limits::*;
pub use metrics::*;
pub use pipelines::*;
pub use runs::*;

/// Breaking-change counter: a client with another major version is refused.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Additions counter.
pub const PROTOCOL_MINOR: u32 = 2;
/// Largest frame (one JSON line) accepted by default.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Most bytes of encoded lines in one `logs.get` reply (one line always fits).
pub const LOGS_PAGE_BYTES: usize = 1024 * 1024;

/// The protocol version as text, e.g. "1.0".
pub fn protocol_version() -> String {
    format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
}

/// A request (with `id`) or notification (without) from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always "2.0".
    pub jsonrpc: String,
    /// Echoed in the response; absent for notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Method name, e.g. `runs.get`.
    pub method: String,
    /// Parameters (an object).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

impl Request {
    /// A request with an id.
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id: Some(Value::from(id)),
            method: method.into(),
            params,
        }
    }
}

/// A response to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Always "2.0".
    pub jsonrpc: String,
    /// The request's id (null when it could not be read).
    pub id: Value,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    /// A success.
    pub fn ok(id: Value, result: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: Value, error: RpcError) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A server-to-client notification (no id), e.g. an event of a subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Always "2.0".
    pub jsonrpc: String,
    /// `event` or `lagged`.
    pub method: String,
    /// The payload.
    pub params: Value,
}

/// Any message the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    /// A response.
    Response(Response),
    /// A notification.
    Notification(Notification),
}

/// A JSON-RPC error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// See [`ErrorCode`].
    pub code: i64,
    /// What went wrong, for people.
    pub message: String,
    /// Details for programs (e.g. `{"retry_after_s": 30}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// Error codes: JSON-RPC's own, then sluice's (-32001 and below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum ErrorCode {
    /// The frame is not JSON.
    ParseError = -32700,
    /// The JSON is not a request.
    InvalidRequest = -32600,
    /// No such method.
    MethodNotFound = -32601,
    /// Parameters do not fit the method.
    InvalidParams = -32602,
    /// The daemon failed.
    Internal = -32603,
    /// A run, pipeline, node or approval does not exist.
    NotFound = -32001,
    /// The caller's role does not allow this.
    PermissionDenied = -32002,
    /// A limit refused it (rate, concurrency, daily cap).
    Refused = -32003,
    /// It does not fit the current state (run already finished, ...).
    Conflict = -32004,
    /// `hello` is required first, or the client's protocol major differs.
    Handshake = -32005,
    /// The frame is larger than the daemon accepts.
    FrameTooLarge = -32006,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i64,
            message: message.into(),
            data: None,
        }
    }

    /// Adds machine-readable details.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Whether the code is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code as i64
    }
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also trigger, cancel, retry, resolve and decide approvals.
    Operator,
    /// Also enable/disable pipelines, reload config, manage tokens.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// `hello` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloParams {
    /// The client's protocol version, "MAJOR.MINOR".
    pub protocol: String,
    /// Client name and version, for logs.
    #[serde(default)]
    pub client: String,
}

/// `hello` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The daemon's protocol version.
    pub protocol: String,
    /// The daemon's version.
    pub daemon_version: String,
    /// Who the daemon thinks the caller is.
    pub user: String,
    /// The caller's role.
    pub role: Role,
}

/// The params of a method that takes none: sent as `{}`, and anything a
/// client sends is accepted and ignored (as daemons before the method table did).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoParams;

impl Serialize for NoParams {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for NoParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Self)
    }
}

/// Reads an optional field leniently: a value of the wrong type reads as
/// absent, as the daemon read these fields before they had types (an old
/// client's odd value keeps getting the default, not an error).
pub(crate) fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}
