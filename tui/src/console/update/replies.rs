//! Reply decoding: each reply, read as its method's result, folded into the state.

use serde_json::Value;
use sluice_shared::method as m;
use sluice_shared::protocol::{RunDetail, RunsPage};
use sluice_shared::run::{NodeState, RunId};

use super::LOG_PAGE;
use super::dialogs::trigger_form;
use super::events::push_log;
use super::sync::{load_log, logs_request, open_run};
use super::{decode, detail_call, flash, synced};
use crate::console::app::{App, View};
use crate::console::logbuf::LogEntry;
use crate::console::msg::{CallError, Effect, Tag};

pub(super) fn reply(app: &mut App, tag: Tag, result: Result<Value, CallError>) -> Vec<Effect> {
    let value = match result {
        Ok(v) => v,
        Err(e) => return failed(app, tag, e),
    };
    match tag {
        Tag::Status => app.status = decode::<m::Status>(value).or(app.status.take()),
        Tag::Runs { append, generation } => {
            if generation != app.runs.generation {
                return Vec::new();
            }
            app.runs.loading = false;
            let Some(page) = decode::<m::RunsList>(value) else {
                return Vec::new();
            };
            merge_runs(app, page, append);
        }
        Tag::Detail(id) => {
            if let Some(run) = decode::<m::RunsGet>(value) {
                return detail(app, id, run);
            }
        }
        Tag::Logs {
            run,
            node,
            generation,
        } => return logs(app, run, &node, generation, value),
        Tag::Pipelines => {
            if let Some(rows) = decode::<m::PipelinesList>(value) {
                app.pipelines.rows = rows;
                app.pipelines.cursor.clamp(app.pipelines.rows.len());
            }
        }
        Tag::ConfigErrors => {
            if let Some(e) = decode::<m::ConfigErrorsList>(value) {
                app.pipelines.errors = e.diagnostics;
            }
        }
        Tag::TriggerForm(name) => trigger_form(app, name, &value),
        Tag::Approvals { pending } => {
            if let Some(rows) = decode::<m::ApprovalsList>(value) {
                if pending {
                    app.approvals.pending = rows;
                    app.approvals.loaded = true;
                } else {
                    app.approvals.history =
                        rows.into_iter().filter(|a| a.state != "pending").collect();
                }
                let len = app.approvals.rows().len();
                app.approvals.cursor.clamp(len);
                return approval_context(app);
            }
        }
        Tag::ApprovalContext(run) => {
            if app.approvals.selected().is_some_and(|a| a.run == run) {
                app.approvals.context = decode::<m::RunsGet>(value);
            }
        }
        Tag::Metrics => app.metrics = decode::<m::Metrics>(value).or(app.metrics.take()),
        Tag::Usage => app.usage = decode::<m::LimitsUsage>(value).or(app.usage.take()),
        Tag::Audit => {
            if let Some(rows) = decode::<m::AuditList>(value) {
                app.audit = rows;
                app.audit_cursor.clamp(app.audit.len());
            }
        }
        Tag::Action { what, open_new_run } => {
            flash(app, format!("{what}: done"), false);
            app.runs.dirty = true;
            app.approvals.dirty = true;
            app.pipelines.dirty = true;
            if let Some(d) = &mut app.detail {
                d.dirty = true;
            }
            if open_new_run && let Some(id) = value.get("run").and_then(Value::as_i64) {
                return open_run(app, RunId(id));
            }
        }
    }
    Vec::new()
}

/// A run's detail: the first time, the cursor lands on its first failed node.
fn detail(app: &mut App, id: RunId, run: RunDetail) -> Vec<Effect> {
    let Some(d) = app.detail.as_mut().filter(|d| d.id == id) else {
        return Vec::new();
    };
    if d.run.is_none() {
        // Land on what the operator most likely came for: the first failed node.
        d.nodes.selected = run
            .nodes
            .iter()
            .position(|n| n.state == NodeState::Failed)
            .or_else(|| run.nodes.iter().position(|n| !n.state.is_finished()))
            .unwrap_or(0);
    }
    d.nodes.clamp(run.nodes.len());
    d.run = Some(run);
    if d.log_node.as_deref() != d.selected_node() {
        return load_log(d);
    }
    Vec::new()
}

