//! Metrics: throughput over the last hour, success rate, duration
//! percentiles per pipeline, queue depth, active and waiting runs, limit
//! refusals, and per-user usage when the daemon offers it.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Sparkline, Table};

use super::{Tier, block, duration, theme};
use crate::console::app::App;

/// Draws the metrics view.
pub fn draw(frame: &mut Frame, app: &App, area: Rect, tier: Tier) {
    let t = theme(app);
    let Some(m) = &app.metrics else {
        frame.render_widget(
            Paragraph::new(Line::styled("loading metrics…", t.dim()))
                .block(block(app, "Metrics".into())),
            area,
        );
        return;
    };
    let spark_h = if tier == Tier::Split { 6 } else { 4 };
    let [started, finished, figures, bottom] = Layout::vertical([
        Constraint::Length(spark_h),
        Constraint::Length(spark_h),
        Constraint::Length(if area.width >= 100 { 3 } else { 4 }),
        Constraint::Min(3),
    ])
    .areas(area);
    let peak = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let last = |v: &[u64]| v.last().copied().unwrap_or(0);
    for (rect, name, series) in [
        (started, "started", &m.started_per_minute),
        (finished, "finished", &m.finished_per_minute),
    ] {
        // The newest minutes on the right; only as many as fit.
        let width = rect.width.saturating_sub(2) as usize;
        let data: Vec<u64> = series
            .iter()
            .skip(series.len().saturating_sub(width))
            .copied()
            .collect();
        let title = format!(
            "Runs {name} per minute, last {} min · now {} · peak {}",
            series.len(),
            last(series),
            peak(series)
        );
        let mut spark = Sparkline::default().data(&data).block(block(app, title));
        if !t.mono {
            spark = spark.style(t.ok());
        }
        if t.ascii {
            spark = spark.bar_set(ratatui::symbols::bar::THREE_LEVELS);
        }
        frame.render_widget(spark, rect);
    }
    let rate = m
        .success_rate
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".into());
    let figures_text = format!(
        "success (24h) {rate}{d}queued {}{d}running {}{d}waiting {}{d}approvals {}{d}limit refusals {}",
        m.queue_depth,
        m.active,
        m.waiting,
        m.approvals_pending,
        m.limit_refusals,
        d = t.dot()
    );
    frame.render_widget(
        Paragraph::new(Line::raw(figures_text))
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(block(app, "Now".into())),
        figures,
    );
    let split = tier == Tier::Split || bottom.width >= 100;
    let (durations, usage) = if split {
        let [a, b] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
            .areas(bottom);
        (a, Some(b))
    } else {
        let [a, b] = Layout::vertical([Constraint::Min(3), Constraint::Length(5)]).areas(bottom);
        (a, Some(b))
    };
    let outer = block(app, "Durations per pipeline".into());
    let inner = outer.inner(durations);
    frame.render_widget(outer, durations);
    let rows: Vec<Row> = m
        .durations
        .iter()
        .take(inner.height.saturating_sub(1) as usize)
        .map(|d| {
            Row::new(vec![
                Cell::from(d.pipeline.clone()),
                Cell::from(d.count.to_string()),
                Cell::from(duration(d.p50_ms as i64)),
                Cell::from(duration(d.p95_ms as i64)),
                Cell::from(duration(d.p99_ms as i64)),
            ])
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(10),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        )
        .header(Row::new(["PIPELINE", "RUNS", "P50", "P95", "P99"]).style(t.heading())),
        inner,
    );
    if let Some(area) = usage {
        draw_usage(frame, app, area);
    }
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
            "per-user usage: this daemon does not report it (no limits.usage)"
        } else {
            "loading usage…"
        };
        frame.render_widget(Paragraph::new(Line::styled(text, t.dim())), inner);
        return;
    };
    let rows: Vec<Row> = u
        .users
        .iter()
        .take(inner.height.saturating_sub(1) as usize)
        .map(|user| {
            let refused: u64 = user.refused_24h.values().sum();
            Row::new(vec![
                Cell::from(user.user.clone()),
                Cell::from(of(user.running, user.max_concurrent)),
                Cell::from(user.queued.to_string()),
                Cell::from(of(user.daily_runs, user.daily_runs_max)),
                Cell::from(of(user.daily_llm_tokens, user.daily_llm_tokens_max)),
                Cell::from(if refused > 0 {
                    ratatui::text::Span::styled(refused.to_string(), t.error())
                } else {
                    ratatui::text::Span::raw("0")
                }),
            ])
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(6),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(11),
                Constraint::Length(14),
                Constraint::Length(7),
            ],
        )
        .header(
            Row::new(["USER", "RUN", "QUEUE", "RUNS", "LLM TOKENS", "REFUSED"]).style(t.heading()),
        ),
        inner,
    );
}
