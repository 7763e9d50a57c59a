//! One run: its nodes in topological order, the selected node's output and
//! error, and its log (only the visible lines are built).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};

use super::{Col, Tier, block, clock, duration, fit, fit_columns, natural_width, theme};
use crate::console::app::{App, DetailFocus, DetailState};
use crate::console::theme::Theme;

/// Draws the run detail view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let Some(d) = &app.detail else {
        return;
    };
    let Some(run) = &d.run else {
        frame.render_widget(
            Paragraph::new(Line::styled(format!("loading run {}…", d.id), t.dim()))
                .block(block(app, format!("Run {}", d.id))),
            area,
        );
        return;
    };
    let [summary, rest] = Layout::vertical([Constraint::Length(2), Constraint::Min(3)]).areas(area);
    let r = &run.run;
    let mut head = vec![
        Span::styled(format!("{} ", r.id), t.heading()),
        Span::raw(format!("{} ", r.pipeline)),
        Span::styled(
            format!("{} {}", t.run_symbol(r.state), r.state),
            t.run_state(r.state),
        ),
        Span::raw(format!(
            "{}{} by {}",
            t.dot(),
            r.trigger.kind,
            r.user.as_deref().unwrap_or("-")
        )),
    ];
    if let Some(s) = r.started_at {
        head.push(Span::raw(format!(
            "{}{} for {}",
            t.dot(),
            clock(app, s),
            duration(r.finished_at.unwrap_or(app.now_ms) - s)
        )));
    }
    if let Some(of) = r.retry_of {
        head.push(Span::raw(format!("{}retry of {of}", t.dot())));
    }
    let second = match &r.error {
        Some(e) => Line::styled(fit(e, summary.width as usize, t.ascii), t.error()),
        None => Line::styled(format!("inputs {}", run.inputs), t.dim()),
    };
    frame.render_widget(Paragraph::new(vec![Line::from(head), second]), summary);

    let node_rows = run.nodes.len() as u16 + 3;
    let (nodes_area, info_area, log_area) = match tier {
        Tier::Split => {
            let [left, right] =
                Layout::horizontal([Constraint::Length(52), Constraint::Min(30)]).areas(rest);
            let [n, i] = Layout::vertical([
                Constraint::Length(node_rows.min(left.height / 2).max(4)),
                Constraint::Min(4),
            ])
            .areas(left);
            (n, Some(i), right)
        }
        Tier::Full => {
            let [n, i, l] = Layout::vertical([
                Constraint::Length(node_rows.min(8)),
                Constraint::Length(4),
                Constraint::Min(3),
            ])
            .areas(rest);
            (n, Some(i), l)
        }
        Tier::Compact => {
            let [n, l] =
                Layout::vertical([Constraint::Length(node_rows.min(6)), Constraint::Min(3)])
                    .areas(rest);
            (n, None, l)
        }
    };
    draw_nodes(frame, app, d, nodes_area, t);
    if let Some(info) = info_area {
        draw_node_info(frame, app, d, info, t);
    }
    draw_log(frame, app, d, log_area, t);
}

fn draw_nodes(frame: &mut Frame, app: &App, d: &DetailState, area: Rect, t: Theme) {
    let Some(run) = &d.run else { return };
    let focused = d.focus == DetailFocus::Nodes;
    let outer = block(app, format!("Nodes{}", if focused { " *" } else { "" }));
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let height = inner.height.saturating_sub(1) as usize;
    let start = d.nodes.window(height, run.nodes.len());
    // A node a retry took over from an earlier run says so instead of a time.
    let state_text = |n: &sluice_shared::protocol::NodeInfo| match n.reused_from {
        Some(from) if n.state == sluice_shared::run::NodeState::Succeeded => {
            format!("{} reused {from}", t.node_symbol(n.state))
        }
        _ => format!("{} {}", t.node_symbol(n.state), n.state),
    };
    let state_w = natural_width(
        run.nodes
            .iter()
            .map(&state_text)
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        12,
        20,
    );
    let columns = [
        Col::flex("NODE", 8, 0),
        Col::fixed("KIND", 9, 3),
        Col::fixed("STATE", state_w, 0),
        Col::fixed("TRY", 3, 2),
        Col::fixed("TIME", 7, 1),
    ];
    let keep = fit_columns(&columns, inner.width);
    let rows: Vec<Row> = run
        .nodes
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, n)| {
            let reused = n.reused_from.is_some();
            let dur = match n.started_at {
                Some(s) if !reused => duration(n.finished_at.unwrap_or(app.now_ms) - s),
                _ => "-".into(),
            };
            let cells = keep.iter().map(|&c| match columns[c].title {
                "NODE" => Cell::from(n.id.clone()),
                "KIND" => Cell::from(n.kind.clone()),
                "STATE" => Cell::from(Span::styled(state_text(n), t.node_state(n.state))),
                "TRY" => Cell::from(if reused {
                    "-".to_string()
                } else {
                    n.attempts.len().to_string()
                }),
                _ => Cell::from(dur.clone()),
            });
            let row = Row::new(cells.collect::<Vec<_>>());
            if i == d.nodes.selected {
                row.style(if focused {
                    t.selected()
                } else {
                    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                })
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(keep.iter().map(|&c| columns[c].title)).style(t.heading());
    let widths: Vec<Constraint> = keep.iter().map(|&c| columns[c].constraint()).collect();
    frame.render_widget(Table::new(rows, widths).header(header), inner);
}

fn draw_node_info(frame: &mut Frame, app: &App, d: &DetailState, area: Rect, t: Theme) {
    let Some(n) = d.run.as_ref().and_then(|r| r.nodes.get(d.nodes.selected)) else {
        return;
    };
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    if let Some(e) = &n.error {
        lines.push(Line::styled(format!("error: {e}"), t.error()));
    }
    if let Some(a) = n.attempts.last()
        && n.attempts.len() > 1
    {
        lines.push(Line::raw(format!("attempt {} {}", a.attempt, a.state)));
    }
    if let Some(from) = n.reused_from {
        lines.push(Line::raw(format!(
            "reused from run {from}: not run again by this retry"
        )));
    }
    if let Some(w) = n.wake_at {
        lines.push(Line::raw(format!("waits until {}", clock(app, w))));
    }
    match &n.output {
        Some(o) => {
            let text = serde_json::to_string(o).unwrap_or_default();
            lines.push(Line::raw(format!(
                "output: {}",
                fit(&text, width * 4, t.ascii)
            )));
        }
        None => lines.push(Line::styled("no output", t.dim())),
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(app, format!("{} ({})", n.id, n.kind))),
        area,
    );
}

