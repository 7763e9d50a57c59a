//! Keys: from a key press to an action of the keymap, and what each action does
//! to the lists, the detail view and the overlays.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use sluice_shared::method as m;
use sluice_shared::protocol::PipelineRef;

use super::command::command;
use super::dialogs::{decide_dialog, dialog_key, enable_dialog, run_action};
use super::replies::{approval_context, select_row};
use super::sync::{load_log, open_run, resync, runs_request, set_filter, switch_view};
use super::{approvals_call, call, flash, synced};
use crate::console::app::{App, DetailFocus, DialogFocus, Overlay, Prompt, PromptKind, View};
use crate::console::keymap::{Action, Key, Scope};
use crate::console::lineedit::LineEdit;
use crate::console::msg::{Effect, Tag};

pub(super) fn page(app: &App) -> isize {
    (app.size.1 as isize - 8).max(1)
}

pub(super) fn key(app: &mut App, ev: KeyEvent) -> Vec<Effect> {
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
pub(super) fn editing(app: &App) -> bool {
    match &app.overlay {
        Some(Overlay::Command(_) | Overlay::Prompt(_)) => true,
        Some(Overlay::Dialog(d)) => d.field.is_some() && d.focus == DialogFocus::Field,
        _ => false,
    }
}

/// Carries out an action of the keymap (one allowed in this state).
pub(super) fn act(app: &mut App, action: Action, k: Key) -> Vec<Effect> {
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
        Action::Back => back(app, k),
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
        Action::Open => open_selected(app),
        Action::Filter => {
            let text = app.runs.filter.clone();
            prompt(app, PromptKind::Filter, text)
        }
        Action::Search => {
            let text = app
                .detail
                .as_ref()
                .and_then(|d| d.search.clone())
                .unwrap_or_default();
            prompt(app, PromptKind::Search, text)
        }
        Action::NextMatch | Action::PrevMatch => {
            search(app, action == Action::NextMatch, true);
            Vec::new()
        }
        Action::FocusNext
        | Action::Left
        | Action::Right
        | Action::Follow
        | Action::Wrap
        | Action::Timestamps => {
            detail_view_key(app, action);
            Vec::new()
        }
        Action::Copy => copy(app),
        Action::Retry | Action::RetryAll | Action::Cancel => run_action(app, action),
        Action::Approve | Action::Reject => decide_dialog(app, action == Action::Approve),
        Action::HistoryTab => history_tab(app),
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
        Action::Enable | Action::Disable => enable_dialog(app, action == Action::Enable),
    }
}

/// Back: clears a filter, returns to the previous view, or quits (`q`, not Esc).
fn back(app: &mut App, k: Key) -> Vec<Effect> {
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

/// Enter: the selected run, an approval's run, or a pipeline's runs.
fn open_selected(app: &mut App) -> Vec<Effect> {
    match app.view {
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
    }
}

/// Opens the filter or search prompt with `text` to edit.
fn prompt(app: &mut App, kind: PromptKind, text: String) -> Vec<Effect> {
    app.overlay = Some(Overlay::Prompt(Prompt {
        kind,
        text: LineEdit::new(text),
    }));
    Vec::new()
}

/// The run detail's own keys: focus, horizontal scroll, follow, wrap, timestamps.
fn detail_view_key(app: &mut App, action: Action) {
    let half = (app.size.0 as usize / 2).max(1);
    let Some(d) = &mut app.detail else {
        return;
    };
    match action {
        Action::FocusNext => {
            d.focus = match d.focus {
                DetailFocus::Nodes => DetailFocus::Log,
                DetailFocus::Log => DetailFocus::Nodes,
            };
        }
        Action::Left => d.hscroll = d.hscroll.saturating_sub(half),
        Action::Right => d.hscroll += half,
        Action::Follow => {
            d.follow = !d.follow;
            if d.follow {
                d.log_cursor = d.log.len().saturating_sub(1);
                d.unseen = 0;
            }
        }
        Action::Wrap => d.wrap = !d.wrap,
        Action::Timestamps => d.timestamps = !d.timestamps,
        _ => {}
    }
}

/// Tab in the approvals: pending queue or history.
fn history_tab(app: &mut App) -> Vec<Effect> {
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

pub(super) fn copy(app: &mut App) -> Vec<Effect> {
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

pub(super) fn search(app: &mut App, forward: bool, step: bool) {
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

pub(super) fn move_by(app: &mut App, delta: isize) -> Vec<Effect> {
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
                    let mut c = crate::console::app::Cursor {
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

pub(super) fn paste(app: &mut App, text: &str) {
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

pub(super) fn overlay_key(app: &mut App, overlay: Overlay, ev: KeyEvent) -> Vec<Effect> {
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
pub(super) fn help_max_scroll(app: &App) -> usize {
    // Header, tabs and footer above and below the body, the box's border inside it.
    let visible = (app.size.1 as usize).saturating_sub(3 + 2);
    app.help_len().saturating_sub(visible)
}
