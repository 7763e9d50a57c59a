//! A node attempt's log: lines are redacted, numbered, capped and handed to
//! whoever listens (the engine stores and announces them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sluice_shared::run::{LogLine, RunId};
use tokio::sync::{mpsc, oneshot};

use crate::secrets::Redactor;

/// Lines kept per node attempt before the rest are dropped with a marker.
pub const MAX_LINES: u32 = 10_000;
/// Longest single line kept; longer lines are cut with a marker.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// What travels to the engine's log pump.
pub enum LogMsg {
    /// One line to store and announce.
    Line(LogLine),
    /// Answered once every line sent before it is stored and announced, so a
    /// run's end is never announced ahead of its last lines.
    Barrier(oneshot::Sender<()>),
}

/// Where one attempt's log lines go. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    run: RunId,
    node: Arc<str>,
    attempt: u32,
    tx: mpsc::Sender<LogMsg>,
    redactor: Arc<Redactor>,
    seq: Arc<AtomicU32>,
    dropped: Arc<AtomicU64>,
    max_lines: u32,
}

impl LogSink {
    /// A sink for one attempt that sends lines to `tx`.
    pub fn new(
        run: RunId,
        node: &str,
        attempt: u32,
        tx: mpsc::Sender<LogMsg>,
        redactor: Arc<Redactor>,
    ) -> Self {
        Self {
            run,
            node: node.into(),
            attempt,
            tx,
            redactor,
            seq: Arc::new(AtomicU32::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            max_lines: MAX_LINES,
        }
    }

    /// The same sink with a different line cap (for tests and small budgets).
    pub fn with_max_lines(mut self, max_lines: u32) -> Self {
        self.max_lines = max_lines;
        self
    }

    /// Writes one line (without its newline). Waits when the store is behind,
    /// which slows the producer rather than growing memory.
    pub async fn line(&self, stream: &str, text: &str) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if seq > self.max_lines {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut text = self.redactor.redact(text).into_owned();
        if text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" [line truncated]");
        }
        self.send(seq, stream, text).await;
    }

    /// A note from sluice itself (retries, waits, kills).
    pub async fn note(&self, text: &str) {
        self.line("sluice", text).await;
    }

    /// A note from the engine after the attempt ended (e.g. "retrying in 2s"):
    /// placed after every line the attempt could have written.
    pub async fn closing_note(&self, text: &str) {
        let text = self.redactor.redact(text).into_owned();
        self.send(self.max_lines.saturating_add(2), "sluice", text)
            .await;
    }

    /// Ends the attempt's log, adding a visible marker if lines were dropped.
    pub async fn finish(&self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let seq = self.max_lines + 1;
            self.send(seq, "sluice", format!("[log truncated: {dropped} more line(s) not kept; the limit is {} lines per attempt]", self.max_lines))
                .await;
        }
    }

    async fn send(&self, seq: u32, stream: &str, line: String) {
        let record = LogLine {
            run: self.run,
            node: self.node.to_string(),
            attempt: self.attempt,
            seq,
            at_ms: jiff::Timestamp::now().as_millisecond(),
            stream: stream.to_owned(),
            line,
        };
        // A closed channel means the daemon is stopping; the line has nowhere to go.
        let _ = self.tx.send(LogMsg::Line(record)).await;
    }
}