/// A page of a node's log: lines in, the next page asked for while there is one.
fn logs(app: &mut App, run: RunId, node: &str, generation: u64, value: Value) -> Vec<Effect> {
    let Some(d) = app.detail.as_mut().filter(|d| {
        d.id == run && d.log_generation == generation && d.log_node.as_deref() == Some(node)
    }) else {
        return Vec::new();
    };
    let Some(page) = decode::<m::LogsGet>(value) else {
        d.log_loading = false;
        return Vec::new();
    };
    let got = page.lines.len();
    for l in page.lines {
        push_log(
            d,
            LogEntry {
                attempt: l.attempt,
                seq: l.seq,
                at_ms: l.at_ms,
                stream: l.stream,
                line: l.line,
            },
        );
    }
    // `more` (protocol 1.2) ends a page early by size; an older daemon's full page may have a successor.
    if page.more || got as u32 >= LOG_PAGE {
        return vec![logs_request(run, node, generation, page.next)];
    }
    d.log_loading = false;
    for e in std::mem::take(&mut d.pending) {
        push_log(d, e);
    }
    Vec::new()
}

pub(super) fn failed(app: &mut App, tag: Tag, e: CallError) -> Vec<Effect> {
    match tag {
        Tag::Action { what, .. } => {
            // Never re-sent: the daemon may have applied it before the line broke.
            flash(app, format!("{what} failed: {}", e.message), true);
        }
        Tag::Runs { .. } => app.runs.loading = false,
        Tag::Logs { .. } => {
            if let Some(d) = &mut app.detail {
                d.log_loading = false;
            }
        }
        Tag::TriggerForm(name) => flash(app, format!("trigger {name}: {}", e.message), true),
        Tag::Detail(id) if e.code == Some(-32001) => {
            flash(app, e.message, true);
            // Nothing to show: go back to where the operator came from.
            if app
                .detail
                .as_ref()
                .is_some_and(|d| d.id == id && d.run.is_none())
            {
                app.detail = None;
                app.view = app.back.pop().unwrap_or(View::Runs);
            }
        }
        Tag::Usage if e.code == Some(-32601) => app.usage_unavailable = true,
        // Read calls fail quietly: the header shows the connection, the data stays marked stale.
        _ => {}
    }
    Vec::new()
}

pub(super) fn merge_runs(app: &mut App, page: RunsPage, append: bool) {
    let selected_id = app
        .runs
        .selected_id
        .or_else(|| app.visible_run(app.runs.cursor.selected).map(|r| r.id));
    let runs = &mut app.runs;
    if !append && std::mem::take(&mut runs.replace) {
        runs.rows = page.runs;
        runs.next = page.next;
    } else if append {
        let last = runs.rows.last().map(|r| r.id);
        runs.rows.extend(
            page.runs
                .into_iter()
                .filter(|r| last.is_none_or(|l| r.id < l)),
        );
        runs.next = page.next;
    } else {
        // Older pages already loaded stay only when the new first page reaches
        // them (overlaps); otherwise there may be a gap, so paging restarts there.
        let oldest = page.runs.last().map(|r| r.id);
        let overlaps = oldest.is_some_and(|o| runs.rows.iter().any(|r| r.id == o));
        let older: Vec<_> = match oldest {
            Some(o) if overlaps => runs.rows.drain(..).filter(|r| r.id < o).collect(),
            _ => Vec::new(),
        };
        if older.is_empty() {
            runs.next = page.next;
        }
        runs.rows = page.runs;
        runs.rows.extend(older);
    }
    app.refilter();
    let len = app.visible_count();
    // Keep the operator's row selected as new runs arrive above it.
    if let Some(id) = selected_id
        && let Some(i) = (0..len).find(|&i| app.visible_run(i).is_some_and(|r| r.id == id))
    {
        app.runs.cursor.selected = i;
    }
    app.runs.cursor.clamp(len);
    select_row(app);
}

/// Makes the run under the cursor the highlighted, targeted one.
pub(super) fn select_row(app: &mut App) {
    app.runs.selected_id = app.visible_run(app.runs.cursor.selected).map(|r| r.id);
}

pub(super) fn approval_context(app: &mut App) -> Vec<Effect> {
    let Some(run) = app.approvals.selected().map(|a| a.run) else {
        app.approvals.context = None;
        return Vec::new();
    };
    if app
        .approvals
        .context
        .as_ref()
        .is_some_and(|c| c.run.id == run)
    {
        return Vec::new();
    }
    if !synced(app) {
        return Vec::new();
    }
    vec![detail_call(Tag::ApprovalContext(run), run)]
}
