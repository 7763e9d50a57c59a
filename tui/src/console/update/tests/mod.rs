//! Tests of `update`: helpers here, the tests by topic below.

mod dialogs;
mod flow;

pub(super) use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
pub(super) use serde_json::{Value, json};
pub(super) use sluice_shared::method::{self as m, Method, notice};
pub(super) use sluice_shared::protocol::Notification;
pub(super) use sluice_shared::run::RunId;

pub(super) use super::update;
pub(super) use crate::console::app::{
    App, Dialog, DialogFocus, Options, Overlay, PendingAction, View,
};
pub(super) use crate::console::keymap::{Action, Keymap};
pub(super) use crate::console::msg::{CallError, ConnEvent, Effect, Msg, Tag};

pub(super) fn app_as(role: &str, readonly: bool) -> App {
    let opts = Options {
        readonly,
        ..Options::default()
    };
    let mut app = App::new(opts, Keymap::defaults(), 1_000_000);
    let hello = json!({"protocol": "1.0", "daemon_version": "0.1.0", "user": "u", "role": role});
    update(
        &mut app,
        Msg::Conn(ConnEvent::Connected(serde_json::from_value(hello).unwrap())),
    );
    update(&mut app, Msg::Conn(ConnEvent::Synced));
    let page = json!({"runs": [{"id": 7, "pipeline": "p", "state": "failed",
        "trigger": {"kind": "manual"}, "created_at": 1, "started_at": 2, "finished_at": 3}]});
    runs_reply(&mut app, page);
    app
}

pub(super) fn press(app: &mut App, c: KeyCode) -> Vec<Effect> {
    update(app, Msg::Key(KeyEvent::new(c, KeyModifiers::NONE)))
}

pub(super) fn calls(fx: &[Effect]) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Call { method, .. } => Some(*method),
            _ => None,
        })
        .collect()
}

pub(super) fn log_event(app: &mut App, seq: u64, line_seq: u32) -> Vec<Effect> {
    let params = json!({"subscription": 1, "seq": seq, "event": {"type": "log", "run": 7,
        "node": "n", "attempt": 1, "seq": line_seq, "stream": "stdout", "line": format!("l{line_seq}")}});
    update(
        app,
        Msg::Notice(Notification {
            jsonrpc: "2.0".into(),
            method: notice::EVENT.into(),
            params,
        }),
    )
}

pub(super) fn trigger_dialog(app: &mut App) {
    let def = json!({"name": "hello", "definition": {"inputs": {
        "who": {"default": "world"}, "n": {"type": "integer", "default": 1}}}});
    update(app, Msg::Reply(Tag::TriggerForm("hello".into()), Ok(def)));
}

pub(super) fn dialog(app: &App) -> &Dialog {
    match &app.overlay {
        Some(Overlay::Dialog(d)) => d,
        other => panic!("no dialog: {other:?}"),
    }
}

pub(super) fn runs_page(ids: &[i64]) -> Value {
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
pub(super) fn highlighted(app: &App) -> String {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
    term.draw(|f| crate::console::views::draw(f, app)).unwrap();
    let buf = term.backend().buffer();
    for y in 0..buf.area.height {
        let cells: Vec<_> = (0..buf.area.width).map(|x| &buf[(x, y)]).collect();
        let reversed = cells
            .iter()
            .any(|c| c.modifier.contains(ratatui::style::Modifier::REVERSED) && c.symbol() == "#");
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

pub(super) fn screen(app: &App, w: u16, h: u16) -> String {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| crate::console::views::draw(f, app)).unwrap();
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

pub(super) fn chord(app: &mut App, c: char, m: KeyModifiers) -> Vec<Effect> {
    update(app, Msg::Key(KeyEvent::new(KeyCode::Char(c), m)))
}

pub(super) fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// The first page of runs, as `runs.list` answers it.
pub(super) fn runs_reply(app: &mut App, page: Value) -> Vec<Effect> {
    update(
        app,
        Msg::Reply(
            Tag::Runs {
                append: false,
                generation: 0,
            },
            Ok(page),
        ),
    )
}

/// The approvals view with approval #3 pending, and its reject dialog open.
pub(super) fn open_reject(app: &mut App) {
    let list = json!([{"id": 3, "run": 7, "node": "gate", "state": "pending", "requested_at": 1}]);
    update(app, Msg::Reply(Tag::Approvals { pending: true }, Ok(list)));
    press(app, KeyCode::Char('3'));
    press(app, KeyCode::Char('x'));
}
