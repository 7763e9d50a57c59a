//! Approvals: the pending queue (or the decided history) and the selected
//! approval's run for context.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};

use super::{Col, Tier, block, clock, fit, fit_columns, list_and_detail, natural_width, theme};
use crate::console::app::App;

/// Draws the approvals view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let a = &app.approvals;
    let (list, side) = list_and_detail(area, tier, 52, a.rows().len());
    let title = if a.show_history {
        format!(
            "Approvals: history {} · Tab: pending ({})",
            a.history.len(),
            a.pending.len()
        )
    } else {
        format!("Approvals: pending {} · Tab: history", a.pending.len())
    };
    let outer = block(app, title);
    let inner = outer.inner(list);
    frame.render_widget(outer, list);
    let rows = a.rows();
    if rows.is_empty() {
        let text = if let Some(waiting) = app.waiting_for_daemon() {
            waiting
        } else if !a.loaded {
            "loading approvals…".into()
        } else if a.show_history {
            "no decided approvals yet".into()
        } else {
            "nothing waiting for a decision".into()
        };
        frame.render_widget(Paragraph::new(Line::styled(text, t.dim())), inner);
    } else {
        let height = inner.height.saturating_sub(1) as usize;
        let start = a.cursor.window(height, rows.len());
        let state_text = |ap: &sluice_shared::protocol::ApprovalInfo| {
            if a.show_history {
                format!(
                    "{} by {}",
                    ap.state,
                    ap.decided_by.as_deref().unwrap_or("-")
                )
            } else {
                ap.state.clone()
            }
        };
        let pipeline_of = |ap: &sluice_shared::protocol::ApprovalInfo| {
            app.run_pipelines
                .get(&ap.run)
                .cloned()
                .or_else(|| {
                    app.runs
                        .rows
                        .iter()
                        .find(|r| r.id == ap.run)
                        .map(|r| r.pipeline.clone())
                })
                .unwrap_or_default()
        };
        let shown: Vec<_> = rows.iter().enumerate().skip(start).take(height).collect();
        let states: Vec<String> = shown.iter().map(|(_, ap)| state_text(ap)).collect();
        let nodes_w = natural_width(shown.iter().map(|(_, ap)| ap.node.as_str()), 4, 16);
        let state_w = natural_width(states.iter().map(String::as_str), 5, 30);
        let requested_w = natural_width(
            shown
                .iter()
                .map(|(_, ap)| clock(app, ap.requested_at))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
            9,
            14,
        );
        // When a pending approval expires, relative (what an operator acts
        // on) and, where the row has room, the clock time too.
        let expiries: Vec<(String, String)> = shown
            .iter()
            .map(|(_, ap)| match ap.deadline {
                Some(d) => {
                    let short = expires_in(d - app.now_ms);
                    let long = format!("{short} ({})", clock(app, d));
                    (short, long)
                }
                None => ("never".to_owned(), "never".to_owned()),
            })
            .collect();
        let short_w = natural_width(expiries.iter().map(|e| e.0.as_str()), 7, 12);
        let long_w = natural_width(expiries.iter().map(|e| e.1.as_str()), 7, 28);
        let mut columns = vec![
            Col::fixed("ID", 5, 0),
            Col::fixed("RUN", 7, 3),
            Col::flex("PIPELINE", 8, 2),
            Col::fixed("NODE", nodes_w, 0),
            Col::fixed("REQUESTED", requested_w, 4),
            Col::fixed("STATE", state_w, 0),
        ];
        // Decided approvals expire no more: the history has no such column.
        let mut long = false;
        if !a.show_history {
            columns.push(Col::fixed("EXPIRES", short_w, 1));
            let with_short = fit_columns(&columns, inner.width).len();
            if let Some(c) = columns.last_mut() {
                c.width = long_w;
            }
            // The clock time only when it costs no other column.
            long = fit_columns(&columns, inner.width).len() == with_short;
            if !long && let Some(c) = columns.last_mut() {
                c.width = short_w;
            }
        }
        let keep = fit_columns(&columns, inner.width);
        let body: Vec<Row> = shown
            .iter()
            .zip(&states)
            .zip(&expiries)
            .map(|(((i, ap), last), (short, full))| {
                let state_style = match ap.state.as_str() {
                    "approved" => t.ok(),
                    "rejected" | "expired" => t.error(),
                    "pending" => t.run_state(sluice_shared::run::RunState::Waiting),
                    _ => t.dim(),
                };
                let cells = keep.iter().map(|&c| match columns[c].title {
                    "ID" => Cell::from(format!("#{}", ap.id)),
                    "RUN" => Cell::from(ap.run.to_string()),
                    "PIPELINE" => Cell::from(pipeline_of(ap)),
                    "NODE" => Cell::from(ap.node.clone()),
                    "REQUESTED" => Cell::from(clock(app, ap.requested_at)),
                    "EXPIRES" => Cell::from(if long { full.clone() } else { short.clone() }),
                    _ => Cell::from(Span::styled(last.clone(), state_style)),
                });
                let row = Row::new(cells.collect::<Vec<_>>());
                if *i == a.cursor.selected {
                    row.style(t.selected())
                } else {
                    row
                }
            })
            .collect();
        let header = Row::new(keep.iter().map(|&c| columns[c].title)).style(t.heading());
        let widths: Vec<Constraint> = keep.iter().map(|&c| columns[c].constraint()).collect();
        frame.render_widget(Table::new(body, widths).header(header), inner);
    }
    if let Some(side) = side {
        draw_context(frame, app, side);
    }
}

