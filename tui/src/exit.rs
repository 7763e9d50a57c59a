//! Exit codes, distinct per outcome so scripts can tell them apart.

use sluice_shared::protocol::ErrorCode;

use crate::client::ClientError;

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
    /// The caller's role does not allow it.
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
            ClientError::Protocol(_) => Self::Failure,
            ClientError::Rpc(e) => match e.code {
                c if c == ErrorCode::NotFound as i64 => Self::NotFound,
                c if c == ErrorCode::PermissionDenied as i64 => Self::PermissionDenied,
                c if c == ErrorCode::Refused as i64 => Self::Refused,
                c if c == ErrorCode::InvalidParams as i64 => Self::Usage,
                _ => Self::Failure,
            },
        }
    }
}
