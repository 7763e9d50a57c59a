//! Pure view functions: each draws a part of the screen from `&App` and
//! nothing else (no clock, no I/O), so snapshots are reproducible.

mod approvals;
mod audit;
mod help;
mod metrics;
mod pipelines;
mod run_detail;
mod runs;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::app::{App, Conn, Overlay, PromptKind, View};
use super::keymap::{Action, Scope};
use super::theme::Theme;

/// The smallest screen drawn normally.
pub const MIN_SIZE: (u16, u16) = (40, 12);

/// How much room there is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// 120×40 and up: side-by-side panes.
    Split,
    /// 80×24 and up: one pane over another.
    Full,
    /// Smaller: columns dropped by priority.
    Compact,
}

impl Tier {
    /// The tier of an area.
    pub fn of(area: Rect) -> Self {
        if area.width >= 120 && area.height >= 40 {
            Tier::Split
        } else if area.width >= 80 && area.height >= 24 {
            Tier::Full
        } else {
            Tier::Compact
        }
    }
}

/// The theme of an app.
pub fn theme(app: &App) -> Theme {
    Theme {
        mono: app.opts.mono,
        ascii: app.opts.ascii,
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let t = theme(app);
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = vec![
            Line::styled("too small:", t.warn()),
            Line::raw(format!("need {}×{}", MIN_SIZE.0, MIN_SIZE.1)),
            Line::raw(format!("have {}×{}", area.width, area.height)),
        ];
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    // A message gets its own line above the keys, so the keys stay in view.
    let footer_h = if footer_message(app).is_some() { 2 } else { 1 };
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(footer_h),
    ])
    .areas(area);
    draw_header(frame, app, header);
    draw_tabs(frame, app, tabs);
    let tier = Tier::of(area);
    match app.view {
        View::Runs => runs::draw(frame, app, body, tier),
        View::Detail => run_detail::draw(frame, app, body, tier),
        View::Approvals => approvals::draw(frame, app, body, tier),
        View::Pipelines => pipelines::draw(frame, app, body, tier),
        View::Metrics => metrics::draw(frame, app, body, tier),
        View::Audit => audit::draw(frame, app, body, tier),
    }
    draw_footer(frame, app, footer);
    match &app.overlay {
        Some(Overlay::Help(scroll)) => help::draw_help(frame, app, body, *scroll),
        Some(Overlay::Dialog(d)) => help::draw_dialog(frame, app, body, d),
        _ => {}
    }
    if app.opts.ascii {
        asciify(frame.buffer_mut());
    }
}

