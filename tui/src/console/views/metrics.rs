//! Metrics: throughput over the last hour, success rate, duration
//! percentiles per pipeline, queue depth, active and waiting runs, limit
//! refusals, and per-user usage when the daemon offers it.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Sparkline, Table};

use super::{Col, Tier, block, duration, fit, fit_columns, more_marker, rows_with_more, theme};
use crate::console::app::App;
use sluice_shared::protocol::MetricsResult;

/// Draws the metrics view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let Some(m) = &app.metrics else {
        let text = app
            .waiting_for_daemon()
            .unwrap_or_else(|| "loading metrics…".into());
        frame.render_widget(
            Paragraph::new(Line::styled(text, t.dim()))
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(block(app, "Metrics".into())),
            area,
        );
        return;
    };
    // The tables come first: the figures, then every pipeline's durations and
    // every user's usage; the sparklines get the rows left (two, one or none).
    let figures_h = if area.width >= 100 { 3 } else { 4 };
    let side_by_side = tier == Tier::Split || area.width >= 100;
    let durations_need = m.durations.len().max(1) as u16 + 3;
    let usage_need = match &app.usage {
        Some(u) => u.users.len().max(1) as u16 + 3,
        None => 3,
    };
    let bottom_need = if side_by_side {
        durations_need.max(usage_need)
    } else {
        durations_need + usage_need
    };
    let spark_max = if tier == Tier::Split { 6 } else { 4 };
    let spare = area.height.saturating_sub(figures_h + bottom_need);
    let sparks: u16 = if spare >= 8 {
        2
    } else if spare >= 3 {
        1
    } else {
        0
    };
    let spark_h = spare.checked_div(sparks).unwrap_or(0).min(spark_max);
    let [spark_area, figures, bottom] = Layout::vertical([
        Constraint::Length(spark_h * sparks),
        Constraint::Length(figures_h),
        Constraint::Min(0),
    ])
    .areas(area);
    draw_sparklines(frame, app, m, spark_area, sparks, spark_h);
    draw_figures(frame, app, m, figures);
    let (durations, usage) = if side_by_side {
        let [a, b] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
            .areas(bottom);
        (a, b)
    } else {
        // Usage keeps its rows when durations have theirs; both shrink evenly otherwise.
        let usage_h = if bottom.height >= bottom_need {
            bottom.height - durations_need
        } else {
            (bottom.height / 2).max(bottom.height.saturating_sub(durations_need))
        };
        let [a, b] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(usage_h)]).areas(bottom);
        (a, b)
    };
    draw_durations(frame, app, m, durations);
    draw_usage(frame, app, usage);
}

fn of(n: u64, max: Option<u64>) -> String {
    match max {
        Some(m) => format!("{n}/{m}"),
        None => n.to_string(),
    }
}

