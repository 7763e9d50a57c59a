//! Aligned text tables that fit the terminal (80 columns by default): the
//! last flexible column is cut with an ellipsis.

/// Renders rows under a header, at most `width` columns wide.
pub fn render(header: &[&str], rows: &[Vec<String>], width: usize) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    // Shrink the widest columns until the table fits (never below the header or 6).
    while total(&widths) > width {
        let Some((i, _)) = widths
            .iter()
            .enumerate()
            .filter(|(i, w)| **w > header[*i].chars().count().max(6))
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
            if i + 1 == cols {
                text.push_str(&cut);
            } else {
                text.push_str(&format!("{cut:<w$}", w = widths[i]));
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

fn fit(cell: &str, width: usize) -> String {
    let cell = cell.replace('\n', " ");
    if cell.chars().count() <= width {
        return cell;
    }
    let mut s: String = cell.chars().take(width.saturating_sub(1)).collect();
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
        assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
        assert!(out.contains('…'));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Some(0), Some(850)), "850ms");
        assert_eq!(duration(Some(0), Some(12_345)), "12.3s");
        assert_eq!(duration(Some(0), Some(245_000)), "4m05s");
        assert_eq!(duration(None, Some(1)), "-");
    }
}
