//! The flow of data: logs, paging, events, reconnects and views.

use super::*;

#[test]
fn the_log_follows_counts_unseen_lines_and_drops_repeats() {
    let mut app = app_as("operator", false);
    press(&mut app, KeyCode::Enter);
    let detail = json!({"id": 7, "pipeline": "p", "state": "running", "trigger": {"kind": "manual"},
        "created_at": 1, "inputs": {}, "nodes": [{"id": "n", "kind": "shell", "state": "running", "attempts": []}]});
    let fx = update(&mut app, Msg::Reply(Tag::Detail(RunId(7)), Ok(detail)));
    assert_eq!(calls(&fx), [m::LogsGet::NAME]);
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
    assert!(calls(&fx).contains(&m::RunsGet::NAME), "{fx:?}");
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
    runs_reply(&mut app, json!({"runs": runs, "next": 101}));
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
        (m::RunsList::NAME, Some(101))
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
    runs_reply(&mut app, json!({"runs": newest, "next": 102}));
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
            method: notice::EVENT.into(),
            params,
        }),
    );
    assert!(app.approvals.dirty);
    let fx = update(&mut app, Msg::Tick(2_000_000));
    assert!(calls(&fx).contains(&m::ApprovalsList::NAME));
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
                method: notice::EVENT.into(),
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
    assert!(
        calls(&fx).contains(&m::PipelinesList::NAME),
        "{:?}",
        calls(&fx)
    );
    notice(
        &mut app,
        2,
        json!({"type": "run_state", "run": 8, "state": "succeeded"}),
    );
    let fx = update(&mut app, Msg::Tick(now + 200));
    assert!(
        calls(&fx).contains(&m::PipelinesList::NAME),
        "{:?}",
        calls(&fx)
    );
    // No event at all: the poll looks again, config errors included.
    let fx = update(&mut app, Msg::Tick(now + 6_000));
    assert!(
        calls(&fx).contains(&m::PipelinesList::NAME)
            && calls(&fx).contains(&m::ConfigErrorsList::NAME),
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
