//! Dialogs: confirmations of state-changing actions, their keys, and the call
//! a confirmed one sends (with an idempotency key).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;
use sluice_shared::method as m;
use sluice_shared::model::InputType;
use sluice_shared::protocol::{DecideParams, PipelineRef, RetryParams, RunRef, TriggerParams};
use sluice_shared::run::{RetryMode, RunState};

use super::flash;
use crate::console::app::{App, Dialog, DialogFocus, Overlay, PendingAction, View};
use crate::console::inputs;
use crate::console::keymap::Action;
use crate::console::lineedit::{Edited, LineEdit};
use crate::console::msg::{Effect, Tag};

/// Opens a dialog; whatever the footer said before is about something else.
pub(super) fn open_dialog(app: &mut App, d: Dialog) {
    app.flash = None;
    app.overlay = Some(Overlay::Dialog(Box::new(d)));
}

pub(super) fn idempotency_key(app: &mut App) -> String {
    app.action_counter += 1;
    format!(
        "sluice-console-{}-{}-{}",
        std::process::id(),
        app.now_ms,
        app.action_counter
    )
}

pub(super) fn run_action(app: &mut App, action: Action) -> Vec<Effect> {
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

/// "Types: who string, n integer, cfg object (JSON)." for the trigger form
/// (each value is read as its input's type), or None without inputs.
pub(super) fn input_types(declared: &[inputs::DeclaredInput]) -> Option<String> {
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

/// Closes a dialog without sending anything, and says so.
pub(super) fn dismiss(app: &mut App, d: &Dialog) -> Vec<Effect> {
    let text = match &d.action {
        PendingAction::Cancel(run) => format!("run {run} left running: nothing sent"),
        _ => "cancelled: nothing sent".to_string(),
    };
    flash(app, text, false);
    Vec::new()
}

pub(super) fn dialog_key(app: &mut App, mut d: Dialog, ev: KeyEvent) -> Vec<Effect> {
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

pub(super) fn confirm(app: &mut App, mut d: Dialog) -> Vec<Effect> {
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

/// The approve or reject dialog for the selected pending approval.
pub(super) fn decide_dialog(app: &mut App, approve: bool) -> Vec<Effect> {
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

/// The enable or disable dialog for the selected pipeline.
pub(super) fn enable_dialog(app: &mut App, enabled: bool) -> Vec<Effect> {
    let Some(p) = app.pipelines.rows.get(app.pipelines.cursor.selected) else {
        return Vec::new();
    };
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

/// The trigger form, prefilled from the pipeline's declared inputs (`pipelines.get`).
pub(super) fn trigger_form(app: &mut App, name: String, detail: &Value) {
    // Only the definition matters here: read it even when the rest of
    // the reply is of a newer shape than this console knows.
    let declared = detail.get("definition").and_then(inputs::declared);
    let text = declared
        .as_deref()
        .map(inputs::form_text)
        .unwrap_or_default();
    if let Some(reason) = app.disabled_reason(Action::Trigger) {
        flash(app, format!("trigger: {reason}"), true);
        return;
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
