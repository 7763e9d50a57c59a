//! Exit codes, distinct per outcome so scripts can tell them apart.

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked (or every file is valid).
    Success = 0,
    /// The command ran and the answer is "no" (invalid file, failed run).
    Failure = 1,
    /// Bad arguments.
    Usage = 2,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
