//! Event folding: events of the subscription applied to what is on screen,
//! and what must be fetched again marked dirty.

use serde_json::Value;
use sluice_shared::event::Event;
use sluice_shared::protocol::{AttemptInfo, EventNotice};
use sluice_shared::run::{AttemptState, NodeState, RunId, RunState};

use super::sync::resync;
use crate::console::app::{App, DetailState};
use crate::console::logbuf::LogEntry;
use crate::console::msg::Effect;

pub(super) fn push_log(d: &mut DetailState, e: LogEntry) {
    let full = d.log.len() == d.log.capacity();
    if d.log.push(e) {
        if d.follow {
            d.log_cursor = d.log.len() - 1;
        } else {
            if full {
                // The oldest line fell off: the selected line moved up by one.
                d.log_cursor = d.log_cursor.saturating_sub(1);
            }
            d.unseen += 1;
        }
    }
}

pub(super) fn event(app: &mut App, params: Value) -> Vec<Effect> {
    let seq = params.get("seq").and_then(Value::as_u64);
    let mut fx = Vec::new();
    if let Some(seq) = seq {
        if let Some(last) = app.last_seq
            && seq > last + 1
        {
            fx.extend(resync(app));
        }
        app.last_seq = Some(seq);
    }
    let notice = match serde_json::from_value::<EventNotice>(params.clone()) {
        Ok(n) => n,
        Err(_) => {
            // An event this console does not know (newer daemon): approvals are the
            // likely ones, so look again; anything else is ignored.
            let kind = params
                .pointer("/event/type")
                .and_then(Value::as_str)
                .unwrap_or("");
            if kind.contains("approval") {
                app.approvals.dirty = true;
            }
            return fx;
        }
    };
    match notice.event {
        Event::RunCreated { run, pipeline } => {
            app.run_pipelines.insert(run, pipeline);
            app.runs.dirty = true;
            // A cron fire moves the pipeline's next fire and its last run.
            app.pipelines.dirty = true;
        }
        Event::RunState { run, state, error } => run_state(app, run, state, error),
        Event::NodeState {
            run,
            node,
            state,
            attempt,
            error,
        } => node_state(app, run, &node, state, attempt, error),
        Event::Log {
            run,
            node,
            attempt,
            seq,
            stream,
            line,
        } => {
            if let Some(d) = &mut app.detail
                && d.id == run
                && d.log_node.as_deref() == Some(&node)
            {
                let e = LogEntry {
                    attempt,
                    seq,
                    at_ms: app.now_ms,
                    stream,
                    line,
                };
                if d.log_loading {
                    d.pending.push(e);
                } else {
                    push_log(d, e);
                }
            }
        }
        Event::ApprovalRequested { run, pipeline, .. } => {
            app.run_pipelines.insert(run, pipeline);
            app.approvals.dirty = true;
        }
        Event::ApprovalDecided { run, .. } | Event::ApprovalExpired { run, .. } => {
            app.approvals.dirty = true;
            if let Some(d) = &mut app.detail
                && d.id == run
            {
                d.dirty = true;
            }
        }
        Event::PipelineChanged { .. } | Event::ConfigError { .. } => app.pipelines.dirty = true,
        Event::Other { what, .. } => {
            if what.contains("approval") {
                app.approvals.dirty = true;
            }
        }
    }
    fx
}

/// A run changed state: the row and the detail follow at once; lists refetch.
fn run_state(app: &mut App, run: RunId, state: RunState, error: Option<String>) {
    let now = app.now_ms;
    if let Some(r) = app.runs.rows.iter_mut().find(|r| r.id == run) {
        r.state = state;
        if state == RunState::Running && r.started_at.is_none() {
            r.started_at = Some(now);
        }
        if state.is_finished() && r.finished_at.is_none() {
            r.finished_at = Some(now);
        }
        if error.is_some() {
            r.error = error.clone();
        }
    }
    app.runs.dirty = true;
    if let Some(d) = &mut app.detail
        && d.id == run
    {
        if let Some(r) = &mut d.run {
            r.run.state = state;
            if error.is_some() {
                r.run.error = error;
            }
        }
        d.dirty = true;
    }
    if state == RunState::Waiting || state.is_finished() {
        app.approvals.dirty = true;
    }
    // The pipelines view shows each pipeline's last result.
    if state.is_finished() {
        app.pipelines.dirty = true;
    }
}

/// A node changed state: the open detail follows (a new attempt starts a row).
fn node_state(
    app: &mut App,
    run: RunId,
    node: &str,
    state: NodeState,
    attempt: u32,
    error: Option<String>,
) {
    let now = app.now_ms;
    if let Some(d) = &mut app.detail
        && d.id == run
    {
        if let Some(n) = d
            .run
            .as_mut()
            .and_then(|r| r.nodes.iter_mut().find(|n| n.id == node))
        {
            n.state = state;
            if error.is_some() {
                n.error = error;
            }
            if state == NodeState::Running && (n.attempts.len() as u32) < attempt {
                n.attempts.push(AttemptInfo {
                    attempt,
                    state: AttemptState::Running,
                    started_at: now,
                    finished_at: None,
                    error: None,
                });
                n.started_at.get_or_insert(now);
            }
            if state.is_finished() {
                n.finished_at.get_or_insert(now);
            }
        }
        d.dirty = true;
    }
    if state == NodeState::Waiting {
        app.approvals.dirty = true;
    }
}
