//! The runs table: newest first, only the visible rows built.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{Tier, block, clock, duration, fit, list_and_detail, theme};
use crate::console::app::App;

/// Column: title, width, drop priority (higher drops first).
const COLUMNS: [(&str, u16, u8); 7] = [
    ("ID", 6, 0),
    ("STATE", 12, 0),
    ("PIPELINE", 14, 0),
    ("TRIGGER", 8, 3),
    ("USER", 8, 4),
    ("STARTED", 11, 2),
    ("DURATION", 8, 1),
];

/// The columns that fit in `width`, dropping by priority.
pub fn columns_for(width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..COLUMNS.len()).collect();
    let need = |k: &[usize]| k.iter().map(|&i| COLUMNS[i].1 + 1).sum::<u16>() + 2;
    while need(&keep) > width {
        let Some(pos) = keep
            .iter()
            .enumerate()
            .filter(|(_, i)| COLUMNS[**i].2 > 0)
            .max_by_key(|(_, i)| COLUMNS[**i].2)
            .map(|(p, _)| p)
        else {
            break;
        };
        keep.remove(pos);
    }
    keep
}

/// Draws the runs view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let count = app.visible_count();
    let (list, side) = list_and_detail(area, tier, 40, count);
    let mut title = format!("Runs {count}");
    if app.runs.next.is_some() {
        title.push('+');
    }
    if !app.runs.filter.is_empty() {
        title.push_str(&format!(" · filter: {}", app.runs.filter));
    }
    if app.runs.loading {
        title.push_str(" · loading");
    }
    let outer = block(app, title);
    let inner = outer.inner(list);
    frame.render_widget(outer, list);
    let cols = columns_for(inner.width);
    let height = inner.height.saturating_sub(1) as usize;
    let start = app.runs.cursor.window(height, count);
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|&i| {
            if COLUMNS[i].0 == "PIPELINE" {
                Constraint::Min(COLUMNS[i].1)
            } else {
                Constraint::Length(COLUMNS[i].1)
            }
        })
        .collect();
    let header = Row::new(cols.iter().map(|&i| Cell::from(COLUMNS[i].0))).style(t.heading());
    let body: Vec<Row> = (start..(start + height).min(count))
        .filter_map(|i| app.visible_run(i))
        .map(|r| {
            let end = r.finished_at.unwrap_or(app.now_ms);
            let cells = cols.iter().map(|&c| match COLUMNS[c].0 {
                "ID" => Cell::from(r.id.to_string()),
                "STATE" => Cell::from(Span::styled(
                    format!("{} {}", t.run_symbol(r.state), r.state),
                    t.run_state(r.state),
                )),
                "PIPELINE" => Cell::from(r.pipeline.clone()),
                "TRIGGER" => Cell::from(r.trigger.kind.as_str()),
                "USER" => Cell::from(r.user.clone().unwrap_or_else(|| "-".into())),
                "STARTED" => Cell::from(clock(app, r.started_at.unwrap_or(r.created_at))),
                _ => Cell::from(match r.started_at {
                    Some(s) => duration(end - s),
                    None => "-".into(),
                }),
            });
            let row = Row::new(cells.collect::<Vec<_>>());
            // Highlighted by id: the very run actions target.
            if Some(r.id) == app.runs.selected_id {
                row.style(t.selected())
            } else {
                row
            }
        })
        .collect();
    if count == 0 {
        let text = if let Some(waiting) = app.waiting_for_daemon() {
            waiting
        } else if app.runs.loading {
            "loading runs…".into()
        } else if app.runs.filter.is_empty() {
            "no runs yet — trigger one from Pipelines (2, then t)".into()
        } else {
            "no runs match the filter (Esc clears it)".into()
        };
        frame.render_widget(Paragraph::new(Line::styled(text, t.dim())), inner);
    } else {
        frame.render_widget(
            Table::new(body, widths).header(header).column_spacing(1),
            inner,
        );
    }
    if let Some(side) = side {
        draw_summary(frame, app, side);
    }
}

fn draw_summary(frame: &mut Frame, app: &App, area: Rect) {
    let t = theme(app);
    let Some(r) = app.selected_run() else {
        frame.render_widget(block(app, "Run".into()), area);
        return;
    };
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("{} ", r.id), t.heading()),
            Span::raw(format!("{} v{}  ", r.pipeline, r.version.unwrap_or(0))),
            Span::styled(
                format!("{} {}", t.run_symbol(r.state), r.state),
                t.run_state(r.state),
            ),
        ]),
        Line::raw(format!(
            "trigger {} by {}",
            r.trigger.kind,
            r.user.as_deref().unwrap_or("-")
        )),
        Line::raw(format!("accepted {}", clock(app, r.created_at))),
    ];
    if let Some(s) = r.started_at {
        lines.push(Line::raw(format!(
            "ran {} from {}",
            duration(r.finished_at.unwrap_or(app.now_ms) - s),
            clock(app, s)
        )));
    }
    if let Some(of) = r.retry_of {
        lines.push(Line::raw(format!("retry of {of}")));
    }
    if let Some(e) = &r.error {
        lines.push(Line::styled(fit(e, width * 3, t.ascii), t.error()));
    }
    let p = Paragraph::new(lines)
        .block(block(app, format!("Run {}", r.id)))
        .wrap(ratatui::widgets::Wrap { trim: false })
        .style(Style::new());
    frame.render_widget(p, area);
}
