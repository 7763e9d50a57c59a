//! A capped ring buffer of log lines: memory stays flat however long the log
//! grows, because the console only ever shows the newest lines of a node.

use std::collections::{HashMap, VecDeque};

/// One line in the buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Attempt number.
    pub attempt: u32,
    /// Position within the attempt.
    pub seq: u32,
    /// Written at (ms since epoch).
    pub at_ms: i64,
    /// stdout, stderr or sluice.
    pub stream: String,
    /// The text.
    pub line: String,
}

/// The newest `cap` lines of one node's log, with the count of older lines dropped.
#[derive(Clone, Debug)]
pub struct LogBuf {
    lines: VecDeque<LogEntry>,
    cap: usize,
    dropped: u64,
    /// Highest seq seen per attempt, so a line from both `logs.get` and an event is kept once.
    last_seq: HashMap<u32, u32>,
}

/// Default number of lines kept per node.
pub const DEFAULT_CAP: usize = 20_000;

impl Default for LogBuf {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAP)
    }
}

impl LogBuf {
    /// An empty buffer keeping at most `cap` lines.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(cap.min(4096)),
            cap: cap.max(1),
            dropped: 0,
            last_seq: HashMap::new(),
        }
    }

    /// Appends a line unless it was seen already; returns whether it was added.
    pub fn push(&mut self, entry: LogEntry) -> bool {
        let last = self.last_seq.entry(entry.attempt).or_insert(0);
        if entry.seq != 0 && entry.seq <= *last {
            return false;
        }
        *last = entry.seq.max(*last);
        if self.lines.len() == self.cap {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(entry);
        true
    }

    /// The most lines held.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Lines held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Lines dropped off the front to respect the cap.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The line at `index` (0 = oldest held).
    pub fn get(&self, index: usize) -> Option<&LogEntry> {
        self.lines.get(index)
    }

    /// Lines `start..end` (clamped), for drawing only what is visible.
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &LogEntry> {
        let end = end.min(self.lines.len());
        let start = start.min(end);
        self.lines.range(start..end)
    }

    /// The next line at or after `from` (wrapping) containing `needle` (case-insensitive).
    pub fn find(&self, needle: &str, from: usize, forward: bool) -> Option<usize> {
        let n = self.lines.len();
        if n == 0 || needle.is_empty() {
            return None;
        }
        let needle = needle.to_lowercase();
        let from = from.min(n - 1);
        for step in 0..n {
            let i = if forward {
                (from + step) % n
            } else {
                (from + n - step) % n
            };
            if self.lines[i].line.to_lowercase().contains(&needle) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u32) -> LogEntry {
        LogEntry {
            attempt: 1,
            seq,
            at_ms: 0,
            stream: "stdout".into(),
            line: format!("line {seq}"),
        }
    }

    #[test]
    fn keeps_the_newest_lines_and_counts_the_rest() {
        let mut b = LogBuf::with_capacity(3);
        for seq in 1..=1_000_000 {
            b.push(entry(seq));
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.dropped(), 999_997);
        assert_eq!(b.get(0).map(|e| e.seq), Some(999_998));
    }

    #[test]
    fn a_line_seen_twice_is_kept_once() {
        let mut b = LogBuf::default();
        assert!(b.push(entry(1)));
        assert!(!b.push(entry(1)));
        assert!(b.push(entry(2)));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn search_wraps_both_ways() {
        let mut b = LogBuf::default();
        for seq in 1..=5 {
            b.push(entry(seq));
        }
        assert_eq!(b.find("LINE 2", 3, true), Some(1));
        assert_eq!(b.find("line 4", 1, false), Some(3));
        assert_eq!(b.find("nope", 0, true), None);
    }
}
