//! The audit trail, newest first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{Col, Tier, block, clock, fit_columns, natural_width, theme};
use crate::console::app::App;

/// Draws the audit view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, _tier: Tier) {
    let t = theme(app);
    let outer = block(app, format!("Audit trail {}", app.audit.len()));
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    if app.audit.is_empty() {
        let text = app
            .waiting_for_daemon()
            .unwrap_or_else(|| "no audit rows".into());
        frame.render_widget(Paragraph::new(Line::styled(text, t.dim())), inner);
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let start = app.audit_cursor.window(height, app.audit.len());
    let shown: Vec<_> = app.audit.iter().skip(start).take(height).collect();
    let ats: Vec<String> = shown.iter().map(|a| clock(app, a.at)).collect();
    let w = |vals: Vec<&str>, title: &'static str, max: u16| {
        natural_width(vals.into_iter().chain([title]), 2, max)
    };
    let ids: Vec<String> = shown.iter().map(|a| a.id.to_string()).collect();
    let columns = [
        Col::fixed(
            "ID",
            w(ids.iter().map(String::as_str).collect(), "ID", 8),
            3,
        ),
        Col::fixed(
            "AT",
            w(ats.iter().map(String::as_str).collect(), "AT", 14),
            2,
        ),
        Col::fixed(
            "USER",
            w(shown.iter().map(|a| a.user.as_str()).collect(), "USER", 12),
            1,
        ),
        Col::fixed(
            "ACTION",
            w(
                shown.iter().map(|a| a.action.as_str()).collect(),
                "ACTION",
                22,
            ),
            0,
        ),
        Col::flex(
            "TARGET",
            w(
                shown
                    .iter()
                    .map(|a| a.target.as_deref().unwrap_or(""))
                    .collect(),
                "TARGET",
                24,
            ),
            0,
        ),
        Col::flex("DETAIL", 20, 4),
    ];
    // The detail (decision, reason, target...) whenever it fits, not only when split.
    let keep = fit_columns(&columns, inner.width);
    let rows: Vec<Row> = app
        .audit
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, a)| {
            let cells = keep.iter().map(|&c| match columns[c].title {
                "ID" => Cell::from(a.id.to_string()),
                "AT" => Cell::from(clock(app, a.at)),
                "USER" => Cell::from(a.user.clone()),
                "ACTION" => Cell::from(a.action.clone()),
                "TARGET" => Cell::from(a.target.clone().unwrap_or_default()),
                _ => Cell::from(detail_text(&a.detail)),
            });
            let row = Row::new(cells.collect::<Vec<_>>());
            if i == app.audit_cursor.selected {
                row.style(t.selected())
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(keep.iter().map(|&c| columns[c].title)).style(t.heading());
    let widths: Vec<Constraint> = keep.iter().map(|&c| columns[c].constraint()).collect();
    frame.render_widget(Table::new(rows, widths).header(header), inner);
}

/// An audit row's details as `key=value` words (`decision=approve
/// reason=looks good`), control characters escaped; other JSON as it is.
fn detail_text(detail: &serde_json::Value) -> String {
    let text = match detail {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    crate::escape::controls(&text).into_owned()
}