fn draw_usage(frame: &mut Frame, app: &App, area: Rect) {
    let t = theme(app);
    let outer = block(app, "Usage per user (today)".into());
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let Some(u) = &app.usage else {
        let text = if app.usage_unavailable {
            "per-user usage: this daemon does not report it (no limits.usage)".to_string()
        } else {
            app.waiting_for_daemon()
                .unwrap_or_else(|| "loading usage…".into())
        };
        frame.render_widget(
            Paragraph::new(Line::styled(text, t.dim())).wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    };
    let columns = [
        Col::flex("USER", 6, 0),
        Col::fixed("RUNNING", 7, 3),
        Col::fixed("QUEUED", 6, 4),
        Col::fixed("RUNS TODAY", 10, 0),
        Col::fixed("TOKENS TODAY", 14, 2),
        Col::fixed("REFUSED 24H", 11, 1),
    ];
    draw_fitted_table(frame, app, inner, &columns, &u.users, |user, title| {
        let refused: u64 = user.refused_24h.values().sum();
        match title {
            "USER" => Cell::from(user.user.clone()),
            "RUNNING" => Cell::from(of(user.running, user.max_concurrent)),
            "QUEUED" => Cell::from(user.queued.to_string()),
            "RUNS TODAY" => Cell::from(of(user.daily_runs, user.daily_runs_max)),
            "TOKENS TODAY" => Cell::from(of(user.daily_llm_tokens, user.daily_llm_tokens_max)),
            _ => Cell::from(if refused > 0 {
                ratatui::text::Span::styled(refused.to_string(), t.error())
            } else {
                ratatui::text::Span::raw("0")
            }),
        }
    });
}

/// The runs-per-minute sparklines: two, one combined, or none.
fn draw_sparklines(
    frame: &mut Frame,
    app: &App,
    m: &MetricsResult,
    spark_area: Rect,
    sparks: u16,
    spark_h: u16,
) {
    let t = theme(app);
    let peak = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let last = |v: &[u64]| v.last().copied().unwrap_or(0);
    let series: Vec<(Rect, String, &Vec<u64>)> = match sparks {
        2 => {
            let [a, b] = Layout::vertical([Constraint::Length(spark_h); 2]).areas(spark_area);
            [
                (a, "started", &m.started_per_minute),
                (b, "finished", &m.finished_per_minute),
            ]
            .into_iter()
            .map(|(r, name, s)| {
                (
                    r,
                    format!(
                        "Runs {name} per minute, last {} min · now {} · peak {}",
                        s.len(),
                        last(s),
                        peak(s)
                    ),
                    s,
                )
            })
            .collect()
        }
        1 => vec![(
            spark_area,
            format!(
                "Runs started/min, last {} min · now {} · peak {} · finished now {} · peak {}",
                m.started_per_minute.len(),
                last(&m.started_per_minute),
                peak(&m.started_per_minute),
                last(&m.finished_per_minute),
                peak(&m.finished_per_minute)
            ),
            &m.started_per_minute,
        )],
        _ => Vec::new(),
    };
    for (rect, title, series) in series {
        // The newest minutes on the right; only as many as fit.
        let width = rect.width.saturating_sub(2) as usize;
        let data: Vec<u64> = series
            .iter()
            .skip(series.len().saturating_sub(width))
            .copied()
            .collect();
        let mut spark = Sparkline::default()
            .data(&data)
            .block(block(app, fit(&title, width, t.ascii)));
        if !t.mono {
            spark = spark.style(t.ok());
        }
        if t.ascii {
            spark = spark.bar_set(ratatui::symbols::bar::THREE_LEVELS);
        }
        frame.render_widget(spark, rect);
    }
}

/// The "Now" figures: success rate, queue, running, waiting, approvals, refusals, workers.
fn draw_figures(frame: &mut Frame, app: &App, m: &MetricsResult, figures: Rect) {
    let t = theme(app);
    let rate = m
        .success_rate
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into());
    // Depth against the bound, when the daemon says what the bound is.
    let queued = if m.queue_max > 0 {
        format!("{}/{}", m.queue_depth, m.queue_max)
    } else {
        m.queue_depth.to_string()
    };
    // Daemons before protocol 1.2 say nothing of workers.
    let workers = if m.workers > 0 {
        format!("{}workers {}/{} busy", t.dot(), m.workers_busy, m.workers)
    } else {
        String::new()
    };
    let figures_text = format!(
        "success (24h) {rate}{d}queued {}{d}running {}{d}waiting {}{d}approvals {}{d}limit refusals {}{}",
        queued,
        m.active,
        m.waiting,
        m.approvals_pending,
        m.limit_refusals,
        workers,
        d = t.dot()
    );
    frame.render_widget(
        Paragraph::new(Line::raw(figures_text))
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(block(app, "Now".into())),
        figures,
    );
}

/// The per-pipeline duration percentiles table.
fn draw_durations(frame: &mut Frame, app: &App, m: &MetricsResult, durations: Rect) {
    let outer = block(app, "Durations per pipeline".into());
    let inner = outer.inner(durations);
    frame.render_widget(outer, durations);
    let columns = [
        Col::flex("PIPELINE", 10, 0),
        Col::fixed("RUNS", 5, 4),
        Col::fixed("P50", 7, 2),
        Col::fixed("P95", 7, 0),
        Col::fixed("P99", 7, 3),
    ];
    draw_fitted_table(
        frame,
        app,
        inner,
        &columns,
        &m.durations,
        |d, title| match title {
            "PIPELINE" => Cell::from(d.pipeline.clone()),
            "RUNS" => Cell::from(d.count.to_string()),
            "P50" => Cell::from(duration(d.p50_ms as i64)),
            "P95" => Cell::from(duration(d.p95_ms as i64)),
            _ => Cell::from(duration(d.p99_ms as i64)),
        },
    );
}

/// A table of `items` in `inner`: the columns that fit, the rows that fit and
/// a line counting the rest; `cell` gives an item's cell of a column (by title).
fn draw_fitted_table<T>(
    frame: &mut Frame,
    app: &App,
    inner: Rect,
    columns: &[Col],
    items: &[T],
    cell: impl Fn(&T, &str) -> Cell<'static>,
) {
    let t = theme(app);
    let keep = fit_columns(columns, inner.width);
    let room = inner.height.saturating_sub(1) as usize;
    let shown = rows_with_more(items.len(), room);
    let mut rows: Vec<Row> = items
        .iter()
        .take(shown)
        .map(|item| Row::new(keep.iter().map(|&c| cell(item, columns[c].title))))
        .collect();
    if let Some(more) = more_marker(items.len(), shown) {
        rows.push(Row::new(vec![Cell::from(more)]).style(t.dim()));
    }
    let widths: Vec<Constraint> = keep.iter().map(|&c| columns[c].constraint()).collect();
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(keep.iter().map(|&c| columns[c].title)).style(t.heading())),
        inner,
    );
}
