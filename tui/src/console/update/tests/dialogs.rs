//! Dialogs: what it takes to send a state-changing call, and what is never lost.

use super::*;

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
    assert_eq!(*method, m::RunsRetry::NAME);
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
    let hello = json!({"protocol": "1.0", "daemon_version": "0.1.0", "user": "u", "role": "admin"});
    update(
        &mut app,
        Msg::Conn(ConnEvent::Connected(serde_json::from_value(hello).unwrap())),
    );
    assert!(app.disabled_reason(Action::Retry).is_some());
    let fx = update(&mut app, Msg::Conn(ConnEvent::Synced));
    assert!(calls(&fx).contains(&m::RunsList::NAME), "resynchronised");
    assert!(!app.stale);
    assert!(app.disabled_reason(Action::Retry).is_none());
}

#[test]
fn a_reject_needs_a_reason() {
    let mut app = app_as("operator", false);
    open_reject(&mut app);
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
    assert_eq!(*method, m::ApprovalsDecide::NAME);
    assert_eq!(params["approve"], false);
    assert_eq!(params["reason"], "not today");
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
    assert_eq!(calls(&fx), [m::PipelinesTrigger::NAME]);
    let Some(Effect::Call { params, .. }) = fx.first() else {
        panic!()
    };
    assert_eq!(params["inputs"]["n"], json!(2));
    assert_eq!(params["inputs"]["who"], json!("world"), "{params}");
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
    assert_eq!(calls(&fx), [m::RunsList::NAME]);

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
        [m::PipelinesTrigger::NAME]
    );
    assert!(app.overlay.is_none());
    // The same in the approve and reject dialogs: a reason that goes on
    // after Enter ("yes, tested") neither approves nor cancels.
    let list = json!([{"id": 3, "run": 7, "node": "gate", "state": "pending", "requested_at": 1}]);
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
    assert_eq!(calls(&fx), [m::ApprovalsDecide::NAME]);
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
    open_reject(&mut app);
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
    runs_reply(&mut app, page);
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
    runs_reply(&mut app, page);
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
