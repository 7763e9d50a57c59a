//! Messages into `update` and the effects it asks the run loop to carry out.

use ratatui::crossterm::event::KeyEvent;
use serde_json::Value;
use sluice_shared::protocol::{HelloResult, Notification};
use sluice_shared::run::RunId;

/// What a reply answers, so `update` knows where the result goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Tag {
    /// `status`.
    Status,
    /// `runs.list`; `append` for the next page, `generation` drops replies to an old filter.
    Runs {
        /// Next page (true) or the first page (false).
        append: bool,
        /// The filter generation it was asked for.
        generation: u64,
    },
    /// `runs.get` for the run detail.
    Detail(RunId),
    /// `logs.get` for a node.
    Logs {
        /// The run.
        run: RunId,
        /// The node.
        node: String,
        /// The log view generation it was asked for.
        generation: u64,
    },
    /// `pipelines.list`.
    Pipelines,
    /// `config.errors`.
    ConfigErrors,
    /// `pipelines.get` to prefill the trigger dialog.
    TriggerForm(String),
    /// `approvals.list`.
    Approvals {
        /// Pending (true) or all (false).
        pending: bool,
    },
    /// `runs.get` for the approval detail.
    ApprovalContext(RunId),
    /// `metrics`.
    Metrics,
    /// `limits.usage`.
    Usage,
    /// `audit.list`.
    Audit,
    /// A state-changing call; the text says what for the status line.
    Action {
        /// "retry #12", "approve #3", ...
        what: String,
        /// Open this run when the reply carries one (retry, trigger).
        open_new_run: bool,
    },
}

/// A failed call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallError {
    /// JSON-RPC code, when the daemon answered.
    pub code: Option<i64>,
    /// What went wrong.
    pub message: String,
}

/// The connection's life, as the socket task reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum ConnEvent {
    /// Trying to connect.
    Connecting,
    /// `hello` done.
    Connected(HelloResult),
    /// Subscribed to the event stream: state-changing keys may work again.
    Synced,
    /// Lost (or never had) the connection; the next try is at `retry_at_ms`.
    Disconnected {
        /// Why.
        error: String,
        /// When the next attempt starts (ms since epoch).
        retry_at_ms: i64,
    },
}

/// Input to `update`.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// Pasted text (bracketed paste), for prompts.
    Paste(String),
    /// The terminal changed size.
    Resize(u16, u16),
    /// Once a second, and when the clock matters: the current time (ms).
    Tick(i64),
    /// Connection state.
    Conn(ConnEvent),
    /// A reply.
    Reply(Tag, Result<Value, CallError>),
    /// A notification (event, lagged).
    Notice(Notification),
}

/// What `update` asks the run loop to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a request.
    Call {
        /// Where the reply goes.
        tag: Tag,
        /// Method.
        method: &'static str,
        /// Params.
        params: Value,
    },
    /// Put text on the clipboard with OSC 52.
    Copy(String),
    /// Leave the console.
    Quit,
}
