//! A one-line text editor for the console's fields (the runs filter, the log
//! search, the `:` command line, the dialogs' reason and trigger inputs), with
//! the readline keys an operator's fingers expect: Left/Right, Home/End,
//! Ctrl-A/E, Alt-B/F (and Ctrl-Left/Right) by word, Ctrl-U/W/K to delete to
//! the start, the word before and the end, Delete and Backspace.
//!
//! The cursor moves by grapheme cluster (an accented letter or an emoji with
//! its modifiers is one step), and its column counts display width, so wide
//! characters (CJK, emoji) put it where the terminal shows it. No crate in
//! the tree does this for ratatui 0.30 (`tui-input` and `tui-textarea` are
//! not dependencies), so this small module does.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Text and a cursor (a byte offset on a grapheme boundary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineEdit {
    text: String,
    cursor: usize,
}

/// What a key did to a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edited {
    /// The text changed.
    Changed,
    /// Only the cursor moved (or the key was an editing key with nothing to do).
    Moved,
    /// Not an editing key: the caller handles it.
    Ignored,
}

impl LineEdit {
    /// `text` with the cursor at its end.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let cursor = text.len();
        Self { text, cursor }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor's byte offset.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The cursor's column: the display width of the text before it.
    pub fn cursor_col(&self) -> usize {
        self.text[..self.cursor].width()
    }

