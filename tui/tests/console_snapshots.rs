//! Every console view at 80×24 and 120×40, with and without colour, drawn
//! from a recorded session (tests/fixtures/console/session.json: replies as
//! the daemon sends them) fed through `update` — the same path live data takes.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;
use sluice_shared::method::{self as m, Method as _};
use sluice_shared::run::RunId;
use sluice_tui::console::app::{App, DialogFocus, Options, Overlay};
use sluice_tui::console::keymap::Keymap;
use sluice_tui::console::msg::{ConnEvent, Effect, Msg, Tag};
use sluice_tui::console::update::update;
use sluice_tui::console::views::draw;

fn session() -> Value {
    serde_json::from_str(include_str!("fixtures/console/session.json")).unwrap()
}

/// The recorded session replayed into a fresh console.
fn recorded(mono: bool) -> App {
    let s = session();
    let now = s["now_ms"].as_i64().unwrap();
    let opts = Options {
        daemon: "/run/sluice/sluice.sock".into(),
        mono,
        ..Options::default()
    };
    let mut app = App::new(opts, Keymap::defaults(), now);
    let feed = |app: &mut App, msg: Msg| {
        update(app, msg);
    };
    feed(&mut app, Msg::Tick(now));
    feed(
        &mut app,
        Msg::Conn(ConnEvent::Connected(
            serde_json::from_value(s["hello"].clone()).unwrap(),
        )),
    );
    feed(&mut app, Msg::Conn(ConnEvent::Synced));
    let reply = |app: &mut App, tag: Tag, key: &str| {
        update(app, Msg::Reply(tag, Ok(s[key].clone())));
    };
    reply(&mut app, Tag::Status, "status");
    reply(
        &mut app,
        Tag::Runs {
            append: false,
            generation: 0,
        },
        "runs",
    );
    reply(&mut app, Tag::Pipelines, "pipelines");
    reply(&mut app, Tag::ConfigErrors, "config_errors");
    reply(&mut app, Tag::Approvals { pending: true }, "approvals");
    reply(
        &mut app,
        Tag::Approvals { pending: false },
        "approval_history",
    );
    reply(
        &mut app,
        Tag::ApprovalContext(RunId(45)),
        "approval_context",
    );
    reply(&mut app, Tag::Metrics, "metrics");
    reply(&mut app, Tag::Usage, "usage");
    reply(&mut app, Tag::Audit, "audit");
    app
}