fn draw_log(frame: &mut Frame, app: &App, d: &DetailState, area: Rect, t: Theme) {
    let focused = d.focus == DetailFocus::Log;
    let mut title = format!("Log {}", d.log_node.as_deref().unwrap_or("-"));
    let n = d.log.len();
    title.push_str(&format!(
        "{}{n} line{}",
        t.dot(),
        if n == 1 { "" } else { "s" }
    ));
    if d.log.dropped() > 0 {
        title.push_str(&format!(" (+{} older not kept)", d.log.dropped()));
    }
    if d.log_loading {
        title.push_str(&format!("{}loading", t.dot()));
    }
    title.push_str(&format!(
        "{}{}",
        t.dot(),
        if d.follow { "following" } else { "paused" }
    ));
    if !d.follow && d.unseen > 0 {
        title.push_str(&format!("{}{} new lines (f)", t.dot(), d.unseen));
    }
    if d.wrap {
        title.push_str(&format!("{}wrap", t.dot()));
    }
    if d.hscroll > 0 {
        title.push_str(&format!("{}col {}", t.dot(), d.hscroll + 1));
    }
    if let Some(s) = &d.search {
        title.push_str(&format!("{}/{s}", t.dot()));
    }
    if focused {
        title.push_str(" *");
    }
    let outer = block(app, title);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let height = inner.height as usize;
    if d.log.is_empty() {
        let msg = if d.log_loading {
            "loading log…"
        } else {
            "no log lines"
        };
        frame.render_widget(Paragraph::new(Line::styled(msg, t.dim())), inner);
        return;
    }
    let len = d.log.len();
    let cursor = d.log_cursor.min(len - 1);
    let start = if d.follow {
        len.saturating_sub(height)
    } else {
        (cursor + 1).saturating_sub(height)
    };
    let lines: Vec<Line> = d
        .log
        .range(start, start + height)
        .enumerate()
        .map(|(i, e)| {
            let mut spans = Vec::new();
            if d.timestamps {
                spans.push(Span::styled(
                    format!("{} ", clock_ms(app, e.at_ms)),
                    t.dim(),
                ));
            }
            match e.stream.as_str() {
                "stderr" => spans.push(Span::styled("! ", t.error())),
                "sluice" => spans.push(Span::styled("~ ", t.dim())),
                _ => spans.push(Span::raw("  ")),
            }
            // Escaped, not dropped: what a script printed stays visible, and nothing reaches the terminal raw.
            let line = crate::escape::controls(&e.line);
            let text: String = if d.wrap {
                line.into_owned()
            } else {
                line.chars()
                    .skip(d.hscroll)
                    .take(inner.width as usize + 1)
                    .collect()
            };
            push_highlighted(&mut spans, &text, d.search.as_deref(), t);
            let line = Line::from(spans);
            if start + i == cursor && (focused || !d.follow) {
                line.style(t.selected())
            } else {
                line
            }
        })
        .collect();
    let mut p = Paragraph::new(lines);
    if d.wrap {
        p = p.wrap(Wrap { trim: false });
    }
    frame.render_widget(p, inner);
}

fn clock_ms(app: &App, ms: i64) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return "-".into();
    };
    ts.to_zoned(app.opts.tz.clone())
        .strftime("%H:%M:%S%.3f")
        .to_string()
}

/// Underlines every match of the search in `text`.
fn push_highlighted(spans: &mut Vec<Span<'static>>, text: &str, needle: Option<&str>, t: Theme) {
    let Some(needle) = needle.filter(|n| !n.is_empty()) else {
        spans.push(Span::raw(text.to_string()));
        return;
    };
    let lower = text.to_lowercase();
    let n = needle.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; highlight only when it did not.
    if lower.len() != text.len() {
        spans.push(Span::raw(text.to_string()));
        return;
    }
    let mut at = 0;
    while let Some(pos) = lower[at..].find(&n) {
        let s = at + pos;
        if !text.is_char_boundary(s) || !text.is_char_boundary(s + n.len()) {
            break;
        }
        spans.push(Span::raw(text[at..s].to_string()));
        spans.push(Span::styled(text[s..s + n.len()].to_string(), t.heading()));
        at = s + n.len();
    }
    spans.push(Span::raw(text[at..].to_string()));
}
