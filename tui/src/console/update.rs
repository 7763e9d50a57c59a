//! `update`: the only place state changes. Pure apart from the effects it
//! returns (calls to send, text to copy, quit), so it can be tested without a
//! terminal or a daemon.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;
use sluice_shared::event::Event;
use sluice_shared::method::{self as m, Method, notice};
use sluice_shared::model::InputType;
use sluice_shared::protocol::{
    ApprovalsListParams, AttemptInfo, AuditListParams, DecideParams, EventNotice, LogsParams,
    NoParams, PipelineRef, RetryParams, RunRef, RunsListParams, RunsPage, TriggerParams,
};
use sluice_shared::run::RetryMode;
use sluice_shared::run::{AttemptState, NodeState, RunId, RunState};

use super::app::{
    App, Conn, DetailFocus, DetailState, Dialog, DialogFocus, Flash, Overlay, PendingAction,
    Prompt, PromptKind, View, server_filter,
};
use super::inputs;
use super::keymap::{Action, Key, Scope};
use super::lineedit::{Edited, LineEdit};
use super::logbuf::LogEntry;
use super::msg::{CallError, ConnEvent, Effect, Msg, Tag};

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

fn flash(app: &mut App, text: impl Into<String>, error: bool) {
    app.flash = Some(Flash {
        text: text.into(),
        error,
        until_ms: app.now_ms + if error { 8_000 } else { 4_000 },
    });
}

/// A call of method `M`; its reply comes back under `tag`.
fn call<M: Method>(tag: Tag, params: M::Params) -> Effect {
    let c = m::Call::new::<M>(&params);
    Effect::Call {
        tag,
        method: c.method,
        params: c.params,
    }
}

/// The reply of method `M`, read; `None` when it does not read as `M`'s result.
fn decode<M: Method>(v: Value) -> Option<M::Result> {
    serde_json::from_value(v).ok()
}

fn status_call() -> Effect {
    call::<m::Status>(Tag::Status, NoParams)
}

fn pipelines_calls() -> [Effect; 2] {
    [
        call::<m::PipelinesList>(Tag::Pipelines, NoParams),
        call::<m::ConfigErrorsList>(Tag::ConfigErrors, NoParams),
    ]
}

fn approvals_call(pending: bool) -> Effect {
    call::<m::ApprovalsList>(
        Tag::Approvals { pending },
        ApprovalsListParams {
            pending: Some(pending),
        },
    )
}

fn detail_call(tag: Tag, id: RunId) -> Effect {
    call::<m::RunsGet>(tag, RunRef { id })
}

fn synced(app: &App) -> bool {
    matches!(app.conn, Conn::Connected { synced: true, .. })
}

// ---------------------------------------------------------------- connection

fn conn(app: &mut App, ev: ConnEvent) -> Vec<Effect> {
    match ev {
        ConnEvent::Connecting => {
            // Keep showing how long we have been down while the next attempt runs.
            if !matches!(app.conn, Conn::Disconnected { .. }) {
                app.conn = Conn::Connecting;
            }
            Vec::new()
        }
        ConnEvent::Connected(hello) => {
            app.conn = Conn::Connected {
                hello,
                synced: false,
            };
            Vec::new()
        }
        ConnEvent::Synced => {
            if let Conn::Connected { synced, .. } = &mut app.conn {
                *synced = true;
                app.connected_once = true;
            }
            // Rows from before the disconnect may be gone or out of order: the
            // first page now replaces them rather than being merged with them.
            app.runs.replace = true;
            app.last_seq = None;
            resync(app)
        }
        ConnEvent::Disconnected { error, retry_at_ms } => {
            let since_ms = match &app.conn {
                Conn::Disconnected { since_ms, .. } => *since_ms,
                _ => app.now_ms,
            };
            app.conn = Conn::Disconnected {
                since_ms,
                retry_at_ms,
                error,
            };
            // Only data fetched before the drop is stale; an empty screen is just empty.
            app.stale = app.status.is_some() || !app.runs.rows.is_empty();
            app.runs.loading = false;
            if let Some(d) = &mut app.detail {
                d.log_loading = false;
            }
            Vec::new()
        }
    }
}

/// Everything on screen, fetched again (after a reconnect or a lag).
fn resync(app: &mut App) -> Vec<Effect> {
    if !synced(app) {
        return Vec::new();
    }
    app.stale = false;
    app.polled_ms = app.now_ms;
    let [pipelines, errors] = pipelines_calls();
    let mut fx = vec![
        status_call(),
        runs_request(app, false),
        pipelines,
        errors,
        approvals_call(true),
    ];
    if app.approvals.show_history {
        fx.push(approvals_call(false));
    }
    if let Some(d) = &mut app.detail {
        d.dirty = false;
        fx.push(detail_call(Tag::Detail(d.id), d.id));
        // Lines written while we were away come from logs.get; the buffer drops repeats.
        if let Some(node) = d.log_node.clone() {
            d.log_loading = true;
            let after = 0;
            fx.push(logs_request(d.id, &node, d.log_generation, after));
        }
    }
    fx.extend(view_poll(app));
    fx
}

fn view_poll(app: &App) -> Vec<Effect> {
    match app.view {
        // Next fire times pass and files get fixed without an event for this
        // console to see (a skipped fire, an edit during a disconnect): look again.
        View::Pipelines => Vec::from(pipelines_calls()),
        View::Metrics => vec![
            call::<m::Metrics>(Tag::Metrics, NoParams),
            call::<m::LimitsUsage>(Tag::Usage, Default::default()),
        ],
        View::Audit => vec![call::<m::AuditList>(
            Tag::Audit,
            AuditListParams {
                before: None,
                limit: Some(500),
            },
        )],
        _ => Vec::new(),
    }
}

fn tick(app: &mut App, now: i64) -> Vec<Effect> {
    app.now_ms = now;
    if app.flash.as_ref().is_some_and(|f| f.until_ms <= now) {
        app.flash = None;
    }
    if !synced(app) {
        return Vec::new();
    }
    let mut fx = Vec::new();
    if app.runs.dirty && !app.runs.loading {
        app.runs.dirty = false;
        fx.push(runs_request(app, false));
    }
    if let Some(d) = &mut app.detail
        && d.dirty
    {
        d.dirty = false;
        fx.push(detail_call(Tag::Detail(d.id), d.id));
    }
    if app.approvals.dirty {
        app.approvals.dirty = false;
        fx.push(approvals_call(true));
        if app.approvals.show_history {
            fx.push(approvals_call(false));
        }
    }
    if app.pipelines.dirty {
        app.pipelines.dirty = false;
        fx.extend(pipelines_calls());
    }
    if now - app.polled_ms >= POLL_MS {
        app.polled_ms = now;
        fx.push(status_call());
        fx.extend(view_poll(app));
    }
    fx
}

// ---------------------------------------------------------------- requests

fn runs_request(app: &mut App, append: bool) -> Effect {
    let (pipeline, states) = server_filter(&app.runs.filter);
    let params = RunsListParams {
        pipeline,
        states,
        before: if append { app.runs.next } else { None },
        limit: Some(RUNS_PAGE),
        ..Default::default()
    };
    app.runs.loading = true;
    call::<m::RunsList>(
        Tag::Runs {
            append,
            generation: app.runs.generation,
        },
        params,
    )
}

fn logs_request(run: RunId, node: &str, generation: u64, after: u64) -> Effect {
    call::<m::LogsGet>(
        Tag::Logs {
            run,
            node: node.to_string(),
            generation,
        },
        LogsParams {
            run,
            node: Some(node.to_string()),
            attempt: None,
            after: Some(after),
            limit: Some(LOG_PAGE),
        },
    )
}

fn open_run(app: &mut App, id: RunId) -> Vec<Effect> {
    if app.view != View::Detail {
        app.back.push(app.view);
    }
    app.view = View::Detail;
    app.detail = Some(DetailState::new(id, app.opts.log_cap));
    vec![detail_call(Tag::Detail(id), id)]
}

fn load_log(d: &mut DetailState) -> Vec<Effect> {
    let Some(node) = d.selected_node().map(str::to_string) else {
        return Vec::new();
    };
    d.log = super::logbuf::LogBuf::with_capacity(d.log.capacity());
    d.log_generation += 1;
    d.log_node = Some(node.clone());
    d.log_loading = true;
    d.pending.clear();
    d.log_cursor = 0;
    d.follow = true;
    d.unseen = 0;
    d.hscroll = 0;
    vec![logs_request(d.id, &node, d.log_generation, 0)]
}

fn switch_view(app: &mut App, view: View) -> Vec<Effect> {
    app.back.clear();
    app.view = view;
    // A message about the view left behind means nothing in the next one.
    app.flash = None;
    let mut fx = Vec::new();
    if synced(app) {
        match view {
            View::Approvals => {
                fx.push(approvals_call(true));
                if app.approvals.show_history {
                    fx.push(approvals_call(false));
                }
            }
            View::Pipelines => {
                fx.extend(pipelines_calls());
            }
            _ => fx.extend(view_poll(app)),
        }
    }
    fx
}