fn key(app: &mut App, code: KeyCode) {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn chars(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// Opens run #43 (failed) with its log loaded.
fn with_detail(mut app: App) -> App {
    let s = session();
    update(&mut app, Msg::Tick(s["now_ms"].as_i64().unwrap()));
    chars(&mut app, ":");
    chars(&mut app, "run 43");
    key(&mut app, KeyCode::Enter);
    update(
        &mut app,
        Msg::Reply(Tag::Detail(RunId(43)), Ok(s["detail"].clone())),
    );
    let generation = app.detail.as_ref().unwrap().log_generation;
    update(
        &mut app,
        Msg::Reply(
            Tag::Logs {
                run: RunId(43),
                node: "upload".into(),
                generation,
            },
            Ok(s["logs"].clone()),
        ),
    );
    app
}

fn render(app: &mut App, w: u16, h: u16) -> String {
    update(app, Msg::Resize(w, h));
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    // Debug shows the text and every style run, so colour and mono differ.
    format!("{:?}", terminal.backend().buffer())
}

/// Builds a view's state, in colour (false) or mono (true).
type Build = Box<dyn Fn(bool) -> App>;

fn views() -> Vec<(&'static str, Build)> {
    vec![
        ("runs", Box::new(recorded)),
        ("run_detail", Box::new(|m| with_detail(recorded(m)))),
        (
            "approvals",
            Box::new(|m| {
                let mut a = recorded(m);
                chars(&mut a, "3");
                a
            }),
        ),
        (
            "approvals_history",
            Box::new(|m| {
                let mut a = recorded(m);
                chars(&mut a, "3");
                key(&mut a, KeyCode::Tab);
                update(
                    &mut a,
                    Msg::Reply(
                        Tag::Approvals { pending: false },
                        Ok(session()["approval_history"].clone()),
                    ),
                );
                a
            }),
        ),
        (
            "pipelines",
            Box::new(|m| {
                let mut a = recorded(m);
                chars(&mut a, "2");
                a
            }),
        ),
        (
            "metrics",
            Box::new(|m| {
                let mut a = recorded(m);
                chars(&mut a, "4");
                a
            }),
        ),
        (
            "audit",
            Box::new(|m| {
                let mut a = recorded(m);
                chars(&mut a, "5");
                a
            }),
        ),
        (
            "help",
            Box::new(|m| {
                let mut a = recorded(m);
                chars(&mut a, "?");
                a
            }),
        ),
        (
            "retry_dialog",
            Box::new(|m| {
                let mut a = with_detail(recorded(m));
                chars(&mut a, "r");
                a
            }),
        ),
        (
            "reject_dialog",
            Box::new(|m| {
                let mut a = recorded(m);
                // Enter in the empty field goes to Reject; Enter again asks for a reason.
                chars(&mut a, "3x");
                key(&mut a, KeyCode::Enter);
                key(&mut a, KeyCode::Enter);
                a
            }),
        ),
        (
            "disconnected",
            Box::new(|m| {
                let mut a = recorded(m);
                let now = a.now_ms;
                update(
                    &mut a,
                    Msg::Conn(ConnEvent::Disconnected {
                        error: "connection refused".into(),
                        retry_at_ms: now + 4_000,
                    }),
                );
                update(&mut a, Msg::Tick(now + 12_000));
                update(
                    &mut a,
                    Msg::Conn(ConnEvent::Disconnected {
                        error: "connection refused".into(),
                        retry_at_ms: now + 16_000,
                    }),
                );
                a
            }),
        ),
    ]
}

#[test]
fn every_view_at_both_sizes_in_colour_and_mono() {
    for (name, build) in views() {
        for mono in [false, true] {
            for (w, h) in [(80, 24), (120, 40)] {
                let mut app = build(mono);
                let shot = render(&mut app, w, h);
                let theme = if mono { "mono" } else { "colour" };
                insta::assert_snapshot!(format!("{name}_{w}x{h}_{theme}"), shot);
            }
        }
    }
}

#[test]
fn mono_never_sets_a_colour() {
    for (name, build) in views() {
        for (w, h) in [(80, 24), (120, 40), (60, 16)] {
            let mut app = build(true);
            update(&mut app, Msg::Resize(w, h));
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(f, &app)).unwrap();
            for cell in terminal.backend().buffer().content() {
                assert_eq!(
                    cell.fg,
                    ratatui::style::Color::Reset,
                    "{name} {w}x{h}: {cell:?}"
                );
                assert_eq!(
                    cell.bg,
                    ratatui::style::Color::Reset,
                    "{name} {w}x{h}: {cell:?}"
                );
            }
        }
    }
}

#[test]
fn ascii_mode_draws_only_ascii() {
    for (name, build) in views() {
        for (w, h) in [(80, 24), (120, 40)] {
            let mut app = build(false);
            app.opts.ascii = true;
            update(&mut app, Msg::Resize(w, h));
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal.draw(|f| draw(f, &app)).unwrap();
            for cell in terminal.backend().buffer().content() {
                assert!(
                    cell.symbol().is_ascii(),
                    "{name} {w}x{h}: {:?}",
                    cell.symbol()
                );
            }
        }
    }
}

#[test]
fn small_terminals_degrade_without_panicking() {
    for (name, build) in views() {
        for w in (20..=130).step_by(7) {
            for h in (4..=45).step_by(5) {
                let mut app = build(false);
                let shot = render(&mut app, w, h);
                if w < 40 || h < 12 {
                    assert!(shot.contains("too small"), "{name} {w}x{h}");
                }
            }
        }
    }
    let mut app = recorded(false);
    let shot = render(&mut app, 39, 11);
    assert!(shot.contains("too small:") && shot.contains("need 40×12"));
}

#[test]
fn columns_drop_by_priority_below_80() {
    let mut app = recorded(false);
    let shot = render(&mut app, 60, 20);
    assert!(shot.contains("PIPELINE"));
    assert!(!shot.contains("USER"));
    assert!(!shot.contains("TRIGGER"));
}

/// With colours stripped by crossterm (NO_COLOR), the selection must still be
/// drawn in reverse video: no full reset may come between it and the text.
#[test]
fn selection_stays_reversed_through_crossterm_without_colours() {
    use ratatui::backend::CrosstermBackend;
    ratatui::crossterm::style::Colored::set_ansi_color_disabled(true);
    let mut app = recorded(true);
    update(&mut app, Msg::Resize(80, 24));
    let mut out = Vec::new();
    {
        let mut terminal = Terminal::with_options(
            CrosstermBackend::new(&mut out),
            ratatui::TerminalOptions {
                viewport: ratatui::Viewport::Fixed(ratatui::layout::Rect::new(0, 0, 80, 24)),
            },
        )
        .unwrap();
        terminal.draw(|f| draw(f, &app)).unwrap();
    }
    ratatui::crossterm::style::Colored::set_ansi_color_disabled(false);
    let text = String::from_utf8_lossy(&out);
    // The selected run is the first row, #46: walk the SGR codes up to it.
    let at = text.find("#46").expect("selected row drawn");
    let mut reverse = false;
    let mut rest = &text[..at];
    while let Some(i) = rest.find("\x1b[") {
        let tail = &rest[i + 2..];
        let Some(end) = tail.find(|c: char| c.is_ascii_alphabetic()) else {
            break;
        };
        if tail.as_bytes()[end] == b'm' {
            for p in tail[..end].split(';') {
                match p {
                    "" | "0" => reverse = false,
                    "7" => reverse = true,
                    "27" => reverse = false,
                    _ => {}
                }
            }
        }
        rest = &tail[end + 1..];
    }
    assert!(reverse, "selection lost its reverse video");
}

#[test]
fn the_keys_table_in_docs_matches_the_keymap() {
    let docs = include_str!("../../docs/console.md");
    let table = Keymap::defaults().to_string();
    assert!(
        docs.contains(&table),
        "docs/console.md's keys table is out of date; paste this:\n{table}"
    );
}

/// The screen's text only, one line per row (no styles): for layout checks.
fn text(app: &mut App, w: u16, h: u16) -> String {
    update(app, Msg::Resize(w, h));
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    let buf = terminal.backend().buffer();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Below the full size whole columns go, values are never cut, the
/// approvals detail stays when there is room, and cut lists say how much is left.
#[test]
fn narrow_layouts_drop_columns_not_values() {
    for (name, keys) in [
        ("pipelines", "2"),
        ("approvals", "3"),
        ("metrics", "4"),
        ("audit", "5"),
        ("runs", "1"),
    ] {
        for (w, h) in [(60, 20), (72, 30), (100, 30)] {
            let mut app = recorded(false);
            chars(&mut app, keys);
            insta::assert_snapshot!(format!("narrow_{name}_{w}x{h}"), text(&mut app, w, h));
        }
    }
    let mut app = with_detail(recorded(false));
    insta::assert_snapshot!("narrow_run_detail_60x20", text(&mut app, 60, 20));
    // Values that matter are whole: the pending approval's deadline, the last run.
    let mut app = recorded(false);
    chars(&mut app, "3");
    let shot = text(&mut app, 60, 20);
    assert!(shot.contains("pending in 3h58m"), "{shot}");
    assert!(
        shot.contains("Approval #3"),
        "the detail pane stays: {shot}"
    );
    let mut app = recorded(false);
    chars(&mut app, "2");
    let shot = text(&mut app, 60, 20);
    assert!(shot.contains("◐ waiting #45"), "{shot}");
    // Metrics at 60×20 still lists durations and usage, or says how many are cut.
    let mut app = recorded(false);
    chars(&mut app, "4");
    let shot = text(&mut app, 60, 20);
    assert!(shot.contains("backup") && shot.contains("alice"), "{shot}");
    assert!(
        shot.contains("uptime-check") || shot.contains("more"),
        "{shot}"
    );
}

#[test]
fn a_console_that_never_connected_says_what_it_waits_for() {
    let opts = Options {
        daemon: "/run/sluice/sluice.sock".into(),
        ..Options::default()
    };
    let now = session()["now_ms"].as_i64().unwrap();
    let mut app = App::new(opts, Keymap::defaults(), now);
    update(
        &mut app,
        Msg::Conn(ConnEvent::Disconnected {
            error: "connecting to /run/sluice/sluice.sock: No such file or directory".into(),
            retry_at_ms: now + 2_000,
        }),
    );
    insta::assert_snapshot!("never_connected_runs_80x24", text(&mut app, 80, 24));
    chars(&mut app, "4");
    insta::assert_snapshot!("never_connected_metrics_80x24", text(&mut app, 80, 24));
}

#[test]
fn the_trigger_dialog_shows_where_the_focus_is() {
    let mut app = recorded(false);
    chars(&mut app, "2jj");
    let mut def = session()["pipelines"][2].clone();
    def["definition"] =
        serde_json::json!({"inputs": {"who": {"type": "string", "default": "you & me"}}});
    update(
        &mut app,
        Msg::Reply(Tag::TriggerForm("hello".into()), Ok(def)),
    );
    insta::assert_snapshot!("trigger_dialog_field_80x24", text(&mut app, 80, 24));
    key(&mut app, KeyCode::Enter);
    insta::assert_snapshot!("trigger_dialog_confirm_80x24", text(&mut app, 80, 24));
}

#[test]
fn a_reused_node_says_so() {
    let s = session();
    let mut app = recorded(false);
    chars(&mut app, ":run 43");
    key(&mut app, KeyCode::Enter);
    let mut detail = s["detail"].clone();
    detail["nodes"][0]["reused_from"] = serde_json::json!(41);
    update(&mut app, Msg::Reply(Tag::Detail(RunId(43)), Ok(detail)));
    let shot = text(&mut app, 80, 24);
    assert!(shot.contains("✓ reused #41"), "{shot}");
    insta::assert_snapshot!("reused_node_80x24", shot);
}

#[test]
fn a_message_keeps_the_keys_in_view() {
    let mut app = recorded(false);
    chars(&mut app, ":run");
    key(&mut app, KeyCode::Enter);
    let shot = text(&mut app, 80, 24);
    let lines: Vec<&str> = shot.lines().collect();
    assert!(lines[22].contains("needs a run id"), "{shot}");
    assert!(
        lines[23].contains("q quit") && lines[23].contains("? help"),
        "{shot}"
    );
}

/// The pipelines view with the trigger form open on `hello`, whose
/// definition declares `inputs`.
fn trigger_form(inputs: Value) -> App {
    let mut app = recorded(false);
    chars(&mut app, "2jjt");
    let mut def = session()["pipelines"][2].clone();
    def["definition"] = serde_json::json!({ "inputs": inputs });
    update(
        &mut app,
        Msg::Reply(Tag::TriggerForm("hello".into()), Ok(def)),
    );
    app
}

/// The form's field text, focus and error, or a panic when it is closed.
fn form(app: &App) -> (String, DialogFocus, Option<String>) {
    match &app.overlay {
        Some(Overlay::Dialog(d)) => (
            d.field.as_ref().unwrap().1.text().to_string(),
            d.focus,
            d.error.clone(),
        ),
        other => panic!("the form is not open: {other:?}"),
    }
}

/// The `pipelines.trigger` calls among `fx`, by their `inputs`.
fn triggers(fx: &[Effect]) -> Vec<Value> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Call { method, params, .. } if *method == m::PipelinesTrigger::NAME => {
                Some(params["inputs"].clone())
            }
            _ => None,
        })
        .collect()
}

fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Defaults of every type, sent unchanged, arrive as the values they are:
/// an object as an object, not as its text.
#[test]
fn trigger_form_defaults_go_back_as_their_declared_types() {
    let inputs = serde_json::json!({
        "cfg": {"type": "object", "default": {"a": 1, "b": {"c": "x y"}}},
        "tags": {"type": "array", "default": ["it's", 2]},
        "n": {"type": "integer", "default": 3},
        "ratio": {"type": "number", "default": 0.5},
        "dry": {"type": "boolean", "default": true},
        "who": {"type": "string", "default": "42"},
    });
    let mut app = trigger_form(inputs.clone());
    let shot = text(&mut app, 80, 24);
    assert!(shot.contains(r#"cfg='{"a":1,"b":{"c":"x y"}}'"#), "{shot}");
    assert!(
        shot.contains("Types: cfg object (JSON), tags array (JSON), n integer,"),
        "{shot}"
    );
    insta::assert_snapshot!("trigger_dialog_typed_defaults_80x24", shot);
    press(&mut app, KeyCode::Enter);
    let sent = triggers(&press(&mut app, KeyCode::Enter));
    let defaults: serde_json::Map<String, Value> = inputs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["default"].clone()))
        .collect();
    assert_eq!(sent, [Value::Object(defaults)]);
}

