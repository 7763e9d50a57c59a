//! Overlays: the `?` help listing every key from the keymap, and the
//! confirmation dialog (Cancel focused unless a text field is).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::theme;
use crate::console::app::{App, Dialog, DialogFocus};
use crate::console::keymap::Scope;

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The help overlay, scrolled by `scroll` lines.
pub fn draw_help(frame: &mut Frame, app: &App, area: Rect, scroll: usize) {
    let t = theme(app);
    let mut lines = Vec::new();
    for scope in Scope::ALL {
        let bindings: Vec<_> = app.keymap.scope(scope).collect();
        if bindings.is_empty() {
            continue;
        }
        lines.push(Line::styled(scope.name().to_string(), t.heading()));
        for b in bindings {
            let keys: Vec<String> = b.keys.iter().map(|k| k.label(app.opts.ascii)).collect();
            let disabled = app.disabled_reason(b.action);
            let mut spans = vec![
                Span::styled(format!("  {:<14}", keys.join(" ")), t.key()),
                Span::raw(b.desc.to_string()),
            ];
            if let Some(why) = disabled {
                spans.push(Span::styled(format!(" (off: {why})"), t.dim()));
            }
            lines.push(Line::from(spans));
        }
    }
    let rect = centered(area, 78, area.height);
    let visible = rect.height.saturating_sub(2) as usize;
    let scroll = scroll.min(lines.len().saturating_sub(visible));
    let title = format!(
        " Keys ({}/{}) · ↑↓ scroll · g/G first/last · Esc close ",
        scroll + 1,
        lines.len()
    );
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(
            lines
                .into_iter()
                .skip(scroll)
                .take(visible)
                .collect::<Vec<_>>(),
        )
        .block(Block::bordered().title(title)),
        rect,
    );
}

/// A confirmation dialog.
pub fn draw_dialog(frame: &mut Frame, app: &App, area: Rect, d: &Dialog) {
    let t = theme(app);
    let mut lines: Vec<Line> = d.body.iter().map(|b| Line::raw(b.clone())).collect();
    lines.push(Line::raw(""));
    if let Some((label, value)) = &d.field {
        lines.push(Line::raw(format!("{label}:")));
        // The cursor shows only where typing goes.
        let field = if d.focus == DialogFocus::Field {
            // The cursor cell in reverse video inside the highlighted field.
            let cursor = t.selected().add_modifier(
                ratatui::style::Modifier::REVERSED | ratatui::style::Modifier::UNDERLINED,
            );
            // Never scrolled: the dialog wraps a long value so all of it shows.
            Line::from(super::field_spans(value, usize::MAX, t.selected(), cursor))
        } else if value.is_empty() {
            Line::styled("(empty)", t.dim())
        } else {
            Line::styled(
                crate::escape::controls(value.text()).into_owned(),
                Style::new().add_modifier(ratatui::style::Modifier::UNDERLINED),
            )
        };
        lines.push(field);
        lines.push(Line::raw(""));
    }
    if let Some(e) = &d.error {
        lines.push(Line::styled(e.clone(), t.error()));
    }
    let button = |label: &str, focus: DialogFocus| {
        if d.focus == focus {
            Span::styled(
                format!("[ {label} ]"),
                t.selected().add_modifier(ratatui::style::Modifier::BOLD),
            )
        } else {
            Span::raw(format!("[ {label} ]"))
        }
    };
    lines.push(Line::from(vec![
        button(&d.dismiss, DialogFocus::Cancel),
        Span::raw("  "),
        button(&d.confirm, DialogFocus::Confirm),
    ]));
    let dot = t.dot();
    let confirm = d.confirm.to_lowercase();
    let dismiss = d.dismiss.to_lowercase();
    let hint = match (d.focus, d.yes_no_keys()) {
        (DialogFocus::Field, _) => format!("Enter next{dot}Tab move{dot}Esc {dismiss}"),
        (DialogFocus::Confirm, true) => {
            format!("Enter/y {confirm}{dot}n/Esc {dismiss}{dot}Tab move")
        }
        (DialogFocus::Cancel, true) => {
            format!("Enter/n/Esc {dismiss}{dot}y {confirm}{dot}Tab move")
        }
        // Letters go into the field here: only Enter acts on a button.
        (DialogFocus::Confirm, false) => {
            format!("Enter {confirm}{dot}Esc {dismiss}{dot}Tab move")
        }
        (DialogFocus::Cancel, false) => format!("Enter/Esc {dismiss}{dot}Tab move"),
    };
    let hint = match (&d.field, d.focus) {
        (None, _) | (_, DialogFocus::Field) => hint,
        (Some(_), _) => format!("{hint}{dot}typing edits the field"),
    };
    lines.push(Line::styled(hint, t.dim()));
    let inner = area.width.min(70).saturating_sub(2).max(1) as usize;
    let height = lines
        .iter()
        .map(|l| l.width().div_ceil(inner).max(1) as u16)
        .sum::<u16>()
        + 2;
    let rect = centered(area, 70, height);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" {} ", d.title))),
        rect,
    );
}