/// `--ascii`: every symbol on screen becomes ASCII — borders, bars, arrows
/// and whatever the data holds — so a terminal without Unicode never shows
/// mojibake.
pub fn asciify(buf: &mut ratatui::buffer::Buffer) {
    for cell in buf.content.iter_mut() {
        let sym = cell.symbol();
        if sym.is_ascii() {
            continue;
        }
        let ascii = match sym {
            "─" | "━" | "═" => "-",
            "│" | "┃" | "║" => "|",
            "┌" | "┐" | "└" | "┘" | "├" | "┤" | "┬" | "┴" | "┼" | "╭" | "╮" | "╰" | "╯" => {
                "+"
            }
            "·" | "•" => ".",
            "…" => "~",
            "›" | "→" => ">",
            "‹" | "←" => "<",
            "↑" => "^",
            "↓" => "v",
            "×" => "x",
            "█" | "▇" => "#",
            "▆" | "▅" => "=",
            "▄" | "▃" => "-",
            "▂" | "▁" => ".",
            _ => "?",
        };
        cell.set_symbol(ascii);
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let t = theme(app);
    let dot = t.dot();
    let mut state = Vec::new();
    match &app.conn {
        Conn::Connecting => state.push(Span::styled("CONNECTING", t.warn())),
        Conn::Connected { synced: false, .. } => state.push(Span::styled("SYNCING", t.warn())),
        Conn::Connected { synced: true, .. } => state.push(Span::styled(
            if t.ascii {
                "connected"
            } else {
                "● connected"
            },
            t.ok(),
        )),
        Conn::Disconnected {
            since_ms,
            retry_at_ms,
            ..
        } => {
            let down = (app.now_ms - since_ms).max(0) / 1000;
            let retry = ((retry_at_ms - app.now_ms).max(0) + 999) / 1000;
            let text = if retry > 0 {
                format!("DISCONNECTED {down}s{dot}retry in {retry}s")
            } else {
                format!("DISCONNECTED {down}s{dot}retrying")
            };
            state.push(Span::styled(text, t.warn()));
        }
    }
    if app.stale {
        state.push(Span::raw(dot));
        state.push(Span::styled("data stale", t.warn()));
    }
    if let Conn::Connected { hello, .. } = &app.conn {
        state.push(Span::raw(dot));
        state.push(Span::raw(format!(
            "{} ({})",
            hello.user,
            hello.role.as_str()
        )));
    }
    if app.opts.readonly {
        state.push(Span::raw(dot));
        state.push(Span::styled("read-only", t.warn()));
    }
    // The daemon's name goes first when there is room; the connection state and
    // the user always fit.
    let used: usize = state.iter().map(|s| s.width()).sum::<usize>() + 6 + 2 * dot.chars().count();
    let room = (area.width as usize).saturating_sub(used);
    let daemon = match &app.conn {
        Conn::Connected { hello, .. } => {
            format!("sluiced {} @ {}", hello.daemon_version, app.opts.daemon)
        }
        _ => app.opts.daemon.clone(),
    };
    let daemon = if daemon.chars().count() <= room {
        daemon
    } else if app.opts.daemon.chars().count() <= room {
        app.opts.daemon.clone()
    } else {
        // Keep the end of the path: the socket's name tells daemons apart.
        let keep = room.saturating_sub(1);
        let tail: String = app
            .opts
            .daemon
            .chars()
            .rev()
            .take(keep)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if keep == 0 {
            String::new()
        } else {
            format!("{}{tail}", if t.ascii { "~" } else { "…" })
        }
    };
    let mut spans = vec![Span::styled("sluice", t.heading()), Span::raw(dot)];
    if !daemon.is_empty() {
        spans.push(Span::raw(daemon));
        spans.push(Span::raw(dot));
    }
    spans.extend(state);
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_tabs(frame: &mut Frame, app: &App, area: Rect) {
    let t = theme(app);
    let current = match app.view {
        View::Detail => app.back.first().copied().unwrap_or(View::Runs),
        v => v,
    };
    let mut spans = Vec::new();
    for (n, v) in [
        (1, View::Runs),
        (2, View::Pipelines),
        (3, View::Approvals),
        (4, View::Metrics),
        (5, View::Audit),
    ] {
        let style = if v == current {
            t.selected()
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!(" {n} {} ", v.title()), style));
        if v == View::Approvals {
            let count = app.approvals_badge();
            if count > 0 {
                spans.push(Span::styled(format!(" {count} "), t.badge()));
            }
        }
        spans.push(Span::raw(" "));
    }
    if app.view == View::Detail
        && let Some(d) = &app.detail
    {
        spans.push(Span::styled(format!("› run {} ", d.id), t.selected()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A text field's spans in `width` columns: the text scrolled so the
/// cursor shows, the cursor as the highlighted character under it (an
/// underscore at the end), typed text escaped of control characters.
pub fn field_spans(
    field: &super::lineedit::LineEdit,
    width: usize,
    text: Style,
    cursor: Style,
) -> Vec<Span<'static>> {
    let from = field.scroll_for(width);
    let (before, under, after) = field.parts();
    let before = before.get(from..).unwrap_or_default();
    vec![
        Span::styled(crate::escape::controls(before).into_owned(), text),
        Span::styled(under.unwrap_or("_").to_owned(), cursor),
        Span::styled(crate::escape::controls(after).into_owned(), text),
    ]
}

/// The footer's message line, if any: the latest flash, or why the daemon is unreachable.
fn footer_message(app: &App) -> Option<(String, bool)> {
    if matches!(
        app.overlay,
        Some(Overlay::Command(_)) | Some(Overlay::Prompt(_))
    ) {
        return None;
    }
    match (&app.flash, &app.conn) {
        (Some(f), _) => Some((f.text.clone(), f.error)),
        (None, Conn::Disconnected { error, .. }) => Some((format!("not connected: {error}"), true)),
        _ => None,
    }
}

/// The footer: a prompt, or a message line (cut to fit) over the keys that matter here.
fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let t = theme(app);
    let mut lines = Vec::new();
    match &app.overlay {
        Some(Overlay::Command(text)) => {
            let mut spans = vec![Span::styled(":", t.key())];
            spans.extend(field_spans(
                text,
                (area.width as usize).saturating_sub(1),
                Style::new(),
                t.selected(),
            ));
            lines.push(Line::from(spans));
        }
        Some(Overlay::Prompt(p)) => {
            let label = match p.kind {
                PromptKind::Filter => "filter (pipeline:NAME, a state, or text): ",
                PromptKind::Search => "search log: ",
            };
            let label = format!("/ {label}");
            let room = (area.width as usize).saturating_sub(label.chars().count());
            let mut spans = vec![Span::styled(label, t.key())];
            spans.extend(field_spans(&p.text, room, Style::new(), t.selected()));
            lines.push(Line::from(spans));
        }
        _ => {
            if let Some((text, error)) = footer_message(app) {
                lines.push(Line::styled(
                    fit(&text, area.width as usize, t.ascii),
                    if error { t.error() } else { t.ok() },
                ));
            }
            lines.push(hints(app, area.width as usize));
        }
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// Key hints for the current view from the keymap; forbidden actions are
/// struck through. Only whole hints that fit in `width` are shown (`?` lists the rest).
fn hints(app: &App, width: usize) -> Line<'static> {
    let t = theme(app);
    let scope = app.view.scope();
    let mut spans = Vec::new();
    let mut used = 0;
    let mut add = |key: String, desc: &str, action: Action| {
        let w = Span::raw(format!("{key} {desc}")).width();
        if used + w > width {
            used = usize::MAX / 2;
            return;
        }
        used += w + 2;
        let disabled = app.disabled_reason(action).is_some();
        spans.push(Span::styled(
            key,
            if disabled { t.disabled() } else { t.key() },
        ));
        spans.push(Span::styled(
            format!(" {desc}  "),
            if disabled { t.disabled() } else { Style::new() },
        ));
    };
    for b in app.keymap.scope(Scope::Global).filter(|b| b.footer) {
        if let Some(k) = b.keys.first() {
            let desc = if b.action == Action::Back {
                if app.back.is_empty() { "quit" } else { "back" }
            } else {
                "help"
            };
            add(k.label(app.opts.ascii), desc, b.action);
        }
    }
    for b in app.keymap.scope(scope).filter(|b| b.footer) {
        if let Some(k) = b.keys.first() {
            let desc = match b.action {
                Action::FocusNext => "pane".to_string(),
                Action::HistoryTab => "pending/history".to_string(),
                a => a.name().replace('_', " "),
            };
            add(k.label(app.opts.ascii), &desc, b.action);
        }
    }
    Line::from(spans)
}

/// A bordered block with a title; marks stale data.
pub fn block(app: &App, title: String) -> Block<'static> {
    let title = if app.stale {
        format!(" {title} (stale) ")
    } else {
        format!(" {title} ")
    };
    Block::bordered().title(title)
}

/// A clock time: `HH:MM:SS` today, `MM-DD HH:MM` on other days.
pub fn clock(app: &App, ms: i64) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return "-".into();
    };
    let Ok(now) = jiff::Timestamp::from_millisecond(app.now_ms) else {
        return "-".into();
    };
    let z = ts.to_zoned(app.opts.tz.clone());
    let n = now.to_zoned(app.opts.tz.clone());
    if z.date() == n.date() {
        z.strftime("%H:%M:%S").to_string()
    } else {
        z.strftime("%m-%d %H:%M").to_string()
    }
}

/// A duration: `840ms`, `3.2s`, `4m05s`, `2h03m`, `3d04h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// Cuts `s` to `width` characters, with an ellipsis when cut.
pub fn fit(s: &str, width: usize, ascii: bool) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push(if ascii { '~' } else { '…' });
    out
}