    /// The text before the cursor, the grapheme under it (None at the end) and the rest.
    pub fn parts(&self) -> (&str, Option<&str>, &str) {
        let (before, after) = self.text.split_at(self.cursor);
        match after.graphemes(true).next() {
            Some(g) => (before, Some(g), &after[g.len()..]),
            None => (before, None, ""),
        }
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Inserts `s` at the cursor (control characters dropped) and moves past it.
    pub fn insert_str(&mut self, s: &str) {
        let clean: String = s.chars().filter(|c| !c.is_control()).collect();
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    /// Inserts one character at the cursor.
    pub fn insert(&mut self, c: char) {
        if !c.is_control() {
            self.text.insert(self.cursor, c);
            self.cursor += c.len_utf8();
        }
    }

    fn prev_boundary(&self, from: usize) -> usize {
        self.text[..from]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, from: usize) -> usize {
        self.text[from..]
            .graphemes(true)
            .next()
            .map_or(from, |g| from + g.len())
    }

    /// Start of the word before `from` (readline's Alt-B and Ctrl-W: skip
    /// spaces, then the word).
    fn word_start(&self, from: usize) -> usize {
        let mut i = from;
        let is_space = |s: &str| s.chars().all(char::is_whitespace);
        while i > 0 {
            let p = self.prev_boundary(i);
            if !is_space(&self.text[p..i]) {
                break;
            }
            i = p;
        }
        while i > 0 {
            let p = self.prev_boundary(i);
            if is_space(&self.text[p..i]) {
                break;
            }
            i = p;
        }
        i
    }

    /// End of the word after `from` (readline's Alt-F).
    fn word_end(&self, from: usize) -> usize {
        let mut i = from;
        let is_space = |s: &str| s.chars().all(char::is_whitespace);
        let len = self.text.len();
        while i < len {
            let n = self.next_boundary(i);
            if !is_space(&self.text[i..n]) {
                break;
            }
            i = n;
        }
        while i < len {
            let n = self.next_boundary(i);
            if is_space(&self.text[i..n]) {
                break;
            }
            i = n;
        }
        i
    }

    /// Deletes the grapheme before the cursor.
    pub fn backspace(&mut self) -> bool {
        if self.cursor == 0 {
            return false;
        }
        let p = self.prev_boundary(self.cursor);
        self.text.replace_range(p..self.cursor, "");
        self.cursor = p;
        true
    }

    /// Deletes the grapheme under the cursor.
    pub fn delete(&mut self) -> bool {
        let n = self.next_boundary(self.cursor);
        if n == self.cursor {
            return false;
        }
        self.text.replace_range(self.cursor..n, "");
        true
    }

    /// Applies an editing key; anything else is [`Edited::Ignored`].
    pub fn key(&mut self, ev: &KeyEvent) -> Edited {
        let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
        let alt = ev.modifiers.contains(KeyModifiers::ALT);
        let changed = |yes: bool| if yes { Edited::Changed } else { Edited::Moved };
        match ev.code {
            KeyCode::Left if ctrl || alt => self.cursor = self.word_start(self.cursor),
            KeyCode::Right if ctrl || alt => self.cursor = self.word_end(self.cursor),
            KeyCode::Left => self.cursor = self.prev_boundary(self.cursor),
            KeyCode::Right => self.cursor = self.next_boundary(self.cursor),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.text.len(),
            KeyCode::Backspace if ctrl || alt => return self.kill_word_back(),
            KeyCode::Backspace => return changed(self.backspace()),
            KeyCode::Delete => return changed(self.delete()),
            KeyCode::Char(c) if ctrl => match c.to_ascii_lowercase() {
                'a' => self.cursor = 0,
                'e' => self.cursor = self.text.len(),
                'b' => self.cursor = self.prev_boundary(self.cursor),
                'f' => self.cursor = self.next_boundary(self.cursor),
                'h' => return changed(self.backspace()),
                'd' => return changed(self.delete()),
                'u' => {
                    let any = self.cursor > 0;
                    self.text.replace_range(..self.cursor, "");
                    self.cursor = 0;
                    return changed(any);
                }
                'k' => {
                    let any = self.cursor < self.text.len();
                    self.text.truncate(self.cursor);
                    return changed(any);
                }
                'w' => return self.kill_word_back(),
                _ => return Edited::Ignored,
            },
            KeyCode::Char(c) if alt => match c.to_ascii_lowercase() {
                'b' => self.cursor = self.word_start(self.cursor),
                'f' => self.cursor = self.word_end(self.cursor),
                'd' => {
                    let end = self.word_end(self.cursor);
                    let any = end > self.cursor;
                    self.text.replace_range(self.cursor..end, "");
                    return changed(any);
                }
                _ => return Edited::Ignored,
            },
            KeyCode::Char(c) => {
                self.insert(c);
                return Edited::Changed;
            }
            _ => return Edited::Ignored,
        }
        Edited::Moved
    }

    fn kill_word_back(&mut self) -> Edited {
        let start = self.word_start(self.cursor);
        if start == self.cursor {
            return Edited::Moved;
        }
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
        Edited::Changed
    }

    /// Where to start drawing (a byte offset) so that the cursor stays
    /// visible in `width` columns.
    pub fn scroll_for(&self, width: usize) -> usize {
        // Room for the cursor cell itself.
        let room = width.saturating_sub(1);
        let mut start = 0;
        while self.text[start..self.cursor].width() > room && start < self.cursor {
            start = self.next_boundary(start);
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(e: &mut LineEdit, code: KeyCode, m: KeyModifiers) -> Edited {
        e.key(&KeyEvent::new(code, m))
    }
    const C: KeyModifiers = KeyModifiers::CONTROL;
    const A: KeyModifiers = KeyModifiers::ALT;
    const N: KeyModifiers = KeyModifiers::NONE;

    #[test]
    fn ctrl_u_and_ctrl_w_delete_instead_of_typing() {
        let mut e = LineEdit::new("p:deploy failed now");
        assert_eq!(key(&mut e, KeyCode::Char('w'), C), Edited::Changed);
        assert_eq!(e.text(), "p:deploy failed ");
        assert_eq!(key(&mut e, KeyCode::Char('w'), C), Edited::Changed);
        assert_eq!(e.text(), "p:deploy ");
        assert_eq!(key(&mut e, KeyCode::Char('u'), C), Edited::Changed);
        assert_eq!(e.text(), "");
        assert_eq!(e.cursor(), 0);
        // Nothing left to delete: no change, and never a typed 'u'.
        assert_eq!(key(&mut e, KeyCode::Char('u'), C), Edited::Moved);
        assert_eq!(e.text(), "");
    }

    #[test]
    fn editing_in_place_with_the_readline_keys() {
        let mut e = LineEdit::new("who=me n=3");
        key(&mut e, KeyCode::Char('a'), C);
        assert_eq!(e.cursor(), 0);
        key(&mut e, KeyCode::Char('f'), A);
        assert_eq!(&e.text()[..e.cursor()], "who=me");
        key(&mut e, KeyCode::Char('k'), C);
        assert_eq!(e.text(), "who=me");
        key(&mut e, KeyCode::Left, N);
        key(&mut e, KeyCode::Left, N);
        key(&mut e, KeyCode::Char('X'), N);
        assert_eq!(e.text(), "who=Xme");
        key(&mut e, KeyCode::Char('b'), A);
        assert_eq!(e.cursor(), 0);
        key(&mut e, KeyCode::End, N);
        assert_eq!(e.cursor(), e.text().len());
        key(&mut e, KeyCode::Home, N);
        key(&mut e, KeyCode::Delete, N);
        assert_eq!(e.text(), "ho=Xme");
        key(&mut e, KeyCode::Char('e'), C);
        key(&mut e, KeyCode::Backspace, N);
        assert_eq!(e.text(), "ho=Xm");
        key(&mut e, KeyCode::Char('b'), A);
        key(&mut e, KeyCode::Char('d'), A);
        assert_eq!(e.text(), "");
        // Ctrl-Left/Right move by word too.
        let mut e = LineEdit::new("a bc d");
        key(&mut e, KeyCode::Left, C);
        assert_eq!(e.cursor(), 5);
        key(&mut e, KeyCode::Left, C);
        assert_eq!(e.cursor(), 2);
        key(&mut e, KeyCode::Right, C);
        assert_eq!(e.cursor(), 4);
        // Other control keys are the caller's.
        assert_eq!(key(&mut e, KeyCode::Char('l'), C), Edited::Ignored);
        assert_eq!(key(&mut e, KeyCode::Enter, N), Edited::Ignored);
    }

    #[test]
    fn the_cursor_moves_by_grapheme_and_counts_display_width() {
        // 'é' as e + combining accent, a wide CJK character, an emoji with a skin tone.
        let mut e = LineEdit::new("e\u{301}漢👍🏽x");
        assert_eq!(e.cursor_col(), 6);
        key(&mut e, KeyCode::Left, N);
        assert_eq!(e.parts().1, Some("x"));
        key(&mut e, KeyCode::Left, N);
        assert_eq!(e.parts().1, Some("👍🏽"));
        assert_eq!(e.cursor_col(), 3);
        key(&mut e, KeyCode::Left, N);
        assert_eq!(e.parts().1, Some("漢"));
        assert_eq!(e.cursor_col(), 1);
        key(&mut e, KeyCode::Backspace, N);
        assert_eq!(e.text(), "漢👍🏽x", "the accent goes with its letter");
        assert_eq!(e.cursor_col(), 0);
        key(&mut e, KeyCode::Delete, N);
        assert_eq!(e.text(), "👍🏽x");
        key(&mut e, KeyCode::End, N);
        key(&mut e, KeyCode::Char('w'), C);
        assert_eq!(e.text(), "");
    }

    #[test]
    fn a_long_line_scrolls_to_keep_the_cursor_visible() {
        let mut e = LineEdit::new("abcdefghij");
        assert_eq!(
            e.scroll_for(5),
            6,
            "the last four letters and the cursor cell"
        );
        e.key(&KeyEvent::new(KeyCode::Home, N));
        assert_eq!(e.scroll_for(5), 0);
        let wide = LineEdit::new("漢漢漢");
        assert_eq!(
            &wide.text()[wide.scroll_for(4)..],
            "漢",
            "one wide character and the cursor fit"
        );
    }

    #[test]
    fn pasted_control_characters_are_dropped() {
        let mut e = LineEdit::new("ab");
        e.key(&KeyEvent::new(KeyCode::Left, N));
        e.insert_str("x\u{1b}[31my\n");
        assert_eq!(e.text(), "ax[31myb");
        assert_eq!(&e.text()[e.cursor()..], "b");
    }
}
