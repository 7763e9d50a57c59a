//! Runs as the daemon records them and clients see them: ids, states,
//! triggers, node states and attempts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run's integer id, shown as `#1234`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl FromStr for RunId {
    type Err = std::num::ParseIntError;

    /// Accepts `1234` and `#1234`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().trim_start_matches('#').parse().map(RunId)
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownState(s.to_owned())),
                }
            }
        }
    };
}

/// A state name that is not one of the known states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state '{0}'")]
pub struct UnknownState(pub String);

string_enum! {
    /// Where a run is in its life.
    RunState {
        /// Accepted, not started (waiting for a slot).
        Queued = "queued",
        /// Nodes are executing.
        Running = "running",
        /// Nothing executes: delays, backoffs, approvals or a decision pending.
        Waiting = "waiting",
        /// Every node succeeded or was skipped.
        Succeeded = "succeeded",
        /// A node failed, or the run timed out.
        Failed = "failed",
        /// Cancelled by an operator.
        Cancelled = "cancelled",
    }
}

impl RunState {
    /// True for succeeded, failed and cancelled.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

string_enum! {
    /// Where a node is in a run.
    NodeState {
        /// Not started; its needs are not finished.
        Pending = "pending",
        /// An attempt is executing.
        Running = "running",
        /// Waiting for a deadline (delay, backoff) or a person (approval).
        Waiting = "waiting",
        /// Interrupted by a crash and not safe to repeat: an operator decides.
        NeedsDecision = "needs_decision",
        /// Done, with an output.
        Succeeded = "succeeded",
        /// Failed after its last attempt.
        Failed = "failed",
        /// Not run: its condition was false or a need did not succeed.
        Skipped = "skipped",
        /// Stopped by a cancel.
        Cancelled = "cancelled",
    }
}

impl NodeState {
    /// True when the node will not change again in this run.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}

string_enum! {
    /// How one attempt of a node ended.
    AttemptState {
        /// Still executing.
        Running = "running",
        /// Succeeded.
        Succeeded = "succeeded",
        /// Failed (maybe retried).
        Failed = "failed",
        /// Cut short by a daemon crash or stop.
        Interrupted = "interrupted",
        /// Stopped by a cancel.
        Cancelled = "cancelled",
    }
}

string_enum! {
    /// What started a run.
    TriggerKind {
        /// Someone asked (socket, CLI, `run-once`).
        Manual = "manual",
        /// A cron schedule.
        Cron = "cron",
        /// A webhook request.
        Webhook = "webhook",
        /// Retry of an earlier run.
        Retry = "retry",
    }
}

/// What started a run, with the details templates see as `trigger`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerInfo {
    /// The kind of trigger.
    pub kind: TriggerKind,
    /// The user the run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Kind-specific details (cron expression and scheduled time, webhook body and headers, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl TriggerInfo {
    /// A manual trigger by `user` (recorded in `details` too, as every trigger records its source).
    pub fn manual(user: Option<String>) -> Self {
        Self {
            kind: TriggerKind::Manual,
            details: serde_json::json!({ "user": user }),
            user,
        }
    }
}

/// How a finished run is retried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    /// Reuse outputs of nodes that succeeded; run the rest (the default).
    #[default]
    Failed,
    /// Run every node again.
    All,
}

/// How an operator resolves a node in `needs_decision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Resolution {
    /// Attempt the node again.
    Retry,
    /// Mark it succeeded with this output.
    Succeed {
        /// The output dependents will read.
        #[serde(default)]
        output: Value,
    },
    /// Fail it (and so the run).
    Fail {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_as_text() {
        for s in [
            "queued",
            "running",
            "waiting",
            "succeeded",
            "failed",
            "cancelled",
        ] {
            assert_eq!(s.parse::<RunState>().unwrap().as_str(), s);
        }
        assert_eq!(
            "needs_decision".parse::<NodeState>().unwrap(),
            NodeState::NeedsDecision
        );
        assert!("nope".parse::<RunState>().is_err());
        assert_eq!("#42".parse::<RunId>().unwrap(), RunId(42));
        assert_eq!(RunId(7).to_string(), "#7");
    }
}

/// One line a node wrote, secrets already redacted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The run.
    pub run: RunId,
    /// The node id.
    pub node: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Position within the attempt's log, from 1.
    pub seq: u32,
    /// When it was written (Unix milliseconds).
    pub at_ms: i64,
    /// `stdout`, `stderr` or `sluice` (the daemon's own notes).
    pub stream: String,
    /// The text, without its newline.
    pub line: String,
}
