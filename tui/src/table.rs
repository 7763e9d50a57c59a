//! Aligned text tables that fit the terminal (80 columns by default): the
//! last flexible column is cut with an ellipsis. Widths are display columns
//! (`unicode-width`): a CJK character or an emoji takes two, a combining mark none.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Renders rows under a header, at most `width` columns wide.
pub fn render(header: &[&str], rows: &[Vec<String>], width: usize) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(one_line(cell).width());
        }
    }
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    // Shrink the widest columns until the table fits (never below the header or 6).
    while total(&widths) > width {
        let Some((i, _)) = widths
            .iter()
            .enumerate()
            .filter(|(i, w)| **w > header[*i].width().max(6))
            .max_by_key(|(_, w)| **w)
        else {
            break;
        };
        widths[i] -= 1;
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate().take(cols) {
            if i > 0 {
                text.push_str("  ");
            }
            let cut = fit(cell, widths[i]);
            text.push_str(&cut);
            if i + 1 < cols {
                // Padded by display width: `{:<w$}` would count characters.
                text.push_str(&" ".repeat(widths[i].saturating_sub(cut.width())));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

/// A cell on one line.
fn one_line(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.contains('\n') {
        cell.replace('\n', " ").into()
    } else {
        cell.into()
    }
}

/// The cell in at most `width` columns: cut with `…` when longer.
fn fit(cell: &str, width: usize) -> String {
    let cell = one_line(cell);
    if cell.width() <= width {
        return cell.into_owned();
    }
    // Room for the ellipsis (one column); a wide character that would not fit is left out whole.
    let room = width.saturating_sub(1);
    let mut s = String::new();
    let mut used = 0;
    for c in cell.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > room {
            break;
        }
        used += w;
        s.push(c);
    }
    s.push('…');
    s
}

/// A timestamp (ms) as local `MM-DD HH:MM:SS`.
pub fn time(ms: Option<i64>) -> String {
    ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// A duration between two timestamps (ms), e.g. `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn duration(from: Option<i64>, to: Option<i64>) -> String {
    let (Some(a), Some(b)) = (from, to) else {
        return "-".into();
    };
    let ms = (b - a).max(0);
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_eighty_columns() {
        let rows = vec![vec!["1".into(), "x".repeat(200), "ok".into()]];
        let out = render(&["ID", "PIPELINE", "STATE"], &rows, 80);
        assert!(out.lines().all(|l| l.width() <= 80), "{out}");
        assert!(out.contains('…'));
    }

    #[test]
    fn wide_characters_take_two_columns_in_widths_padding_and_cuts() {
        let rows = vec![
            vec!["1".into(), "日本語のパイプライン".into(), "ok".into()],
            vec!["2".into(), "deploy 🚀".into(), "ok".into()],
            vec!["3".into(), "plain".into(), "ok".into()],
        ];
        let out = render(&["ID", "PIPELINE", "STATE"], &rows, 80);
        // The last column starts at the same display column on every line.
        let starts: Vec<usize> = out
            .lines()
            .map(|l| {
                let at = l.rfind("  ").expect("a gap before the last column") + 2;
                l[..at].width()
            })
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}\n{out}");
        // "日本語のパイプライン" is 10 characters and 20 columns wide.
        assert_eq!(starts[0], 2 + 2 + 20 + 2, "{out}");
        // Cut to fit: never wider than asked, a wide character never split.
        let narrow = render(&["ID", "PIPELINE", "STATE"], &rows, 20);
        assert!(narrow.lines().all(|l| l.width() <= 20), "{narrow}");
        assert!(narrow.contains("日本語の…  ok"), "{narrow}");
        assert_eq!(fit("日本語", 4), "日…");
        assert_eq!(fit("🚀🚀", 3), "🚀…");
        assert_eq!(fit("🚀", 2), "🚀");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Some(0), Some(850)), "850ms");
        assert_eq!(duration(Some(0), Some(12_345)), "12.3s");
        assert_eq!(duration(Some(0), Some(245_000)), "4m05s");
        assert_eq!(duration(None, Some(1)), "-");
    }
}
