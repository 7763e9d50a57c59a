//! Pipelines: enabled, triggers, next fire, last result; files the daemon
//! rejected are highlighted with their problems below.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{Col, Tier, block, fit, fit_columns, natural_width, theme};
use crate::console::app::App;
use sluice_shared::run::RunState;

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
    if rows.is_empty() {
        let text = app
            .waiting_for_daemon()
            .unwrap_or_else(|| "no pipelines".into());
        frame.render_widget(Paragraph::new(Line::styled(text, t.dim())), inner);
    } else {
        draw_table(frame, app, inner, height);
    }
    if err_height > 0 {
        draw_errors(frame, app, errs);
    }
}

/// The pipelines table: the rows that fit, with the columns that fit.
fn draw_table(frame: &mut Frame, app: &App, inner: Rect, height: usize) {
    let t = theme(app);
    let errors = &app.pipelines.errors;
    let rows = &app.pipelines.rows;
    let start = app.pipelines.cursor.window(height, rows.len());
    let shown: Vec<_> = rows.iter().enumerate().skip(start).take(height).collect();
    let triggers: Vec<String> = shown.iter().map(|(_, p)| p.triggers.join(", ")).collect();
    let nexts: Vec<String> = shown
        .iter()
        .map(|(_, p)| {
            p.next_fire
                .as_deref()
                .map(|t| short_time(app, t))
                .unwrap_or_else(|| "-".into())
        })
        .collect();
    let lasts: Vec<Option<(String, RunState)>> = shown
        .iter()
        .map(|(_, p)| match (p.last_state, p.last_run) {
            (Some(s), Some(r)) => Some((format!("{} {s} {r}", t.run_symbol(s)), s)),
            _ => None,
        })
        .collect();
    let names_w = natural_width(
        shown.iter().map(|(_, p)| p.name.as_str()).chain(["NAME"]),
        4,
        24,
    ) + 2;
    // Whole columns go when there is no room (description, triggers, the
    // enabled flag, the next fire), never half a value.
    let columns = [
        // Only the description grows: a wide screen shows more of it,
        // not a wider name column.
        Col::fixed("NAME", names_w, 0),
        Col::fixed("ENABLED", 7, 3),
        Col::fixed(
            "TRIGGERS",
            natural_width(
                triggers.iter().map(String::as_str).chain(["TRIGGERS"]),
                8,
                40,
            ),
            4,
        ),
        Col::fixed(
            "NEXT FIRE",
            natural_width(nexts.iter().map(String::as_str).chain(["NEXT FIRE"]), 9, 14),
            2,
        ),
        Col::fixed(
            "LAST",
            natural_width(
                lasts
                    .iter()
                    .map(|l| l.as_ref().map_or("never run", |(s, _)| s.as_str())),
                4,
                24,
            ),
            1,
        ),
        Col::flex("DESCRIPTION", 12, 5),
    ];
    let keep = fit_columns(&columns, inner.width);
    // What the description gets: the room the other columns leave.
    let desc_w =
        keep.iter()
            .filter(|&&c| columns[c].title != "DESCRIPTION")
            .fold(inner.width, |w, &c| w.saturating_sub(columns[c].width + 1)) as usize;
    let body: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(k, (i, p))| {
            // A rejected file marks its pipeline; a warning does not.
            let broken = errors
                .iter()
                .any(|d| d.is_error() && d.file.to_string_lossy() == p.source.as_str());
            let cells = keep.iter().map(|&c| match columns[c].title {
                "NAME" => Cell::from(if broken {
                    Span::styled(format!("! {}", p.name), t.error())
                } else {
                    Span::raw(p.name.clone())
                }),
                "ENABLED" => Cell::from(match (p.enabled, p.present) {
                    (_, false) => Span::styled("removed", t.dim()),
                    (true, true) => Span::styled(if t.ascii { "+ on" } else { "✓ on" }, t.ok()),
                    (false, true) => {
                        Span::styled(if t.ascii { "x off" } else { "✗ off" }, t.error())
                    }
                }),
                "TRIGGERS" => Cell::from(fit(&triggers[k], columns[c].width as usize, t.ascii)),
                "NEXT FIRE" => Cell::from(nexts[k].clone()),
                "LAST" => Cell::from(match &lasts[k] {
                    Some((text, s)) => Span::styled(text.clone(), t.run_state(*s)),
                    None => Span::styled("never run", t.dim()),
                }),
                _ => Cell::from(fit_words(
                    &crate::escape::controls(p.description.as_deref().unwrap_or_default()),
                    desc_w,
                    t.ascii,
                )),
            });
            let row = Row::new(cells.collect::<Vec<_>>());
            if *i == app.pipelines.cursor.selected {
                row.style(t.selected())
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(keep.iter().map(|&c| columns[c].title)).style(t.heading());
    // Without a description the name takes the room left.
    let described = keep.iter().any(|&c| columns[c].title == "DESCRIPTION");
    let widths: Vec<Constraint> = keep
        .iter()
        .map(|&c| match columns[c].title {
            "NAME" if !described => Constraint::Min(columns[c].width),
            _ => columns[c].constraint(),
        })
        .collect();
    frame.render_widget(Table::new(body, widths).header(header), inner);
}

/// The rejected files' problems under the table (errors first), counted when cut.
fn draw_errors(frame: &mut Frame, app: &App, errs: Rect) {
    let t = theme(app);
    let errors = &app.pipelines.errors;
    // Rejections first; one line each (cut to fit), and what does not fit
    // is counted rather than silently left out.
    let mut sorted: Vec<_> = errors.iter().collect();
    sorted.sort_by_key(|d| !d.is_error());
    let room = errs.height.saturating_sub(2) as usize;
    let width = errs.width.saturating_sub(2) as usize;
    let cut = sorted.len() > room;
    let shown = if cut { room.saturating_sub(1) } else { room };
    let mut lines: Vec<Line> = sorted
        .iter()
        .take(shown)
        .map(|d| {
            Line::styled(
                fit(&diagnostic_line(d), width, t.ascii),
                if d.is_error() { t.error() } else { t.warn() },
            )
        })
        .collect();
    if cut {
        lines.push(Line::styled(
            format!(
                "+{} more (sluice errors lists them all)",
                sorted.len() - shown
            ),
            t.dim(),
        ));
    }
    let rejected = errors.iter().filter(|d| d.is_error()).count();
    let warnings = errors.len() - rejected;
    let title = match (rejected, warnings) {
        (r, 0) => format!("Config errors {r}"),
        (0, w) => format!("Config warnings {w}"),
        (r, w) => format!("Config errors {r}{}warnings {w}", t.dot()),
    };
    frame.render_widget(Paragraph::new(lines).block(block(app, title)), errs);
}

/// `s` in `width` columns, cut at a word boundary with an ellipsis (a word
/// longer than the width is cut inside it).
fn fit_words(s: &str, width: usize, ascii: bool) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let cut = fit(s, width, ascii);
    let body: String = cut.chars().take(width.saturating_sub(1)).collect();
    match body.rfind(' ') {
        Some(i) if i > 0 => format!("{}{}", body[..i].trim_end(), if ascii { "~" } else { "…" }),
        _ => cut,
    }
}

/// `file:line:column: [warning: ]message`, the position only as far as it
/// is known (never `:0:0:`), control characters escaped.
fn diagnostic_line(d: &sluice_shared::diagnostic::Diagnostic) -> String {
    let mut text = d.file.display().to_string();
    if let Some(line) = d.line {
        text.push_str(&format!(":{line}"));
        if let Some(column) = d.column {
            text.push_str(&format!(":{column}"));
        }
    }
    text.push_str(": ");
    if !d.is_error() {
        text.push_str("warning: ");
    }
    text.push_str(&d.message);
    crate::escape::controls(&text).into_owned()
}

/// An RFC 3339 fire time as the console shows times (clock today, date otherwise).
fn short_time(app: &App, rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => super::clock(app, t.as_millisecond()),
        Err(_) => rfc3339.chars().take(16).collect(),
    }
}
