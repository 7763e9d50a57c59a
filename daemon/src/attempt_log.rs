//! A node attempt's log: lines are redacted, numbered, capped and handed to
//! whoever listens (the engine stores and announces them).
//!
//! Below both `nodes` and `notify`: a node writes its lines here, and so does
//! a notification's delivery (its retries) for the node or approval it
//! serves, without `notify` knowing the nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_shared::run::{LogLine, RunId};
use tokio::sync::{Mutex, mpsc, oneshot};

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

/// The engine's notes about an attempt that are written after it ended. Each
/// has its own fixed place after every line the attempt could write, so one
/// written again (a driver looking twice, a restart) is stored once, and they
/// read in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteSlot {
    /// Retrying after a failure, asking an approval again, or interrupted by a daemon stop.
    Retry,
    /// An approval's decision or expiry.
    Decision,
    /// How the node ended: succeeded, failed, skipped or cancelled.
    Outcome,
}

impl NoteSlot {
    /// The note's `seq` in a log capped at `max_lines` (`max_lines + 1` is the truncation marker).
    pub fn seq(self, max_lines: u32) -> u32 {
        let offset = match self {
            Self::Retry => 2,
            Self::Decision => 3,
            Self::Outcome => 4,
        };
        max_lines.saturating_add(offset)
    }
}

/// Where one attempt's log lines go. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    run: RunId,
    node: Arc<str>,
    attempt: u32,
    tx: mpsc::Sender<LogMsg>,
    redactor: Arc<Redactor>,
    /// The last `seq` handed out. Held from numbering a line until it is
    /// queued, so lines reach the store in `seq` order even when clones of the
    /// sink write from several threads (stdout and stderr, a notification):
    /// readers page by insertion and skip a `seq` they have passed.
    seq: Arc<Mutex<u32>>,
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
            seq: Arc::new(Mutex::new(0)),
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
        let mut last = self.seq.lock().await;
        if *last >= self.max_lines {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last += 1;
        let seq = *last;
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
    /// placed in its slot after every line the attempt could have written.
    pub async fn closing_note(&self, slot: NoteSlot, text: &str) {
        let text = self.redactor.redact(text).into_owned();
        self.send(slot.seq(self.max_lines), "sluice", text).await;
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
        let record = line_of(self.run, &self.node, self.attempt, seq, stream, line);
        // A closed channel means the daemon is stopping; the line has nowhere to go.
        let _ = self.tx.send(LogMsg::Line(record)).await;
    }
}

/// The line [`LogSink::closing_note`] stores for `text`, in a log capped at
/// [`MAX_LINES`]: for a run whose notes are written with it, not sent.
pub fn closing_line(
    run: RunId,
    node: &str,
    attempt: u32,
    slot: NoteSlot,
    text: &str,
    redactor: &Redactor,
) -> LogLine {
    let text = redactor.redact(text).into_owned();
    line_of(run, node, attempt, slot.seq(MAX_LINES), "sluice", text)
}

/// A log line written now.
fn line_of(run: RunId, node: &str, attempt: u32, seq: u32, stream: &str, line: String) -> LogLine {
    LogLine {
        run,
        node: node.to_owned(),
        attempt,
        seq,
        at_ms: sluice_shared::time::now_ms(),
        stream: stream.to_owned(),
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lines_from_clones_on_several_threads_arrive_in_seq_order() {
        // A channel of one makes writers wait, which is when numbering and
        // queueing apart would let a later seq overtake an earlier one.
        let (tx, mut rx) = mpsc::channel(1);
        let sink = LogSink::new(RunId(1), "n", 1, tx, Arc::new(Redactor::default()));
        let mut writers = Vec::new();
        for w in 0..4 {
            let sink = sink.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..500 {
                    sink.line("stdout", &format!("{w} {i}")).await;
                }
            }));
        }
        drop(sink);
        let mut seqs = Vec::new();
        while let Some(msg) = rx.recv().await {
            if let LogMsg::Line(l) = msg {
                seqs.push(l.seq);
            }
        }
        for w in writers {
            w.await.unwrap();
        }
        assert_eq!(seqs, (1..=2000).collect::<Vec<u32>>());
    }
}