/// Splits `area` for a list of `rows` rows and a detail pane: side by side
/// when split, stacked otherwise; on a compact screen the detail stays when
/// there are rows to spare below the list.
pub fn list_and_detail(
    area: Rect,
    tier: Tier,
    detail_size: u16,
    rows: usize,
) -> (Rect, Option<Rect>) {
    match tier {
        Tier::Split => {
            let [a, b] = Layout::horizontal([Constraint::Min(40), Constraint::Length(detail_size)])
                .areas(area);
            (a, Some(b))
        }
        Tier::Full => {
            let [a, b] = Layout::vertical([Constraint::Min(5), Constraint::Length(8)]).areas(area);
            (a, Some(b))
        }
        Tier::Compact => {
            // The list keeps its rows (border and header included, at least 5);
            // the detail takes what is left when that is a useful 5 rows or more.
            let list = (rows as u16).saturating_add(3).clamp(5, 12);
            let spare = area.height.saturating_sub(list);
            if spare >= 5 {
                let detail = spare.min(8);
                let [a, b] = Layout::vertical([Constraint::Min(list), Constraint::Length(detail)])
                    .areas(area);
                (a, Some(b))
            } else {
                (area, None)
            }
        }
    }
}

/// A table column: its title, its width, and when to drop it for room
/// (0 never; higher goes first). `flex` columns take what is left over.
#[derive(Clone, Copy, Debug)]
pub struct Col {
    /// Header.
    pub title: &'static str,
    /// Width (the minimum for a flexible column).
    pub width: u16,
    /// Drop order: 0 is never dropped, the highest goes first.
    pub drop: u8,
    /// Grows into the room left.
    pub flex: bool,
}

