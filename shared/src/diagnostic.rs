//! Problems found in a pipeline file, located and explained like a compiler's.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::document::{DocPath, Pos};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is rejected.
    Error,
    /// The file is accepted but something looks wrong.
    Warning,
}

/// One problem in one file, with where it is and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the syntax lets us know it.
    pub line: Option<u32>,
    /// 1-based column, when the syntax lets us know it.
    pub column: Option<u32>,
    /// Error or warning.
    pub severity: Severity,
    /// Where in the document, e.g. `nodes[2].needs[0]`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `path`, not yet located in the source.
    pub fn error(path: &DocPath, message: impl Into<String>) -> Self {
        Self {
            file: PathBuf::new(),
            line: None,
            column: None,
            severity: Severity::Error,
            path: path.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `path`, not yet located in the source.
    pub fn warning(path: &DocPath, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// Sets the source position.
    pub fn at(mut self, pos: Option<Pos>) -> Self {
        if let Some(pos) = pos {
            self.line = Some(pos.line);
            self.column = Some(pos.column);
        }
        self
    }

    /// True for errors (as opposed to warnings).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {severity}: {}", self.message)?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}
