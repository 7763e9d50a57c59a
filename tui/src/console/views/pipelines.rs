//! Pipelines: enabled, triggers, next fire, last result; files the daemon
//! rejected are highlighted with their problems below.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};

use super::{Tier, block, fit, theme};
use crate::console::app::App;

/// Draws the pipelines view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let errors = &app.pipelines.errors;
    let err_height = if errors.is_empty() {
        0
    } else {
        (errors.len() as u16 + 2).min(if tier == Tier::Compact { 4 } else { 8 })
    };
    let [list, errs] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(err_height)]).areas(area);
    let outer = block(app, format!("Pipelines {}", app.pipelines.rows.len()));
    let inner = outer.inner(list);
    frame.render_widget(outer, list);
    let height = inner.height.saturating_sub(1) as usize;
    let rows = &app.pipelines.rows;
    let start = app.pipelines.cursor.window(height, rows.len());
    let wide = inner.width >= 100;
    let body: Vec<Row> = rows
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, p)| {
            let broken = errors
                .iter()
                .any(|d| d.file.to_string_lossy() == p.source.as_str());
            let name = if broken {
                Span::styled(format!("! {}", p.name), t.error())
            } else {
                Span::raw(p.name.clone())
            };
            let enabled = match (p.enabled, p.present) {
                (_, false) => Span::styled("removed", t.dim()),
                (true, true) => Span::styled(if t.ascii { "+ on" } else { "✓ on" }, t.ok()),
                (false, true) => Span::styled(if t.ascii { "x off" } else { "✗ off" }, t.error()),
            };
            let next = p
                .next_fire
                .as_deref()
                .map(|t| short_time(app, t))
                .unwrap_or_else(|| "-".into());
            let last = match (p.last_state, p.last_run) {
                (Some(s), Some(r)) => {
                    Span::styled(format!("{} {s} {r}", t.run_symbol(s)), t.run_state(s))
                }
                _ => Span::styled("never run", t.dim()),
            };
            let mut cells = vec![
                Cell::from(name),
                Cell::from(enabled),
                Cell::from(fit(
                    &p.triggers.join(", "),
                    if wide { 34 } else { 16 },
                    t.ascii,
                )),
                Cell::from(next),
                Cell::from(last),
            ];
            if wide {
                cells.push(Cell::from(p.description.clone().unwrap_or_default()));
            }
            let row = Row::new(cells);
            if i == app.pipelines.cursor.selected {
                row.style(t.selected())
            } else {
                row
            }
        })
        .collect();
    let mut header = vec!["NAME", "ENABLED", "TRIGGERS", "NEXT FIRE", "LAST"];
    let mut widths = vec![
        Constraint::Min(12),
        Constraint::Length(8),
        Constraint::Length(if wide { 34 } else { 16 }),
        Constraint::Length(14),
        Constraint::Length(18),
    ];
    if wide {
        header.push("DESCRIPTION");
        widths.push(Constraint::Min(10));
    }
    if rows.is_empty() {
        frame.render_widget(Paragraph::new(Line::styled("no pipelines", t.dim())), inner);
    } else {
        frame.render_widget(
            Table::new(body, widths).header(Row::new(header).style(t.heading())),
            inner,
        );
    }
    if err_height > 0 {
        let lines: Vec<Line> = errors
            .iter()
            .map(|d| {
                Line::styled(
                    format!(
                        "{}:{}:{}: {}",
                        d.file.display(),
                        d.line.unwrap_or(0),
                        d.column.unwrap_or(0),
                        d.message
                    ),
                    t.error(),
                )
            })
            .collect();
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(block(app, format!("Config errors {}", errors.len()))),
            errs,
        );
    }
}

/// An RFC 3339 fire time as the console shows times (clock today, date otherwise).
fn short_time(app: &App, rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => super::clock(app, t.as_millisecond()),
        Err(_) => rfc3339.chars().take(16).collect(),
    }
}
