//! Keeping the screen in step with the daemon: the connection's life, the
//! resynchronisation after a reconnect or a lag, the periodic polls and the
//! requests that fetch what a view shows.

use sluice_shared::method as m;
use sluice_shared::protocol::{AuditListParams, LogsParams, NoParams, RunsListParams};
use sluice_shared::run::RunId;

use super::{LOG_PAGE, POLL_MS, RUNS_PAGE};
use super::{approvals_call, call, detail_call, pipelines_calls, status_call, synced};
use crate::console::app::{App, Conn, DetailState, View, server_filter};
use crate::console::msg::{ConnEvent, Effect, Tag};

pub(super) fn conn(app: &mut App, ev: ConnEvent) -> Vec<Effect> {
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
pub(super) fn resync(app: &mut App) -> Vec<Effect> {
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

pub(super) fn view_poll(app: &App) -> Vec<Effect> {
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

pub(super) fn tick(app: &mut App, now: i64) -> Vec<Effect> {
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

pub(super) fn runs_request(app: &mut App, append: bool) -> Effect {
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

pub(super) fn logs_request(run: RunId, node: &str, generation: u64, after: u64) -> Effect {
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

pub(super) fn open_run(app: &mut App, id: RunId) -> Vec<Effect> {
    if app.view != View::Detail {
        app.back.push(app.view);
    }
    app.view = View::Detail;
    app.detail = Some(DetailState::new(id, app.opts.log_cap));
    vec![detail_call(Tag::Detail(id), id)]
}

pub(super) fn load_log(d: &mut DetailState) -> Vec<Effect> {
    let Some(node) = d.selected_node().map(str::to_string) else {
        return Vec::new();
    };
    d.log = crate::console::logbuf::LogBuf::with_capacity(d.log.capacity());
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

pub(super) fn switch_view(app: &mut App, view: View) -> Vec<Effect> {
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

pub(super) fn set_filter(app: &mut App, filter: String) -> Vec<Effect> {
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