/// Each value is read as its input's type: a string stays the text typed;
/// a value that does not fit is not sent, the form stays open with the text
/// as typed and says which input expects what.
#[test]
fn trigger_form_reads_values_by_type_and_refuses_what_does_not_fit() {
    let inputs = serde_json::json!({
        "who": {"type": "string"},
        "n": {"type": "integer"},
        "cfg": {"type": "object"},
    });
    let mut app = trigger_form(inputs);
    assert_eq!(form(&app).0, "who= n= cfg=");
    // Start from an empty field.
    for _ in 0.."who= n= cfg=".len() {
        press(&mut app, KeyCode::Backspace);
    }
    chars(&mut app, "who=true n=3.5 cfg={a:1}");
    press(&mut app, KeyCode::Enter);
    assert!(triggers(&press(&mut app, KeyCode::Enter)).is_empty());
    let (field, focus, error) = form(&app);
    assert_eq!(field, "who=true n=3.5 cfg={a:1}", "the text stays as typed");
    assert_eq!(focus, DialogFocus::Field);
    assert_eq!(
        error.as_deref(),
        Some("input 'n' must be an integer (a whole number), not '3.5'")
    );
    insta::assert_snapshot!("trigger_dialog_type_error_80x24", text(&mut app, 80, 24));
    // Fixed: the next value that does not fit is named.
    for _ in 0..".5 cfg={a:1}".len() {
        press(&mut app, KeyCode::Backspace);
    }
    assert_eq!(form(&app).2, None, "the message goes once the user types");
    chars(&mut app, " cfg={a:1}");
    press(&mut app, KeyCode::Enter);
    assert!(triggers(&press(&mut app, KeyCode::Enter)).is_empty());
    let error = form(&app).2.unwrap();
    assert!(
        error.starts_with("input 'cfg' must be an object"),
        "{error}"
    );
    // Valid JSON: sent, with the string input exactly as typed.
    for _ in 0.."{a:1}".len() {
        press(&mut app, KeyCode::Backspace);
    }
    chars(&mut app, r#"'{"a":[1]}' who=042"#);
    press(&mut app, KeyCode::Enter);
    let sent = triggers(&press(&mut app, KeyCode::Enter));
    assert_eq!(
        sent,
        [serde_json::json!({"who": "042", "n": 3, "cfg": {"a": [1]}})]
    );
    assert!(app.overlay.is_none());
}

/// After Enter moves to the buttons, `y` and `n` are typing like any other
/// letter: they neither send nor cancel; Enter on the focused button does.
#[test]
fn letters_on_the_trigger_forms_buttons_neither_send_nor_cancel() {
    let mut app = trigger_form(serde_json::json!({"who": {"type": "string", "default": "x"}}));
    press(&mut app, KeyCode::Enter);
    assert_eq!(form(&app).1, DialogFocus::Confirm);
    let shot = text(&mut app, 80, 24);
    assert!(shot.contains("Enter trigger · Esc cancel"), "{shot}");
    assert!(!shot.contains("Enter/y"), "{shot}");
    assert!(triggers(&press(&mut app, KeyCode::Char('y'))).is_empty());
    assert_eq!(form(&app).0, "who=xy");
    assert_eq!(form(&app).1, DialogFocus::Field);
    // On [ Cancel ], `n` is typing too.
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(form(&app).1, DialogFocus::Cancel);
    assert!(press(&mut app, KeyCode::Char('n')).is_empty());
    assert_eq!(form(&app).0, "who=xyn");
    assert!(app.flash.is_none(), "nothing was cancelled");
    // Enter on [ Cancel ] cancels; Enter on [ Trigger ] sends.
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::BackTab);
    press(&mut app, KeyCode::Enter);
    assert!(app.overlay.is_none());
    assert!(app.flash.as_ref().unwrap().text.contains("cancelled"));
    let mut app = trigger_form(serde_json::json!({"who": {"type": "string", "default": "x"}}));
    press(&mut app, KeyCode::Enter);
    chars(&mut app, "yn");
    press(&mut app, KeyCode::Enter);
    let sent = triggers(&press(&mut app, KeyCode::Enter));
    assert_eq!(sent, [serde_json::json!({"who": "xyn"})]);
}

