//! Making stored text safe to show on a terminal. Node output, run errors and
//! pipeline fields come from scripts and webhook senders; written as-is, an
//! ESC or CSI in them could move the cursor, retitle the window, recolour or
//! hide what follows, or (with `\r`) overwrite the line it is on. The CLI and
//! the console both show such text through [`controls`].

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as-is: C0 controls other than
/// newline and tab, DEL, C1 controls, and the bidirectional overrides that
/// reorder what is shown.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character written as a visible escape (`\x1b`,
/// `\r`, `\u{9b}`); newlines and tabs are kept. Borrowed when nothing changes.
pub fn controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        // Writing to a String cannot fail.
        let _ = match c {
            '\r' => out.write_str("\\r"),
            c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:x}}}", c as u32),
        };
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_and_plain_text_is_untouched() {
        assert!(matches!(controls("plain text: äö ✓"), Cow::Borrowed(_)));
        assert_eq!(controls("a\tb\nc"), "a\tb\nc");
        assert_eq!(
            controls("\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(controls("ok\rFAKE"), "ok\\rFAKE");
        assert_eq!(controls("\u{0}\u{7f}\u{9b}31m"), "\\x00\\x7f\\u{9b}31m");
        assert_eq!(controls("abc\u{202e}fed"), "abc\\u{202e}fed");
        // Nothing a terminal interprets survives.
        let hostile: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        let shown = controls(&hostile);
        assert!(
            shown
                .chars()
                .all(|c| !unsafe_char(c) && (c == '\n' || c == '\t' || !c.is_control()))
        );
    }
}