impl Col {
    /// A fixed-width column.
    pub const fn fixed(title: &'static str, width: u16, drop: u8) -> Self {
        Self {
            title,
            width,
            drop,
            flex: false,
        }
    }

    /// A column that grows.
    pub const fn flex(title: &'static str, width: u16, drop: u8) -> Self {
        Self {
            title,
            width,
            drop,
            flex: true,
        }
    }

    /// Its layout constraint.
    pub fn constraint(&self) -> Constraint {
        if self.flex {
            Constraint::Min(self.width)
        } else {
            Constraint::Length(self.width)
        }
    }
}

/// The indices of the columns that fit in `width` with one space between
/// them: whole columns go, by drop order, rather than values being cut.
pub fn fit_columns(cols: &[Col], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    let need = |k: &[usize]| {
        k.iter().map(|&i| cols[i].width).sum::<u16>() + k.len().saturating_sub(1) as u16
    };
    while need(&keep) > width {
        let Some(pos) = keep
            .iter()
            .enumerate()
            .filter(|(_, i)| cols[**i].drop > 0)
            .max_by_key(|(_, i)| cols[**i].drop)
            .map(|(p, _)| p)
        else {
            break;
        };
        keep.remove(pos);
    }
    keep
}

/// The widest of `values` (in columns), at least `min`, at most `max`.
pub fn natural_width<'a>(values: impl Iterator<Item = &'a str>, min: u16, max: u16) -> u16 {
    let w = values
        .map(|v| Span::raw(v).width() as u16)
        .max()
        .unwrap_or(0);
    w.clamp(min, max.max(min))
}

/// "+3 more" under a list cut short, or None when it all fits.
pub fn more_marker(total: usize, shown: usize) -> Option<String> {
    (total > shown).then(|| format!("+{} more", total - shown))
}

/// How many of `total` rows to draw in `room` rows, leaving one for a
/// "+N more" line when they do not all fit.
pub fn rows_with_more(total: usize, room: usize) -> usize {
    if total <= room {
        total
    } else {
        room.saturating_sub(1)
    }
}
