//! `update`: the only place state changes. Pure apart from the effects it
//! returns (calls to send, text to copy, quit), so it can be tested without a
//! terminal or a daemon. One module per idea: [`sync`] (connection, polls,
//! requests), [`replies`] (reply decoding), [`events`] (event folding),
//! [`keys`], [`dialogs`] and [`command`] (the `:` line).

mod command;
mod dialogs;
mod events;
mod keys;
mod replies;
mod sync;
#[cfg(test)]
mod tests;

use serde_json::Value;
use sluice_shared::method::{self as m, Method, notice};
use sluice_shared::protocol::{ApprovalsListParams, NoParams, RunRef};
use sluice_shared::run::RunId;

use crate::console::app::{App, Conn, Flash};
use crate::console::msg::{Effect, Msg, Tag};
use events::event;
use keys::{key, paste};
use replies::reply;
use sync::{conn, resync, tick};

/// Runs fetched per page.
pub const RUNS_PAGE: u32 = 200;
/// Log lines fetched per `logs.get`.
pub const LOG_PAGE: u32 = 10_000;
/// How often status and the current view are polled (ms).
const POLL_MS: i64 = 5_000;

/// Applies one message; returns what the run loop must do.
pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(ev) => key(app, ev),
        Msg::Paste(text) => {
            paste(app, &text);
            Vec::new()
        }
        Msg::Resize(w, h) => {
            app.size = (w, h);
            Vec::new()
        }
        Msg::Tick(now) => tick(app, now),
        Msg::Conn(ev) => conn(app, ev),
        Msg::Reply(tag, result) => reply(app, tag, result),
        Msg::Notice(n) => match n.method.as_str() {
            // Events were dropped for us: fetch what is on screen again, quietly.
            notice::LAGGED => resync(app),
            notice::EVENT => event(app, n.params),
            _ => Vec::new(),
        },
    }
}

pub(super) fn flash(app: &mut App, text: impl Into<String>, error: bool) {
    app.flash = Some(Flash {
        text: text.into(),
        error,
        until_ms: app.now_ms + if error { 8_000 } else { 4_000 },
    });
}

/// A call of method `M`; its reply comes back under `tag`.
pub(super) fn call<M: Method>(tag: Tag, params: M::Params) -> Effect {
    let c = m::Call::new::<M>(&params);
    Effect::Call {
        tag,
        method: c.method,
        params: c.params,
    }
}

/// The reply of method `M`, read; `None` when it does not read as `M`'s result.
pub(super) fn decode<M: Method>(v: Value) -> Option<M::Result> {
    serde_json::from_value(v).ok()
}

pub(super) fn status_call() -> Effect {
    call::<m::Status>(Tag::Status, NoParams)
}

pub(super) fn pipelines_calls() -> [Effect; 2] {
    [
        call::<m::PipelinesList>(Tag::Pipelines, NoParams),
        call::<m::ConfigErrorsList>(Tag::ConfigErrors, NoParams),
    ]
}

pub(super) fn approvals_call(pending: bool) -> Effect {
    call::<m::ApprovalsList>(
        Tag::Approvals { pending },
        ApprovalsListParams {
            pending: Some(pending),
        },
    )
}

pub(super) fn detail_call(tag: Tag, id: RunId) -> Effect {
    call::<m::RunsGet>(tag, RunRef { id })
}

pub(super) fn synced(app: &App) -> bool {
    matches!(app.conn, Conn::Connected { synced: true, .. })
}
