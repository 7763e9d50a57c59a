//! Exit codes, distinct per outcome so scripts can tell them apart, and the
//! failure every command reports through them.

use serde_json::{Value, json};
use sluice_shared::protocol::ErrorCode;

use sluice_shared::client::ClientError;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked (or every file is valid).
    Success = 0,
    /// The command ran and the answer is "no" (invalid file, failed run, conflict).
    Failure = 1,
    /// Bad arguments or parameters.
    Usage = 2,
    /// No such run, pipeline, node or approval.
    NotFound = 3,
    /// The caller's role (or the socket's permissions) does not allow it.
    PermissionDenied = 4,
    /// A limit refused it.
    Refused = 5,
    /// The daemon could not be reached.
    Unreachable = 6,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

impl Exit {
    /// The exit code for a failed call.
    pub fn of(err: &ClientError) -> Self {
        match err {
            ClientError::Unreachable { .. } => Self::Unreachable,
            ClientError::SocketDenied { .. } => Self::PermissionDenied,
            ClientError::Protocol(_) | ClientError::Closed | ClientError::Unreadable(_) => {
                Self::Failure
            }
            ClientError::Rpc(e) => match e.code {
                c if c == ErrorCode::NotFound as i64 => Self::NotFound,
                c if c == ErrorCode::PermissionDenied as i64 => Self::PermissionDenied,
                c if c == ErrorCode::Refused as i64 => Self::Refused,
                c if c == ErrorCode::InvalidParams as i64 => Self::Usage,
                _ => Self::Failure,
            },
        }
    }

    /// The outcome's name in `--json` error objects (`not_found`, `refused`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Usage => "usage",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
        }
    }
}

/// Why a command failed: its exit code, a message for people and, when the
/// daemon answered, its error code and details for programs.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code.
    pub exit: Exit,
    /// Message for stderr.
    pub message: String,
    /// The daemon's JSON-RPC error code, when it answered with an error.
    pub rpc_code: Option<i64>,
    /// Details for programs (the daemon's `data`, or what the client found).
    pub data: Option<Value>,
}

impl Failure {
    /// A failure with an exit code and a message.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            rpc_code: None,
            data: None,
        }
    }

    /// Bad arguments (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// The `--json` form: `{"error": {"code", "exit", "message", "data"}}`,
    /// plus `rpc_code` when the daemon answered.
    pub fn to_json(&self) -> Value {
        let mut error = json!({
            "code": self.exit.name(),
            "exit": self.exit as u8,
            "message": self.message,
            "data": self.data.clone().unwrap_or(Value::Null),
        });
        if let Some(code) = self.rpc_code {
            error["rpc_code"] = json!(code);
        }
        json!({ "error": error })
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let exit = Exit::of(&e);
        let (rpc_code, data) = match &e {
            ClientError::Rpc(r) => (Some(r.code), r.data.clone()),
            ClientError::Unreachable { path, .. } => (None, Some(json!({ "socket": path }))),
            ClientError::SocketDenied {
                path,
                owner,
                group,
                mode,
            } => (
                None,
                Some(json!({
                    "socket": path,
                    "owner": owner,
                    "group": group,
                    "mode": format!("{mode:04o}"),
                })),
            ),
            ClientError::Protocol(_) | ClientError::Closed | ClientError::Unreadable(_) => {
                (None, None)
            }
        };
        Self {
            exit,
            message: e.to_string(),
            rpc_code,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::protocol::RpcError;

    #[test]
    fn a_daemon_error_keeps_its_code_and_data_in_json() {
        let e = ClientError::Rpc(
            RpcError::new(ErrorCode::Refused, "over the rate")
                .with_data(json!({ "retry_after_s": 3 })),
        );
        let f = Failure::from(e);
        assert_eq!(f.exit, Exit::Refused);
        let v = f.to_json();
        assert_eq!(v["error"]["code"], "refused");
        assert_eq!(v["error"]["exit"], 5);
        assert_eq!(v["error"]["rpc_code"], -32003);
        assert_eq!(v["error"]["data"]["retry_after_s"], 3);
        assert_eq!(v["error"]["message"], "over the rate");
    }
}
