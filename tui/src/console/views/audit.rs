//! The audit trail, newest first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{Tier, block, clock, theme};
use crate::console::app::App;

/// Draws the audit view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let outer = block(app, format!("Audit trail {}", app.audit.len()));
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    if app.audit.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("no audit rows", t.dim())),
            inner,
        );
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let start = app.audit_cursor.window(height, app.audit.len());
    let wide = tier == Tier::Split;
    let rows: Vec<Row> = app
        .audit
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, a)| {
            let mut cells = vec![
                Cell::from(a.id.to_string()),
                Cell::from(clock(app, a.at)),
                Cell::from(a.user.clone()),
                Cell::from(a.action.clone()),
                Cell::from(a.target.clone().unwrap_or_default()),
            ];
            if wide {
                cells.push(Cell::from(a.detail.to_string()));
            }
            let row = Row::new(cells);
            if i == app.audit_cursor.selected {
                row.style(t.selected())
            } else {
                row
            }
        })
        .collect();
    let mut header = vec!["ID", "AT", "USER", "ACTION", "TARGET"];
    let mut widths = vec![
        Constraint::Length(6),
        Constraint::Length(14),
        Constraint::Length(10),
        Constraint::Length(18),
        Constraint::Min(10),
    ];
    if wide {
        header.push("DETAIL");
        widths.push(Constraint::Min(20));
    }
    frame.render_widget(
        Table::new(rows, widths).header(Row::new(header).style(t.heading())),
        inner,
    );
}