/// The approve and reject dialogs' reason fields follow the trigger form:
/// on their buttons the hint offers Enter, not `y`/`n`, and says typing goes
/// back into the field.
#[test]
fn the_reason_dialogs_buttons_offer_enter_not_yes_or_no() {
    for (key_char, confirm) in [('a', "approve"), ('x', "reject")] {
        let mut app = recorded(false);
        chars(&mut app, "3");
        chars(&mut app, &key_char.to_string());
        chars(&mut app, "ok");
        key(&mut app, KeyCode::Enter);
        let shot = text(&mut app, 80, 24);
        assert!(
            shot.contains(&format!("Enter {confirm} · Esc cancel · Tab move")),
            "{shot}"
        );
        assert!(shot.contains("typing edits the field"), "{shot}");
        assert!(
            !shot.contains("Enter/y") && !shot.contains("n/Esc"),
            "{shot}"
        );
        // `y` there is the reason going on, not a decision.
        assert!(press(&mut app, KeyCode::Char('y')).is_empty());
        assert!(text(&mut app, 80, 24).contains("oky_"));
    }
}

/// At 200 columns the name column stays as wide as the longest name, and
/// the room goes to the description, which is cut at a word when longer.
#[test]
fn pipelines_at_200_columns_give_the_room_to_the_description() {
    let long = "Copy the state directory to the backup host over rsync, verify every \
                checksum against the manifest, rotate the snapshots older than thirty \
                days, and page the on-call operator when any of those steps fails twice";
    let mut pipelines = session()["pipelines"].clone();
    pipelines[0]["description"] = Value::from(long);
    let mut app = recorded(false);
    update(&mut app, Msg::Reply(Tag::Pipelines, Ok(pipelines)));
    chars(&mut app, "2");
    let shot = text(&mut app, 200, 20);
    insta::assert_snapshot!("pipelines_200x20", shot);

    let header = shot
        .lines()
        .find(|l| l.contains("NAME") && l.contains("DESCRIPTION"))
        .expect("header");
    let col = |s: &str, what: &str| s[..s.find(what).unwrap()].chars().count();
    // "uptime-check" is the longest name: its width, two spaces, one column gap.
    assert_eq!(
        col(header, "ENABLED") - col(header, "NAME"),
        "uptime-check".len() + 2 + 1,
        "{shot}"
    );
    let row = shot
        .lines()
        .find(|l| l.contains("backup") && l.contains("Copy the state"))
        .expect("backup row");
    let shown = row[row.find("Copy the state").unwrap()..]
        .trim_end_matches(['│', ' '])
        .to_owned();
    let kept = shown
        .strip_suffix('…')
        .unwrap_or_else(|| panic!("not cut: {shown}"));
    assert!(long.starts_with(kept), "{kept}");
    // Cut between words: what follows in the full text is a space.
    assert_eq!(long[kept.len()..].chars().next(), Some(' '), "{shown}");
    // And most of the 200 columns went to it.
    assert!(shown.chars().count() > 80, "{shown}");
}