/// How long until a deadline `left_ms` away: `in 45s`, `in 12m`, `in 3h05m`,
/// `in 2d04h`; `now` once it is due (the daemon expires it at its next look).
fn expires_in(left_ms: i64) -> String {
    let s = (left_ms.max(0) + 999) / 1000;
    if s == 0 {
        "now".into()
    } else if s < 60 {
        format!("in {s}s")
    } else if s < 3600 {
        format!("in {}m", s / 60)
    } else if s < 86_400 {
        format!("in {}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("in {}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

fn draw_context(frame: &mut Frame, app: &App, area: Rect) {
    let t = theme(app);
    let Some(ap) = app.approvals.selected() else {
        frame.render_widget(block(app, "Approval".into()), area);
        return;
    };
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("#{} ", ap.id), t.heading()),
        Span::raw(format!("run {} node {} · {}", ap.run, ap.node, ap.state)),
    ])];
    if let Some(m) = &ap.message {
        lines.push(Line::raw(m.clone()));
    }
    if let Some(r) = &ap.reason {
        lines.push(Line::raw(format!("reason: {r}")));
    }
    match &app.approvals.context {
        Some(ctx) if ctx.run.id == ap.run => {
            let r = &ctx.run;
            lines.push(Line::from(vec![
                Span::raw(format!("{} ", r.pipeline)),
                Span::styled(
                    format!("{} {}", t.run_symbol(r.state), r.state),
                    t.run_state(r.state),
                ),
                Span::raw(format!(
                    " · {} by {}",
                    r.trigger.kind,
                    r.user.as_deref().unwrap_or("-")
                )),
            ]));
            lines.push(Line::raw(fit(
                &format!("inputs {}", ctx.inputs),
                width,
                t.ascii,
            )));
            let nodes: Vec<Span> = ctx
                .nodes
                .iter()
                .flat_map(|n| {
                    [
                        Span::styled(
                            format!("{} {}", t.node_symbol(n.state), n.id),
                            t.node_state(n.state),
                        ),
                        Span::raw("  "),
                    ]
                })
                .collect();
            lines.push(Line::from(nodes));
        }
        _ => lines.push(Line::styled("loading the run…", t.dim())),
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(app, format!("Approval #{}", ap.id))),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::expires_in;

    #[test]
    fn expiry_reads_relative_and_rounds_up() {
        assert_eq!(expires_in(-5), "now");
        assert_eq!(expires_in(0), "now");
        assert_eq!(expires_in(1), "in 1s");
        assert_eq!(expires_in(59_000), "in 59s");
        assert_eq!(expires_in(12 * 60_000 + 30_000), "in 12m");
        assert_eq!(expires_in(3 * 3_600_000 + 5 * 60_000), "in 3h05m");
        assert_eq!(expires_in(2 * 86_400_000 + 4 * 3_600_000), "in 2d04h");
    }
}