// ---------------------------------------------------------------- replies

fn reply(app: &mut App, tag: Tag, result: Result<Value, CallError>) -> Vec<Effect> {
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
            let Some(run) = decode::<m::RunsGet>(value) else {
                return Vec::new();
            };
            let Some(d) = app.detail.as_mut().filter(|d| d.id == id) else {
                return Vec::new();
            };
            let first = d.run.is_none();
            if first {
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
        }
        Tag::Logs {
            run,
            node,
            generation,
        } => {
            let Some(d) = app.detail.as_mut().filter(|d| {
                d.id == run
                    && d.log_generation == generation
                    && d.log_node.as_deref() == Some(&node)
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
                return vec![logs_request(run, &node, generation, page.next)];
            }
            d.log_loading = false;
            for e in std::mem::take(&mut d.pending) {
                push_log(d, e);
            }
        }
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
        Tag::TriggerForm(name) => {
            // Only the definition matters here: read it even when the rest of
            // the reply is of a newer shape than this console knows.
            let declared = value.get("definition").and_then(inputs::declared);
            let text = declared
                .as_deref()
                .map(inputs::form_text)
                .unwrap_or_default();
            if let Some(reason) = app.disabled_reason(Action::Trigger) {
                flash(app, format!("trigger: {reason}"), true);
                return Vec::new();
            }
            let key = idempotency_key(app);
            let mut body = vec![
                r#"Inputs as name=value, separated by spaces. Quote a value as in a shell: 'you & me' (literal) or "say \"hi\"" (\" escapes)."#
                    .to_string(),
            ];
            if let Some(types) = declared.as_deref().and_then(input_types) {
                body.push(types);
            }
            open_dialog(
                app,
                Dialog {
                    title: format!("Trigger {name} now?"),
                    body,
                    confirm: "Trigger".into(),
                    dismiss: "Cancel".into(),
                    field: Some(("inputs".into(), LineEdit::new(text))),
                    required: false,
                    focus: DialogFocus::Field,
                    action: PendingAction::Trigger {
                        name,
                        inputs: declared,
                    },
                    idempotency_key: key,
                    error: None,
                },
            );
        }
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

fn failed(app: &mut App, tag: Tag, e: CallError) -> Vec<Effect> {
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

fn merge_runs(app: &mut App, page: RunsPage, append: bool) {
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
fn select_row(app: &mut App) {
    app.runs.selected_id = app.visible_run(app.runs.cursor.selected).map(|r| r.id);
}

/// "Types: who string, n integer, cfg object (JSON)." for the trigger form
/// (each value is read as its input's type), or None without inputs.
fn input_types(declared: &[inputs::DeclaredInput]) -> Option<String> {
    if declared.is_empty() {
        return None;
    }
    let types: Vec<String> = declared
        .iter()
        .map(|i| {
            let ty = match i.ty {
                Some(InputType::Object) => "object (JSON)",
                Some(InputType::Array) => "array (JSON)",
                Some(t) => t.name(),
                None => "any",
            };
            format!("{} {ty}", i.name)
        })
        .collect();
    Some(format!("Types: {}.", types.join(", ")))
}

fn approval_context(app: &mut App) -> Vec<Effect> {
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

// ---------------------------------------------------------------- events

fn push_log(d: &mut DetailState, e: LogEntry) {
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

fn event(app: &mut App, params: Value) -> Vec<Effect> {
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
        Event::RunState { run, state, error } => {
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
        Event::NodeState {
            run,
            node,
            state,
            attempt,
            error,
        } => {
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

// ---------------------------------------------------------------- keys

fn page(app: &App) -> isize {
    (app.size.1 as isize - 8).max(1)
}

fn key(app: &mut App, ev: KeyEvent) -> Vec<Effect> {
    if ev.kind == KeyEventKind::Release {
        return Vec::new();
    }
    // Nothing is bound to Alt: an Alt chord is almost always Esc followed
    // quickly by a key (over SSH or tmux the two arrive together), so treat
    // it as exactly that — except the readline word keys (Alt-B, Alt-F,
    // Alt-D) while a text field has the focus, which only move or edit text.
    if ev.modifiers.contains(KeyModifiers::ALT)
        && matches!(ev.code, KeyCode::Char(_))
        && !(editing(app) && matches!(ev.code, KeyCode::Char('b' | 'f' | 'd' | 'B' | 'F' | 'D')))
    {
        let mut fx = key(app, KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        let plain = KeyEvent::new(ev.code, ev.modifiers - KeyModifiers::ALT);
        fx.extend(key(app, plain));
        return fx;
    }
    if let Some(overlay) = app.overlay.take() {
        return overlay_key(app, overlay, ev);
    }
    let Some(k) = Key::from_event(&ev) else {
        return Vec::new();
    };
    let Some(action) = app.keymap.lookup(app.view.scope(), k) else {
        return Vec::new();
    };
    act(app, action, k)
}

/// Whether a text field has the focus (the command line, a prompt, a dialog's field).
fn editing(app: &App) -> bool {
    match &app.overlay {
        Some(Overlay::Command(_) | Overlay::Prompt(_)) => true,
        Some(Overlay::Dialog(d)) => d.field.is_some() && d.focus == DialogFocus::Field,
        _ => false,
    }
}

fn act(app: &mut App, action: Action, k: Key) -> Vec<Effect> {
    if action.changes_state()
        && let Some(reason) = app.disabled_reason(action)
    {
        flash(
            app,
            format!("{}: {reason}", action.name().replace('_', " ")),
            true,
        );
        return Vec::new();
    }
    match action {
        Action::Quit => {
            app.quit = true;
            vec![Effect::Quit]
        }
        Action::Back => {
            if app.view == View::Runs && !app.runs.filter.is_empty() && app.back.is_empty() {
                return set_filter(app, String::new());
            }
            if let Some(v) = app.back.pop() {
                app.view = v;
                if v != View::Detail {
                    app.detail = None;
                }
                Vec::new()
            } else if k.code == KeyCode::Esc {
                Vec::new()
            } else {
                app.quit = true;
                vec![Effect::Quit]
            }
        }
        Action::Help => {
            app.flash = None;
            app.overlay = Some(Overlay::Help(0));
            Vec::new()
        }
        Action::Command => {
            app.overlay = Some(Overlay::Command(LineEdit::default()));
            Vec::new()
        }
        Action::ViewRuns => switch_view(app, View::Runs),
        Action::ViewPipelines => switch_view(app, View::Pipelines),
        Action::ViewApprovals => switch_view(app, View::Approvals),
        Action::ViewMetrics => switch_view(app, View::Metrics),
        Action::ViewAudit => switch_view(app, View::Audit),
        Action::Up => move_by(app, -1),
        Action::Down => move_by(app, 1),
        Action::PageUp => move_by(app, -page(app)),
        Action::PageDown => move_by(app, page(app)),
        Action::Top => move_by(app, isize::MIN / 2),
        Action::Bottom => move_by(app, isize::MAX / 2),
        Action::Refresh => resync(app),
        Action::Open => match app.view {
            View::Runs => match app.selected_run() {
                Some(r) => {
                    let id = r.id;
                    open_run(app, id)
                }
                None => Vec::new(),
            },
            View::Approvals => match app.approvals.selected() {
                Some(a) => {
                    let id = a.run;
                    open_run(app, id)
                }
                None => Vec::new(),
            },
            View::Pipelines => match app.pipelines.rows.get(app.pipelines.cursor.selected) {
                Some(p) => {
                    let filter = format!("p:{}", p.name);
                    app.back.clear();
                    app.back.push(View::Pipelines);
                    app.view = View::Runs;
                    set_filter(app, filter)
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        },
        Action::Filter => {
            app.overlay = Some(Overlay::Prompt(Prompt {
                kind: PromptKind::Filter,
                text: LineEdit::new(app.runs.filter.clone()),
            }));
            Vec::new()
        }
        Action::Retry | Action::RetryAll | Action::Cancel => run_action(app, action),
        Action::FocusNext => {
            if let Some(d) = &mut app.detail {
                d.focus = match d.focus {
                    DetailFocus::Nodes => DetailFocus::Log,
                    DetailFocus::Log => DetailFocus::Nodes,
                };
            }
            Vec::new()
        }
        Action::Left | Action::Right => {
            let half = (app.size.0 as usize / 2).max(1);
            if let Some(d) = &mut app.detail {
                d.hscroll = if action == Action::Left {
                    d.hscroll.saturating_sub(half)
                } else {
                    d.hscroll + half
                };
            }
            Vec::new()
        }
        Action::Follow => {
            if let Some(d) = &mut app.detail {
                d.follow = !d.follow;
                if d.follow {
                    d.log_cursor = d.log.len().saturating_sub(1);
                    d.unseen = 0;
                }
            }
            Vec::new()
        }
        Action::Search => {
            app.overlay = Some(Overlay::Prompt(Prompt {
                kind: PromptKind::Search,
                text: LineEdit::new(
                    app.detail
                        .as_ref()
                        .and_then(|d| d.search.clone())
                        .unwrap_or_default(),
                ),
            }));
            Vec::new()
        }
        Action::NextMatch | Action::PrevMatch => {
            search(app, action == Action::NextMatch, true);
            Vec::new()
        }
        Action::Wrap => {
            if let Some(d) = &mut app.detail {
                d.wrap = !d.wrap;
            }
            Vec::new()
        }
        Action::Timestamps => {
            if let Some(d) = &mut app.detail {
                d.timestamps = !d.timestamps;
            }
            Vec::new()
        }
        Action::Copy => copy(app),
        Action::Approve | Action::Reject => {
            if app.approvals.show_history {
                flash(
                    app,
                    "only pending approvals can be decided (Tab: pending)",
                    true,
                );
                return Vec::new();
            }
            let Some(a) = app.approvals.selected().cloned() else {
                flash(app, "no pending approval selected", true);
                return Vec::new();
            };
            let approve = action == Action::Approve;
            let key = idempotency_key(app);
            open_dialog(
                app,
                Dialog {
                    title: format!(
                        "{} approval #{} (run {} node {})?",
                        if approve { "Approve" } else { "Reject" },
                        a.id,
                        a.run,
                        a.node
                    ),
                    body: a.message.iter().cloned().collect(),
                    confirm: if approve { "Approve" } else { "Reject" }.into(),
                    dismiss: "Cancel".into(),
                    field: Some((
                        if approve {
                            "reason (optional)"
                        } else {
                            "reason (required)"
                        }
                        .into(),
                        LineEdit::default(),
                    )),
                    required: !approve,
                    focus: DialogFocus::Field,
                    action: PendingAction::Decide { id: a.id, approve },
                    idempotency_key: key,
                    error: None,
                },
            );
            Vec::new()
        }
        Action::HistoryTab => {
            app.approvals.show_history = !app.approvals.show_history;
            app.approvals.cursor = Default::default();
            app.approvals.context = None;
            let mut fx = Vec::new();
            if app.approvals.show_history && synced(app) {
                fx.push(approvals_call(false));
            }
            fx.extend(approval_context(app));
            fx
        }
        Action::Trigger => match app.pipelines.rows.get(app.pipelines.cursor.selected) {
            Some(p) => {
                let name = p.name.clone();
                vec![call::<m::PipelinesGet>(
                    Tag::TriggerForm(name.clone()),
                    PipelineRef { name },
                )]
            }
            None => Vec::new(),
        },
        Action::Enable | Action::Disable => {
            let Some(p) = app.pipelines.rows.get(app.pipelines.cursor.selected) else {
                return Vec::new();
            };
            let enabled = action == Action::Enable;
            let name = p.name.clone();
            let key = idempotency_key(app);
            open_dialog(
                app,
                Dialog {
                    title: format!(
                        "{} pipeline {name}?",
                        if enabled { "Enable" } else { "Disable" }
                    ),
                    body: vec![if enabled {
                        "Its triggers may start runs again.".into()
                    } else {
                        "Cron, webhooks and manual triggers stop starting runs; runs in flight continue."
                        .into()
                    }],
                    confirm: if enabled { "Enable" } else { "Disable" }.into(),
                    dismiss: "Cancel".into(),
                    field: None,
                    required: false,
                    focus: DialogFocus::Cancel,
                    action: PendingAction::SetEnabled { name, enabled },
                    idempotency_key: key,
                    error: None,
                },
            );
            Vec::new()
        }
    }
}

/// Opens a dialog; whatever the footer said before is about something else.
fn open_dialog(app: &mut App, d: Dialog) {
    app.flash = None;
    app.overlay = Some(Overlay::Dialog(Box::new(d)));
}

fn idempotency_key(app: &mut App) -> String {
    app.action_counter += 1;
    format!(
        "sluice-console-{}-{}-{}",
        std::process::id(),
        app.now_ms,
        app.action_counter
    )
}

fn run_action(app: &mut App, action: Action) -> Vec<Effect> {
    let target = match app.view {
        View::Detail => app
            .detail
            .as_ref()
            .map(|d| (d.id, d.run.as_ref().map(|r| r.run.state))),
        // The highlighted run, by id: never whatever index the cursor holds.
        View::Runs => app.selected_run().map(|r| (r.id, Some(r.state))),
        _ => None,
    };
    let Some((run, state)) = target else {
        return Vec::new();
    };
    let finished = state.is_some_and(RunState::is_finished);
    if action == Action::Retry && state == Some(RunState::Succeeded) {
        // Nothing failed: a failed-only retry has nothing to run (the daemon refuses it).
        let all = app
            .keymap
            .key_of(app.view.scope(), Action::RetryAll)
            .map(|k| k.label(app.opts.ascii))
            .unwrap_or_else(|| "R".into());
        flash(
            app,
            format!("run {run} succeeded: nothing failed to retry; {all} retries all nodes"),
            true,
        );
        return Vec::new();
    }
    let key = idempotency_key(app);
    let dialog = match action {
        Action::Cancel => {
            if finished {
                flash(app, format!("run {run} has already finished"), true);
                return Vec::new();
            }
            Dialog {
                title: format!("Cancel run {run}?"),
                body: vec!["Running nodes are stopped; the rest are marked cancelled.".into()],
                confirm: "Cancel run".into(),
                dismiss: "Keep running".into(),
                field: None,
                required: false,
                focus: DialogFocus::Cancel,
                action: PendingAction::Cancel(run),
                idempotency_key: key,
                error: None,
            }
        }
        _ => {
            if !finished {
                flash(
                    app,
                    format!("run {run} has not finished; only finished runs can be retried"),
                    true,
                );
                return Vec::new();
            }
            let all = action == Action::RetryAll;
            Dialog {
                title: format!("Retry run {run}{}?", if all { " (all nodes)" } else { "" }),
                body: vec![if all {
                    "A new run executes every node again.".into()
                } else {
                    "A new run reuses what succeeded and runs the failed nodes and what follows."
                        .into()
                }],
                confirm: "Retry".into(),
                dismiss: "Cancel".into(),
                field: None,
                required: false,
                focus: DialogFocus::Cancel,
                action: PendingAction::Retry { run, all },
                idempotency_key: key,
                error: None,
            }
        }
    };
    open_dialog(app, dialog);
    Vec::new()
}

fn copy(app: &mut App) -> Vec<Effect> {
    let Some(d) = &app.detail else {
        return Vec::new();
    };
    let text = match d.focus {
        DetailFocus::Log => d.log.get(d.log_cursor).map(|e| e.line.clone()),
        DetailFocus::Nodes => d
            .run
            .as_ref()
            .and_then(|r| r.nodes.get(d.nodes.selected))
            .and_then(|n| {
                n.output
                    .as_ref()
                    .map(|o| serde_json::to_string_pretty(o).unwrap_or_default())
                    .or_else(|| n.error.clone())
            }),
    };
    match text {
        Some(t) => {
            flash(app, format!("copied {} bytes (OSC 52)", t.len()), false);
            vec![Effect::Copy(t)]
        }
        None => {
            flash(app, "nothing to copy here", true);
            Vec::new()
        }
    }
}

fn search(app: &mut App, forward: bool, step: bool) {
    let Some(d) = &mut app.detail else {
        return;
    };
    let Some(needle) = d.search.clone() else {
        flash(app, "no search yet: press /", true);
        return;
    };
    let from = if !step {
        d.log_cursor
    } else if forward {
        d.log_cursor + 1
    } else {
        (d.log_cursor + d.log.len()).saturating_sub(1)
    };
    match d.log.find(&needle, from, forward) {
        Some(i) => {
            d.log_cursor = i;
            d.follow = false;
            d.focus = DetailFocus::Log;
        }
        None => flash(app, format!("'{needle}' not found"), true),
    }
}

fn move_by(app: &mut App, delta: isize) -> Vec<Effect> {
    match app.view {
        View::Runs => {
            let len = app.visible_count();
            app.runs.cursor.step(delta, len);
            select_row(app);
            // Keyset paging: fetch the next page before the operator reaches the end.
            if app.runs.cursor.selected + 50 >= len
                && app.runs.next.is_some()
                && !app.runs.loading
                && synced(app)
            {
                return vec![runs_request(app, true)];
            }
            Vec::new()
        }
        View::Detail => {
            let Some(d) = &mut app.detail else {
                return Vec::new();
            };
            match d.focus {
                DetailFocus::Nodes => {
                    let len = d.run.as_ref().map_or(0, |r| r.nodes.len());
                    let before = d.nodes.selected;
                    d.nodes.step(delta, len);
                    if d.nodes.selected != before {
                        return load_log(d);
                    }
                }
                DetailFocus::Log => {
                    let len = d.log.len();
                    let mut c = super::app::Cursor {
                        selected: d.log_cursor,
                        offset: 0,
                    };
                    c.step(delta, len);
                    d.log_cursor = c.selected;
                    d.follow = delta > 0 && len > 0 && d.log_cursor == len - 1;
                    if d.follow {
                        d.unseen = 0;
                    }
                }
            }
            Vec::new()
        }
        View::Approvals => {
            let len = app.approvals.rows().len();
            app.approvals.cursor.step(delta, len);
            approval_context(app)
        }
        View::Pipelines => {
            let len = app.pipelines.rows.len();
            app.pipelines.cursor.step(delta, len);
            Vec::new()
        }
        View::Audit => {
            let len = app.audit.len();
            app.audit_cursor.step(delta, len);
            Vec::new()
        }
        View::Metrics => Vec::new(),
    }
}

fn set_filter(app: &mut App, filter: String) -> Vec<Effect> {
    app.runs.filter = filter;
    app.runs.generation += 1;
    app.runs.rows.clear();
    app.runs.matching.clear();
    app.runs.next = None;
    app.runs.cursor = Default::default();
    app.runs.selected_id = None;
    if synced(app) {
        vec![runs_request(app, false)]
    } else {
        app.runs.loading = false;
        Vec::new()
    }
}

fn paste(app: &mut App, text: &str) {
    // Control characters are dropped by the editor: a pasted newline never submits.
    match &mut app.overlay {
        Some(Overlay::Command(s)) => s.insert_str(text),
        Some(Overlay::Prompt(p)) => p.text.insert_str(text),
        Some(Overlay::Dialog(d)) if d.field.is_some() => {
            d.focus = DialogFocus::Field;
            d.error = None;
            if let Some((_, v)) = &mut d.field {
                v.insert_str(text);
            }
        }
        _ => {}
    }
}

fn overlay_key(app: &mut App, overlay: Overlay, ev: KeyEvent) -> Vec<Effect> {
    let ctrl_c = ev.code == KeyCode::Char('c') && ev.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl_c {
        // Ctrl-C closes a modal rather than quitting from under it.
        return Vec::new();
    }
    match overlay {
        Overlay::Help(scroll) => {
            // The help scrolls with the same keys as any list (as it lists them);
            // anything else closes it.
            let max = help_max_scroll(app);
            let half = page(app) as usize;
            let action = Key::from_event(&ev).and_then(|k| app.keymap.lookup(Scope::Global, k));
            let next = match (action, ev.code) {
                (Some(Action::Down), _) => Some(scroll + 1),
                (Some(Action::Up), _) => Some(scroll.saturating_sub(1)),
                (Some(Action::PageDown), _) | (_, KeyCode::Char(' ')) => Some(scroll + half),
                (Some(Action::PageUp), _) => Some(scroll.saturating_sub(half)),
                (Some(Action::Top), _) => Some(0),
                (Some(Action::Bottom), _) => Some(max),
                _ => None,
            };
            if let Some(s) = next {
                app.overlay = Some(Overlay::Help(s.min(max)));
            }
            Vec::new()
        }
        Overlay::Command(mut text) => match ev.code {
            KeyCode::Esc => Vec::new(),
            // Backspace on an empty line closes it, as in vim.
            KeyCode::Backspace if text.is_empty() && ev.modifiers.is_empty() => Vec::new(),
            KeyCode::Enter => command(app, text.text().trim()),
            _ => {
                text.key(&ev);
                app.overlay = Some(Overlay::Command(text));
                Vec::new()
            }
        },
        Overlay::Prompt(mut p) => match ev.code {
            KeyCode::Esc => Vec::new(),
            KeyCode::Enter => match p.kind {
                PromptKind::Filter => set_filter(app, p.text.text().trim().to_string()),
                PromptKind::Search => {
                    if let Some(d) = &mut app.detail {
                        d.search = Some(p.text.text().to_string()).filter(|s| !s.is_empty());
                    }
                    search(app, true, false);
                    Vec::new()
                }
            },
            _ => {
                p.text.key(&ev);
                app.overlay = Some(Overlay::Prompt(p));
                Vec::new()
            }
        },
        Overlay::Dialog(d) => dialog_key(app, *d, ev),
    }
}

/// The last scroll offset of the help that still fills the box.
fn help_max_scroll(app: &App) -> usize {
    // Header, tabs and footer above and below the body, the box's border inside it.
    let visible = (app.size.1 as usize).saturating_sub(3 + 2);
    app.help_len().saturating_sub(visible)
}

/// Closes a dialog without sending anything, and says so.
fn dismiss(app: &mut App, d: &Dialog) -> Vec<Effect> {
    let text = match &d.action {
        PendingAction::Cancel(run) => format!("run {run} left running: nothing sent"),
        _ => "cancelled: nothing sent".to_string(),
    };
    flash(app, text, false);
    Vec::new()
}

fn dialog_key(app: &mut App, mut d: Dialog, ev: KeyEvent) -> Vec<Effect> {
    let has_field = d.field.is_some();
    let yes_no = d.yes_no_keys();
    let typing = !ev
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    let cycle = |f: DialogFocus, fwd: bool| match (f, fwd) {
        (DialogFocus::Field, true) => DialogFocus::Cancel,
        (DialogFocus::Cancel, true) => DialogFocus::Confirm,
        (DialogFocus::Confirm, true) if has_field => DialogFocus::Field,
        (DialogFocus::Confirm, true) => DialogFocus::Cancel,
        (DialogFocus::Field, false) => DialogFocus::Confirm,
        (DialogFocus::Confirm, false) => DialogFocus::Cancel,
        (DialogFocus::Cancel, false) if has_field => DialogFocus::Field,
        (DialogFocus::Cancel, false) => DialogFocus::Confirm,
    };
    if d.focus == DialogFocus::Field
        && let Some((_, v)) = &mut d.field
    {
        // The field's editing keys (Left/Right, Home/End, Ctrl-A/E/U/W/K, ...)
        // act on the text; Enter, Tab and Esc move the focus or close.
        match v.key(&ev) {
            Edited::Changed => {
                d.error = None;
                app.overlay = Some(Overlay::Dialog(Box::new(d)));
                return Vec::new();
            }
            Edited::Moved => {
                app.overlay = Some(Overlay::Dialog(Box::new(d)));
                return Vec::new();
            }
            Edited::Ignored => {}
        }
    }
    match (ev.code, d.focus) {
        (KeyCode::Esc, _) => return dismiss(app, &d),
        (KeyCode::Tab | KeyCode::Right, f)
            if f != DialogFocus::Field || ev.code == KeyCode::Tab =>
        {
            d.focus = cycle(f, true)
        }
        (KeyCode::BackTab | KeyCode::Left, f)
            if f != DialogFocus::Field || ev.code == KeyCode::BackTab =>
        {
            d.focus = cycle(f, false)
        }
        // Done typing: on to the confirm button (one more Enter sends; letters
        // typed there go back into the field, `y` and `n` included).
        (KeyCode::Enter, DialogFocus::Field) => d.focus = DialogFocus::Confirm,
        (KeyCode::Enter, DialogFocus::Cancel) if typing => return dismiss(app, &d),
        (KeyCode::Char('n'), DialogFocus::Cancel | DialogFocus::Confirm) if typing && yes_no => {
            return dismiss(app, &d);
        }
        (KeyCode::Enter, DialogFocus::Confirm) if typing => return confirm(app, d),
        (KeyCode::Char('y'), DialogFocus::Cancel | DialogFocus::Confirm) if typing && yes_no => {
            return confirm(app, d);
        }
        (KeyCode::Backspace, _) if has_field => {
            d.focus = DialogFocus::Field;
            d.error = None;
            if let Some((_, v)) = &mut d.field {
                v.backspace();
            }
        }
        // Typing on a button goes back into the field rather than being lost.
        (KeyCode::Char(c), _) if has_field && typing => {
            d.focus = DialogFocus::Field;
            d.error = None;
            if let Some((_, v)) = &mut d.field {
                v.insert(c);
            }
        }
        (KeyCode::Char(_), _) if yes_no => {
            d.error = Some(format!(
                "y: {}, n or Esc: {}",
                d.confirm.to_lowercase(),
                d.dismiss.to_lowercase()
            ));
        }
        (KeyCode::Char(_), _) => {
            d.error = Some(format!(
                "Enter on [ {} ]: {}, Esc: {}",
                d.confirm,
                d.confirm.to_lowercase(),
                d.dismiss.to_lowercase()
            ));
        }
        _ => {}
    }
    app.overlay = Some(Overlay::Dialog(Box::new(d)));
    Vec::new()
}

fn confirm(app: &mut App, mut d: Dialog) -> Vec<Effect> {
    let action = match &d.action {
        PendingAction::Retry { all: false, .. } => Action::Retry,
        PendingAction::Retry { all: true, .. } => Action::RetryAll,
        PendingAction::Cancel(_) => Action::Cancel,
        PendingAction::Decide { approve: true, .. } => Action::Approve,
        PendingAction::Decide { approve: false, .. } => Action::Reject,
        PendingAction::Trigger { .. } => Action::Trigger,
        PendingAction::SetEnabled { enabled: true, .. } => Action::Enable,
        PendingAction::SetEnabled { enabled: false, .. } => Action::Disable,
    };
    if let Some(reason) = app.disabled_reason(action) {
        flash(app, format!("not sent: {reason}"), true);
        return Vec::new();
    }
    let text = d
        .field
        .as_ref()
        .map(|(_, v)| v.text().trim().to_string())
        .unwrap_or_default();
    if d.required && text.is_empty() {
        d.error = Some("a reason is required".into());
        d.focus = DialogFocus::Field;
        app.overlay = Some(Overlay::Dialog(Box::new(d)));
        return Vec::new();
    }
    let key = d.idempotency_key.clone();
    let (what, request, open_new_run) = match d.action {
        PendingAction::Retry { run, all } => (
            format!("retry {run}"),
            m::Call::new::<m::RunsRetry>(&RetryParams {
                id: run,
                mode: if all {
                    RetryMode::All
                } else {
                    RetryMode::Failed
                },
            }),
            true,
        ),
        PendingAction::Cancel(run) => (
            format!("cancel {run}"),
            m::Call::new::<m::RunsCancel>(&RunRef { id: run }),
            false,
        ),
        PendingAction::Decide { id, approve } => (
            format!(
                "{} approval #{id}",
                if approve { "approve" } else { "reject" }
            ),
            m::Call::new::<m::ApprovalsDecide>(&DecideParams {
                id,
                approve,
                reason: Some(text).filter(|t| !t.is_empty()),
            }),
            false,
        ),
        PendingAction::Trigger { name, inputs } => {
            // Each value as its input's declared type; one that does not fit
            // is not sent: the form stays open with the text as typed.
            let values = match inputs::form_inputs(&text, inputs.as_deref()) {
                Ok(v) => v,
                Err(e) => {
                    d.error = Some(e);
                    d.focus = DialogFocus::Field;
                    d.action = PendingAction::Trigger { name, inputs };
                    app.overlay = Some(Overlay::Dialog(Box::new(d)));
                    return Vec::new();
                }
            };
            (
                format!("trigger {name}"),
                m::Call::new::<m::PipelinesTrigger>(&TriggerParams {
                    name,
                    inputs: values,
                    wait: false,
                }),
                true,
            )
        }
        PendingAction::SetEnabled { name, enabled } => {
            let what = format!("{} {name}", if enabled { "enable" } else { "disable" });
            let p = PipelineRef { name };
            let request = if enabled {
                m::Call::new::<m::PipelinesEnable>(&p)
            } else {
                m::Call::new::<m::PipelinesDisable>(&p)
            };
            (what, request, false)
        }
    };
    let request = request.idempotent(&key);
    flash(app, format!("{what}: sent"), false);
    vec![Effect::Call {
        tag: Tag::Action { what, open_new_run },
        method: request.method,
        params: request.params,
    }]
}

fn command(app: &mut App, text: &str) -> Vec<Effect> {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "runs" | "r" => switch_view(app, View::Runs),
        "pipelines" | "p" => switch_view(app, View::Pipelines),
        "approvals" | "a" => switch_view(app, View::Approvals),
        "metrics" | "m" => switch_view(app, View::Metrics),
        "audit" => switch_view(app, View::Audit),
        "help" | "h" => {
            app.flash = None;
            app.overlay = Some(Overlay::Help(0));
            Vec::new()
        }
        "q" | "quit" => {
            app.quit = true;
            vec![Effect::Quit]
        }
        "run" | "open" => match rest.parse::<RunId>() {
            Ok(id) => open_run(app, id),
            Err(_) => {
                flash(app, format!(":{word} needs a run id, e.g. :run 12"), true);
                Vec::new()
            }
        },
        "filter" => {
            app.back.clear();
            app.view = View::Runs;
            set_filter(app, rest.trim().to_string())
        }
        "" => Vec::new(),
        other => {
            flash(
                app,
                format!(
                    "unknown command :{other} (runs, pipelines, approvals, metrics, audit, run N, filter ..., help, quit)"
                ),
                true,
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::super::app::Options;
    use super::super::keymap::Keymap;
    use sluice_shared::protocol::Notification;

    fn app_as(role: &str, readonly: bool) -> App {
        let opts = Options {
            readonly,
            ..Options::default()
        };
        let mut app = App::new(opts, Keymap::defaults(), 1_000_000);
        let hello =
            json!({"protocol": "1.0", "daemon_version": "0.1.0", "user": "u", "role": role});
        update(
            &mut app,
            Msg::Conn(ConnEvent::Connected(serde_json::from_value(hello).unwrap())),
        );
        update(&mut app, Msg::Conn(ConnEvent::Synced));
        let page = json!({"runs": [{"id": 7, "pipeline": "p", "state": "failed",
            "trigger": {"kind": "manual"}, "created_at": 1, "started_at": 2, "finished_at": 3}]});
        update(
            &mut app,
            Msg::Reply(
                Tag::Runs {
                    append: false,
                    generation: 0,
                },
                Ok(page),
            ),
        );
        app
    }

    fn press(app: &mut App, c: KeyCode) -> Vec<Effect> {
        update(app, Msg::Key(KeyEvent::new(c, KeyModifiers::NONE)))
    }

    fn calls(fx: &[Effect]) -> Vec<&'static str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Call { method, .. } => Some(*method),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn retry_needs_a_second_deliberate_key_and_carries_an_idempotency_key() {
        let mut app = app_as("operator", false);
        assert!(calls(&press(&mut app, KeyCode::Char('r'))).is_empty());
        // The dialog opens on Cancel: Enter closes it and sends nothing.
        assert!(calls(&press(&mut app, KeyCode::Enter)).is_empty());
        assert!(app.overlay.is_none());
        press(&mut app, KeyCode::Char('r'));
        let fx = press(&mut app, KeyCode::Char('y'));
        let Some(Effect::Call { method, params, .. }) = fx.first() else {
            panic!("{fx:?}")
        };
        assert_eq!(*method, "runs.retry");
        assert_eq!(params["mode"], "failed");
        assert!(
            params["idempotency_key"]
                .as_str()
                .is_some_and(|k| !k.is_empty())
        );
        // The dialog is gone: another `y` does nothing.
        assert!(calls(&press(&mut app, KeyCode::Char('y'))).is_empty());
    }

    #[test]
    fn forbidden_actions_say_why_and_send_nothing() {
        for (mut app, why) in [
            (
                app_as("viewer", false),
                "needs role operator (you are viewer)",
            ),
            (app_as("admin", true), "read-only"),
        ] {
            assert!(press(&mut app, KeyCode::Char('r')).is_empty());
            assert!(app.overlay.is_none());
            let flash = app.flash.clone().unwrap();
            assert!(flash.text.contains(why), "{}", flash.text);
        }
        let mut app = app_as("admin", false);
        update(
            &mut app,
            Msg::Conn(ConnEvent::Disconnected {
                error: "gone".into(),
                retry_at_ms: 0,
            }),
        );
        assert!(app.stale);
        assert!(press(&mut app, KeyCode::Char('c')).is_empty());
        assert!(app.flash.clone().unwrap().text.contains("not connected"));
        // Back, the handshake alone is not enough: the subscription must be live too.
        let hello =
            json!({"protocol": "1.0", "daemon_version": "0.1.0", "user": "u", "role": "admin"});
        update(
            &mut app,
            Msg::Conn(ConnEvent::Connected(serde_json::from_value(hello).unwrap())),
        );
        assert!(app.disabled_reason(Action::Retry).is_some());
        let fx = update(&mut app, Msg::Conn(ConnEvent::Synced));
        assert!(calls(&fx).contains(&"runs.list"), "resynchronised");
        assert!(!app.stale);
        assert!(app.disabled_reason(Action::Retry).is_none());
    }

    #[test]
    fn a_reject_needs_a_reason() {
        let mut app = app_as("operator", false);
        let list =
            json!([{"id": 3, "run": 7, "node": "gate", "state": "pending", "requested_at": 1}]);
        update(
            &mut app,
            Msg::Reply(Tag::Approvals { pending: true }, Ok(list)),
        );
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Char('x'));
        press(&mut app, KeyCode::Enter);
        assert!(calls(&press(&mut app, KeyCode::Enter)).is_empty());
        let Some(Overlay::Dialog(d)) = &app.overlay else {
            panic!()
        };
        assert_eq!(d.error.as_deref(), Some("a reason is required"));
        for c in "not today".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        let fx = press(&mut app, KeyCode::Enter);
        let Some(Effect::Call { method, params, .. }) = fx.first() else {
            panic!("{fx:?}")
        };
        assert_eq!(*method, "approvals.decide");
        assert_eq!(params["approve"], false);
        assert_eq!(params["reason"], "not today");
    }

    fn log_event(app: &mut App, seq: u64, line_seq: u32) -> Vec<Effect> {
        let params = json!({"subscription": 1, "seq": seq, "event": {"type": "log", "run": 7,
            "node": "n", "attempt": 1, "seq": line_seq, "stream": "stdout", "line": format!("l{line_seq}")}});
        update(
            app,
            Msg::Notice(Notification {
                jsonrpc: "2.0".into(),
                method: "event".into(),
                params,
            }),
        )
    }

    #[test]
    fn the_log_follows_counts_unseen_lines_and_drops_repeats() {
        let mut app = app_as("operator", false);
        press(&mut app, KeyCode::Enter);
        let detail = json!({"id": 7, "pipeline": "p", "state": "running", "trigger": {"kind": "manual"},
            "created_at": 1, "inputs": {}, "nodes": [{"id": "n", "kind": "shell", "state": "running", "attempts": []}]});
        let fx = update(&mut app, Msg::Reply(Tag::Detail(RunId(7)), Ok(detail)));
        assert_eq!(calls(&fx), ["logs.get"]);
        // Events while the log loads wait, then follow what logs.get returned.
        log_event(&mut app, 10, 2);
        let page = json!({"lines": [{"run": 7, "node": "n", "attempt": 1, "seq": 1, "at_ms": 1, "stream": "stdout", "line": "l1"},
            {"run": 7, "node": "n", "attempt": 1, "seq": 2, "at_ms": 1, "stream": "stdout", "line": "l2"}], "next": 2, "finished": false});
        let generation = app.detail.as_ref().unwrap().log_generation;
        update(
            &mut app,
            Msg::Reply(
                Tag::Logs {
                    run: RunId(7),
                    node: "n".into(),
                    generation,
                },
                Ok(page),
            ),
        );
        let d = app.detail.as_ref().unwrap();
        assert_eq!(d.log.len(), 2, "the event's line was a repeat");
        assert_eq!(d.log_cursor, 1);
        press(&mut app, KeyCode::Char('f'));
        log_event(&mut app, 11, 3);
        log_event(&mut app, 12, 4);
        let d = app.detail.as_ref().unwrap();
        assert_eq!((d.log.len(), d.unseen, d.log_cursor), (4, 2, 1));
        press(&mut app, KeyCode::Char('f'));
        let d = app.detail.as_ref().unwrap();
        assert_eq!((d.unseen, d.log_cursor), (0, 3));
        // A gap in event numbers means some were dropped: fetch again.
        let fx = log_event(&mut app, 20, 5);
        assert!(calls(&fx).contains(&"runs.get"), "{fx:?}");
    }

    #[test]
    fn paging_fetches_older_runs_by_keyset_before_the_end() {
        let mut app = app_as("viewer", false);
        let runs: Vec<Value> = (101..=300)
            .rev()
            .map(|id| {
                json!({"id": id, "pipeline": "p", "state": "succeeded",
                "trigger": {"kind": "cron"}, "created_at": id})
            })
            .collect();
        update(
            &mut app,
            Msg::Reply(
                Tag::Runs {
                    append: false,
                    generation: 0,
                },
                Ok(json!({"runs": runs, "next": 101})),
            ),
        );
        assert!(calls(&press(&mut app, KeyCode::Down)).is_empty());
        let fx = press(&mut app, KeyCode::End);
        let Some(Effect::Call {
            method,
            params,
            tag,
        }) = fx.first()
        else {
            panic!("{fx:?}")
        };
        assert_eq!(
            (*method, params["before"].as_i64()),
            ("runs.list", Some(101))
        );
        let older: Vec<Value> = (1..=100)
            .rev()
            .map(|id| {
                json!({"id": id, "pipeline": "p", "state": "failed",
                "trigger": {"kind": "cron"}, "created_at": id})
            })
            .collect();
        update(
            &mut app,
            Msg::Reply(tag.clone(), Ok(json!({"runs": older}))),
        );
        assert_eq!(app.visible_count(), 300);
        assert_eq!(app.runs.next, None);
        // A live refresh of the first page keeps the older pages and the selection.
        let selected = app.visible_run(app.runs.cursor.selected).map(|r| r.id);
        let newest: Vec<Value> = (102..=301)
            .rev()
            .map(|id| {
                json!({"id": id, "pipeline": "p", "state": "succeeded",
                "trigger": {"kind": "cron"}, "created_at": id})
            })
            .collect();
        update(
            &mut app,
            Msg::Reply(
                Tag::Runs {
                    append: false,
                    generation: 0,
                },
                Ok(json!({"runs": newest, "next": 102})),
            ),
        );
        assert_eq!(app.visible_count(), 301);
        assert_eq!(
            app.visible_run(app.runs.cursor.selected).map(|r| r.id),
            selected
        );
    }

    #[test]
    fn an_alt_chord_is_esc_then_the_key() {
        let mut app = app_as("operator", false);
        press(&mut app, KeyCode::Char('r'));
        assert!(app.overlay.is_some());
        update(
            &mut app,
            Msg::Key(KeyEvent::new(KeyCode::Char('2'), KeyModifiers::ALT)),
        );
        assert!(app.overlay.is_none());
        assert_eq!(app.view, View::Pipelines);
    }

    #[test]
    fn unknown_approval_events_refetch_approvals() {
        let mut app = app_as("operator", false);
        let params =
            json!({"subscription": 1, "seq": 1, "event": {"type": "approval_escalated", "id": 3}});
        update(
            &mut app,
            Msg::Notice(Notification {
                jsonrpc: "2.0".into(),
                method: "event".into(),
                params,
            }),
        );
        assert!(app.approvals.dirty);
        let fx = update(&mut app, Msg::Tick(2_000_000));
        assert!(calls(&fx).contains(&"approvals.list"));
    }

    fn trigger_dialog(app: &mut App) {
        let def = json!({"name": "hello", "definition": {"inputs": {
            "who": {"default": "world"}, "n": {"type": "integer", "default": 1}}}});
        update(app, Msg::Reply(Tag::TriggerForm("hello".into()), Ok(def)));
    }

    fn dialog(app: &App) -> &Dialog {
        match &app.overlay {
            Some(Overlay::Dialog(d)) => d,
            other => panic!("no dialog: {other:?}"),
        }
    }

    #[test]
    fn enter_in_a_field_moves_to_confirm_and_typing_is_never_lost() {
        let mut app = app_as("operator", false);
        trigger_dialog(&mut app);
        assert_eq!(dialog(&app).focus, DialogFocus::Field);
        press(&mut app, KeyCode::Enter);
        assert_eq!(dialog(&app).focus, DialogFocus::Confirm);
        // Typing on a button goes back into the field (`n` included once there).
        for c in " n=2".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        assert_eq!(dialog(&app).focus, DialogFocus::Field);
        assert!(
            dialog(&app)
                .field
                .as_ref()
                .unwrap()
                .1
                .text()
                .ends_with(" n=2")
        );
        press(&mut app, KeyCode::Enter);
        let fx = press(&mut app, KeyCode::Enter);
        assert_eq!(calls(&fx), ["pipelines.trigger"]);
        let Some(Effect::Call { params, .. }) = fx.first() else {
            panic!()
        };
        assert_eq!(params["inputs"]["n"], json!(2));
        assert_eq!(params["inputs"]["who"], json!("world"), "{params}");
    }

    fn runs_page(ids: &[i64]) -> Value {
        let runs: Vec<Value> = ids
            .iter()
            .map(|&id| {
                json!({"id": id, "pipeline": "p", "state": if id == 9 { "running" } else { "succeeded" },
                    "trigger": {"kind": "manual"}, "created_at": id, "started_at": id, "finished_at": if id == 9 { Value::Null } else { json!(id + 1) }})
            })
            .collect();
        json!({ "runs": runs })
    }

    /// The row the rendered table highlights (its first cell, the id).
    fn highlighted(app: &App) -> String {
        use ratatui::Terminal;
        use ratatui::backend::TestBackend;
        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
        term.draw(|f| super::super::views::draw(f, app)).unwrap();
        let buf = term.backend().buffer();
        for y in 0..buf.area.height {
            let cells: Vec<_> = (0..buf.area.width).map(|x| &buf[(x, y)]).collect();
            let reversed = cells.iter().any(|c| {
                c.modifier.contains(ratatui::style::Modifier::REVERSED) && c.symbol() == "#"
            });
            if reversed {
                let line: String = cells.iter().map(|c| c.symbol()).collect();
                return line
                    .split_whitespace()
                    .find_map(|w| w.find('#').map(|i| w[i..].to_string()))
                    .unwrap_or_default();
            }
        }
        String::new()
    }

    /// After a reconnect the first page replaces what was loaded (runs gone
    /// meanwhile disappear, none are kept from a partial list), and an action
    /// always targets the run the table highlights, wherever its row moved.
    #[test]
    fn after_a_reconnect_actions_target_the_highlighted_run() {
        let mut app = app_as("operator", false);
        let reply = |app: &mut App, ids: &[i64]| {
            let generation = app.runs.generation;
            update(
                app,
                Msg::Reply(
                    Tag::Runs {
                        append: false,
                        generation,
                    },
                    Ok(runs_page(ids)),
                ),
            );
        };
        reply(&mut app, &[13, 12, 11, 10, 9, 8, 7]);
        press(&mut app, KeyCode::Home);
        for _ in 0..4 {
            press(&mut app, KeyCode::Down);
        }
        assert_eq!(app.selected_run().map(|r| r.id), Some(RunId(9)));
        assert_eq!(highlighted(&app), "#9");
        update(
            &mut app,
            Msg::Conn(ConnEvent::Disconnected {
                error: "gone".into(),
                retry_at_ms: 0,
            }),
        );
        let hello =
            json!({"protocol": "1.0", "daemon_version": "0.1.0", "user": "u", "role": "operator"});
        update(
            &mut app,
            Msg::Conn(ConnEvent::Connected(serde_json::from_value(hello).unwrap())),
        );
        update(&mut app, Msg::Conn(ConnEvent::Synced));
        // Two runs arrived while away; #12 and #7 were removed by retention.
        reply(&mut app, &[15, 14, 13, 11, 10, 9, 8]);
        let ids: Vec<i64> = app.runs.rows.iter().map(|r| r.id.0).collect();
        assert_eq!(
            ids,
            [15, 14, 13, 11, 10, 9, 8],
            "replaced, not merged with stale rows"
        );
        assert_eq!(highlighted(&app), "#9", "the highlight stays on its run");
        press(&mut app, KeyCode::Char('c'));
        let Some(Overlay::Dialog(d)) = &app.overlay else {
            panic!("no dialog: {:?} {:?}", app.overlay, app.flash)
        };
        assert_eq!(d.action, PendingAction::Cancel(RunId(9)));
        press(&mut app, KeyCode::Esc);
        // The highlighted run gone from the list: the highlight and the target move together.
        reply(&mut app, &[15, 14, 13, 11, 10, 8]);
        let shown = highlighted(&app);
        assert_eq!(
            Some(shown.clone()),
            app.selected_run().map(|r| r.id.to_string())
        );
        press(&mut app, KeyCode::Char('R'));
        let Some(Overlay::Dialog(d)) = &app.overlay else {
            panic!("no dialog: {:?} {:?}", app.overlay, app.flash)
        };
        assert_eq!(
            Some(format!("Retry run {shown} (all nodes)?")),
            Some(d.title.clone())
        );
    }

    fn screen(app: &App, w: u16, h: u16) -> String {
        use ratatui::Terminal;
        use ratatui::backend::TestBackend;
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| super::super::views::draw(f, app)).unwrap();
        let buf = term.backend().buffer();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    /// A cron fire (its run) and a finished run refetch the pipelines (next
    /// fire, last result); the view is also polled, so a fixed file's error
    /// goes without Ctrl-L. The errors panel never shows `:0:0:` and says how
    /// many it could not show.
    #[test]
    fn the_pipelines_view_follows_fires_results_and_fixed_files() {
        let mut app = app_as("operator", false);
        press(&mut app, KeyCode::Char('2'));
        assert_eq!(app.view, View::Pipelines);
        let notice = |app: &mut App, seq: u64, event: Value| {
            update(
                app,
                Msg::Notice(Notification {
                    jsonrpc: "2.0".into(),
                    method: "event".into(),
                    params: json!({"subscription": 1, "seq": seq, "event": event}),
                }),
            )
        };
        let now = app.now_ms;
        notice(
            &mut app,
            1,
            json!({"type": "run_created", "run": 8, "pipeline": "nightly"}),
        );
        let fx = update(&mut app, Msg::Tick(now + 100));
        assert!(calls(&fx).contains(&"pipelines.list"), "{:?}", calls(&fx));
        notice(
            &mut app,
            2,
            json!({"type": "run_state", "run": 8, "state": "succeeded"}),
        );
        let fx = update(&mut app, Msg::Tick(now + 200));
        assert!(calls(&fx).contains(&"pipelines.list"), "{:?}", calls(&fx));
        // No event at all: the poll looks again, config errors included.
        let fx = update(&mut app, Msg::Tick(now + 6_000));
        assert!(
            calls(&fx).contains(&"pipelines.list") && calls(&fx).contains(&"config.errors"),
            "{:?}",
            calls(&fx)
        );

        let diag = |file: &str, line: Option<u32>, severity: &str, message: &str| {
            json!({"file": file, "line": line, "column": line.map(|_| 3), "severity": severity,
                "path": "", "message": message})
        };
        let errors = json!({"diagnostics": [
            diag("hook.yaml", None, "warning", "secret 'k' is not configured"),
            diag("a.yaml", Some(4), "error", "unknown kind 'nope'"),
            diag("b.yaml", Some(7), "error", "unknown kind 'nope'"),
            diag("c.yaml", Some(9), "error", "unknown kind 'nope'"),
        ]});
        update(&mut app, Msg::Reply(Tag::ConfigErrors, Ok(errors)));
        assert_eq!(app.pipelines.errors.len(), 4);
        let big = screen(&app, 100, 30);
        assert!(big.contains("Config errors 3 · warnings 1"), "{big}");
        assert!(big.contains("a.yaml:4:3: unknown kind"), "{big}");
        assert!(big.contains("hook.yaml: warning: secret"), "{big}");
        assert!(!big.contains(":0:0:"), "{big}");
        // A short screen: what does not fit is counted, rejections first.
        let small = screen(&app, 60, 20);
        assert!(small.contains("a.yaml:4:3"), "{small}");
        assert!(small.contains("more (sluice errors"), "{small}");
        // Fixed: the next reply clears the panel.
        update(
            &mut app,
            Msg::Reply(Tag::ConfigErrors, Ok(json!({"diagnostics": []}))),
        );
        assert!(!screen(&app, 100, 30).contains("Config errors"));
    }

    fn chord(app: &mut App, c: char, m: KeyModifiers) -> Vec<Effect> {
        update(app, Msg::Key(KeyEvent::new(KeyCode::Char(c), m)))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    /// Ctrl-U, Ctrl-W and the cursor keys edit the filter, the command line
    /// and the trigger form alike; none of them types a letter or leaves the field.
    #[test]
    fn every_text_field_edits_in_place_with_the_readline_keys() {
        const CTRL: KeyModifiers = KeyModifiers::CONTROL;
        const ALT: KeyModifiers = KeyModifiers::ALT;
        let mut app = app_as("operator", false);
        // The runs filter.
        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "p:deploy failed");
        chord(&mut app, 'w', CTRL);
        let Some(Overlay::Prompt(p)) = &app.overlay else {
            panic!("{:?}", app.overlay)
        };
        assert_eq!(p.text.text(), "p:deploy ");
        // Alt-B is a word left here, not Esc (which would close the prompt).
        chord(&mut app, 'b', ALT);
        press(&mut app, KeyCode::Right);
        press(&mut app, KeyCode::Char('X'));
        chord(&mut app, 'e', CTRL);
        typed(&mut app, "ok");
        let Some(Overlay::Prompt(p)) = &app.overlay else {
            panic!("{:?}", app.overlay)
        };
        assert_eq!(p.text.text(), "pX:deploy ok");
        chord(&mut app, 'u', CTRL);
        let fx = press(&mut app, KeyCode::Enter);
        assert_eq!(app.runs.filter, "", "Ctrl-U left nothing to filter by");
        assert_eq!(calls(&fx), ["runs.list"]);

        // The command line.
        press(&mut app, KeyCode::Char(':'));
        typed(&mut app, "run 12");
        press(&mut app, KeyCode::Home);
        chord(&mut app, 'k', CTRL);
        typed(&mut app, "metrics");
        let Some(Overlay::Command(c)) = &app.overlay else {
            panic!("{:?}", app.overlay)
        };
        assert_eq!(c.text(), "metrics");
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view, View::Metrics);

        // The trigger form.
        trigger_dialog(&mut app);
        chord(&mut app, 'u', CTRL);
        assert_eq!(dialog(&app).field.as_ref().unwrap().1.text(), "");
        typed(&mut app, "who=me n=2");
        chord(&mut app, 'w', CTRL);
        typed(&mut app, "n=3");
        press(&mut app, KeyCode::Home);
        press(&mut app, KeyCode::Delete);
        press(&mut app, KeyCode::Char('W'));
        let d = dialog(&app);
        assert_eq!(d.field.as_ref().unwrap().1.text(), "Who=me n=3");
        assert_eq!(d.focus, DialogFocus::Field, "editing keys keep the focus");
    }

    #[test]
    fn letters_on_a_text_dialogs_buttons_are_typing_not_yes_or_no() {
        let mut app = app_as("operator", false);
        trigger_dialog(&mut app);
        let typed = dialog(&app).field.clone().unwrap().1.text().to_string();
        press(&mut app, KeyCode::Enter);
        assert_eq!(dialog(&app).focus, DialogFocus::Confirm);
        // `y` on [ Trigger ] sends nothing: it goes into the field.
        assert!(calls(&press(&mut app, KeyCode::Char('y'))).is_empty());
        assert_eq!(dialog(&app).focus, DialogFocus::Field);
        assert_eq!(
            dialog(&app).field.as_ref().unwrap().1.text(),
            format!("{typed}y")
        );
        press(&mut app, KeyCode::Backspace);
        // `n` on [ Cancel ] cancels nothing either.
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::BackTab);
        assert_eq!(dialog(&app).focus, DialogFocus::Cancel);
        assert!(press(&mut app, KeyCode::Char('n')).is_empty());
        assert_eq!(
            dialog(&app).field.as_ref().unwrap().1.text(),
            format!("{typed}n")
        );
        assert!(app.flash.is_none(), "nothing was cancelled");
        // Enter on the focused button is what acts.
        press(&mut app, KeyCode::Backspace);
        press(&mut app, KeyCode::Enter);
        assert_eq!(
            calls(&press(&mut app, KeyCode::Enter)),
            ["pipelines.trigger"]
        );
        assert!(app.overlay.is_none());
        // The same in the approve and reject dialogs: a reason that goes on
        // after Enter ("yes, tested") neither approves nor cancels.
        let list =
            json!([{"id": 3, "run": 7, "node": "gate", "state": "pending", "requested_at": 1}]);
        update(
            &mut app,
            Msg::Reply(Tag::Approvals { pending: true }, Ok(list)),
        );
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Char('a'));
        press(&mut app, KeyCode::Enter);
        assert_eq!(dialog(&app).focus, DialogFocus::Confirm);
        for c in "yes, tested".chars() {
            assert!(calls(&press(&mut app, KeyCode::Char(c))).is_empty(), "{c}");
        }
        assert_eq!(dialog(&app).focus, DialogFocus::Field);
        assert_eq!(dialog(&app).field.as_ref().unwrap().1.text(), "yes, tested");
        press(&mut app, KeyCode::Enter);
        // On [ Cancel ], `n` is typing too.
        press(&mut app, KeyCode::BackTab);
        assert_eq!(dialog(&app).focus, DialogFocus::Cancel);
        assert!(press(&mut app, KeyCode::Char('n')).is_empty());
        assert!(app.flash.is_none(), "nothing was cancelled");
        press(&mut app, KeyCode::Backspace);
        // Enter on the focused [ Approve ] sends the reason.
        press(&mut app, KeyCode::Enter);
        assert_eq!(dialog(&app).focus, DialogFocus::Confirm);
        let fx = press(&mut app, KeyCode::Enter);
        assert_eq!(calls(&fx), ["approvals.decide"]);
        let Some(Effect::Call { params, .. }) = fx.first() else {
            panic!()
        };
        assert_eq!(params["approve"], true);
        assert_eq!(params["reason"], "yes, tested");
        // The reject dialog's buttons do not take `y` either.
        press(&mut app, KeyCode::Char('x'));
        for c in "no".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        assert!(calls(&press(&mut app, KeyCode::Char('y'))).is_empty());
        assert_eq!(dialog(&app).field.as_ref().unwrap().1.text(), "noy");
        press(&mut app, KeyCode::Esc);
        // A dialog without a text field keeps `y` and `n`.
        press(&mut app, KeyCode::Char('1'));
        press(&mut app, KeyCode::Char('r'));
        assert!(dialog(&app).yes_no_keys());
    }

    #[test]
    fn cancelling_a_dialog_always_says_so() {
        let mut app = app_as("operator", false);
        // Tab onto Cancel, Enter.
        trigger_dialog(&mut app);
        press(&mut app, KeyCode::Tab);
        assert_eq!(dialog(&app).focus, DialogFocus::Cancel);
        assert!(press(&mut app, KeyCode::Enter).is_empty());
        assert!(app.overlay.is_none());
        assert!(app.flash.as_ref().unwrap().text.contains("cancelled"));
        // Esc.
        app.flash = None;
        trigger_dialog(&mut app);
        press(&mut app, KeyCode::Esc);
        assert!(app.flash.as_ref().unwrap().text.contains("cancelled"));
        // `n` on a dialog without a field; another key explains the keys instead.
        app.flash = None;
        press(&mut app, KeyCode::Char('R'));
        press(&mut app, KeyCode::Char('t'));
        assert!(dialog(&app).error.as_deref().unwrap().contains("y: retry"));
        press(&mut app, KeyCode::Char('n'));
        assert!(app.overlay.is_none());
        assert!(app.flash.as_ref().unwrap().text.contains("cancelled"));
    }

    #[test]
    fn a_validation_message_goes_as_soon_as_the_user_types() {
        let mut app = app_as("operator", false);
        let list =
            json!([{"id": 3, "run": 7, "node": "gate", "state": "pending", "requested_at": 1}]);
        update(
            &mut app,
            Msg::Reply(Tag::Approvals { pending: true }, Ok(list)),
        );
        press(&mut app, KeyCode::Char('3'));
        press(&mut app, KeyCode::Char('x'));
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Enter);
        assert_eq!(dialog(&app).error.as_deref(), Some("a reason is required"));
        assert_eq!(dialog(&app).focus, DialogFocus::Field);
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(dialog(&app).error, None);
        assert_eq!(dialog(&app).field.as_ref().unwrap().1.text(), "n");
    }

    #[test]
    fn the_cancel_dialog_does_not_have_two_cancel_buttons() {
        let mut app = app_as("operator", false);
        let page = json!({"runs": [{"id": 8, "pipeline": "p", "state": "running",
            "trigger": {"kind": "manual"}, "created_at": 1}]});
        update(
            &mut app,
            Msg::Reply(
                Tag::Runs {
                    append: false,
                    generation: 0,
                },
                Ok(page),
            ),
        );
        press(&mut app, KeyCode::Char('c'));
        assert_eq!(
            (dialog(&app).dismiss.as_str(), dialog(&app).confirm.as_str()),
            ("Keep running", "Cancel run")
        );
        press(&mut app, KeyCode::Esc);
        assert!(app.flash.as_ref().unwrap().text.contains("left running"));
    }

    #[test]
    fn a_failed_only_retry_of_a_succeeded_run_points_to_retry_all() {
        let mut app = app_as("operator", false);
        let page = json!({"runs": [{"id": 9, "pipeline": "p", "state": "succeeded",
            "trigger": {"kind": "manual"}, "created_at": 1}]});
        update(
            &mut app,
            Msg::Reply(
                Tag::Runs {
                    append: false,
                    generation: 0,
                },
                Ok(page),
            ),
        );
        press(&mut app, KeyCode::Char('r'));
        assert!(app.overlay.is_none());
        let f = app.flash.clone().unwrap();
        assert!(
            f.text.contains("nothing failed") && f.text.contains("R retries all"),
            "{}",
            f.text
        );
        // The daemon's own refusal (a conflict) is shown as it comes.
        update(
            &mut app,
            Msg::Reply(
                Tag::Action {
                    what: "retry #9".into(),
                    open_new_run: true,
                },
                Err(CallError {
                    code: Some(-32009),
                    message: "run #9 has no failed nodes; retry all instead".into(),
                }),
            ),
        );
        assert!(
            app.flash
                .as_ref()
                .unwrap()
                .text
                .contains("run #9 has no failed nodes; retry all instead")
        );
    }

    #[test]
    fn messages_go_with_the_view_and_when_a_dialog_opens() {
        let mut app = app_as("operator", false);
        press(&mut app, KeyCode::Char(':'));
        for c in "run".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        press(&mut app, KeyCode::Enter);
        assert!(app.flash.as_ref().unwrap().text.contains("needs a run id"));
        press(&mut app, KeyCode::Char('2'));
        assert!(app.flash.is_none(), "a view change clears the message");
        press(&mut app, KeyCode::Char('1'));
        press(&mut app, KeyCode::Char('c'));
        assert!(
            app.flash
                .as_ref()
                .unwrap()
                .text
                .contains("already finished")
        );
        press(&mut app, KeyCode::Char('r'));
        assert!(app.overlay.is_some());
        assert!(app.flash.is_none(), "a dialog opening clears the message");
        press(&mut app, KeyCode::Esc);
        // And every message expires.
        let now = app.now_ms;
        update(&mut app, Msg::Tick(now + 10_000));
        assert!(app.flash.is_none());
    }

    #[test]
    fn end_in_the_help_goes_to_the_last_row() {
        let mut app = app_as("viewer", false);
        app.size = (80, 24);
        press(&mut app, KeyCode::Char('?'));
        press(&mut app, KeyCode::Char('G'));
        let max = app.help_len() - (24 - 5);
        assert_eq!(app.overlay, Some(Overlay::Help(max)));
        press(&mut app, KeyCode::Down);
        assert_eq!(app.overlay, Some(Overlay::Help(max)), "stays at the end");
        press(&mut app, KeyCode::Char('g'));
        assert_eq!(app.overlay, Some(Overlay::Help(0)));
        press(&mut app, KeyCode::End);
        assert_eq!(app.overlay, Some(Overlay::Help(max)));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.overlay, None);
    }

    #[test]
    fn a_console_that_never_connected_says_it_is_waiting() {
        let opts = Options {
            daemon: "/run/sluice/sluice.sock".into(),
            ..Options::default()
        };
        let mut app = App::new(opts, Keymap::defaults(), 1_000_000);
        update(
            &mut app,
            Msg::Conn(ConnEvent::Disconnected {
                error: "connection refused".into(),
                retry_at_ms: 1_004_000,
            }),
        );
        assert_eq!(
            app.waiting_for_daemon().as_deref(),
            Some("not connected yet — waiting for sluiced at /run/sluice/sluice.sock")
        );
        assert!(app_as("viewer", false).waiting_for_daemon().is_none());
    }
}
