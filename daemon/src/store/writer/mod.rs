//! The single writer: one owner of the write connection takes queued writes
//! in batches and commits each batch in one transaction (group commit), so
//! writes of one run apply in the order they were queued and a caller is
//! answered only after its write is durable. One bad write does not undo its
//! neighbours: the batch is redone with a savepoint per write.
//!
//! What a write is lives here; how it becomes SQL lives per backend:
//! [`sqlite`] (rusqlite on its own thread) and [`postgres`] (sqlx on one
//! connection).

pub(crate) mod postgres;
pub(crate) mod sqlite;

#[cfg(debug_assertions)]
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use sluice_shared::run::{AttemptState, LogLine, RunId};
use tokio::sync::oneshot;

use super::StoreError;
use super::records::{NewRun, NodeChange, RunChange, VersionId};

/// Most writes committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;

/// One write.
#[derive(Debug)]
pub(crate) enum Write {
    SaveVersion {
        pipeline: String,
        hash: String,
        definition: String,
        source_path: Option<String>,
        at: i64,
    },
    CreateRun(RunRow, i64),
    Run(RunId, RunChange),
    Node(RunId, String, NodeChange),
    AttemptStart {
        run: RunId,
        node: String,
        attempt: u32,
        at: i64,
    },
    AttemptEnd {
        run: RunId,
        node: String,
        attempt: u32,
        state: AttemptState,
        at: i64,
        error: Option<String>,
    },
    AttemptProcess {
        run: RunId,
        node: String,
        attempt: u32,
        pgid: i32,
        start: u64,
    },
    Logs(Vec<LogLine>),
    /// Several writes applied together or not at all.
    All(Vec<Write>),
    Prune {
        finished_before: i64,
        keep_per_pipeline: i64,
    },
    /// Statements of a store submodule, applied together; the last one's
    /// `RETURNING` value (if any) or its affected rows is the result.
    Exec(Vec<(String, Vec<SqlArg>)>),
    /// Creates a run unless `key` already names an unexpired run of the same
    /// pipeline (one atomic insert-or-get, so concurrent redeliveries of one
    /// trigger make one run). Result: `Id` for a new run, `Existing` for the old one.
    CreateRunOnce {
        run: RunRow,
        key: String,
        expires_at: i64,
        at: i64,
    },
    /// A run creation (`then`) charged to `user`'s run count of `day`, refused
    /// (`OverCap`, nothing written) once the count has reached `cap`. A creation
    /// that finds an earlier run (`Existing`) is not charged. Check and charge are
    /// one write in the single writer, so concurrent triggers cannot overshoot.
    Charged {
        user: String,
        day: String,
        cap: i64,
        then: Box<Write>,
    },
}

/// A run to insert with its trigger and inputs already encoded as JSON text,
/// so the encoding is done by the caller, not by the single writer.
#[derive(Clone, Debug)]
pub(crate) struct RunRow {
    pub(crate) run: Arc<NewRun>,
    pub(crate) trigger: String,
    pub(crate) inputs: String,
}

impl RunRow {
    /// Encodes `run`'s trigger details and inputs.
    pub(crate) fn encode(run: Arc<NewRun>) -> Result<Self, StoreError> {
        let trigger =
            serde_json::to_string(&run.trigger).map_err(|e| StoreError::Data(e.to_string()))?;
        let inputs = json_text(&run.inputs);
        Ok(Self {
            run,
            trigger,
            inputs,
        })
    }
}

/// A new run's node as inserted: pending, reused (succeeded with an earlier
/// run's output) or as it ended in a run executed before it was written.
pub(crate) struct NodeRow<'a> {
    pub(crate) state: &'static str,
    pub(crate) attempts: i64,
    pub(crate) output: Option<String>,
    pub(crate) error: Option<&'a str>,
    pub(crate) reused_from: Option<i64>,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
}

/// The closing notes of a run written finished, as log lines of run `id`.
pub(crate) fn done_notes(run: &NewRun, id: i64) -> Vec<LogLine> {
    run.done.as_ref().map_or_else(Vec::new, |d| {
        d.notes
            .iter()
            .map(|l| LogLine {
                run: RunId(id),
                ..l.clone()
            })
            .collect()
    })
}

impl<'a> NodeRow<'a> {
    /// The row of `run`'s node at `position`, for a run created at `at`.
    pub(crate) fn of(run: &'a NewRun, position: usize, at: i64) -> Self {
        if let Some(d) = run.done.as_ref().and_then(|d| d.nodes.get(position)) {
            return Self {
                state: d.state.as_str(),
                attempts: i64::from(d.attempts),
                output: d.output.as_ref().map(json_text),
                error: d.error.as_deref(),
                reused_from: None,
                started_at: d.started_at,
                finished_at: d.finished_at,
            };
        }
        match run.nodes.get(position).and_then(|n| n.reused.as_ref()) {
            Some((from, output)) => Self {
                state: "succeeded",
                attempts: 0,
                output: Some(json_text(output)),
                error: None,
                reused_from: Some(from.0),
                started_at: None,
                finished_at: Some(at),
            },
            None => Self {
                state: "pending",
                attempts: 0,
                output: None,
                error: None,
                reused_from: None,
                started_at: None,
                finished_at: None,
            },
        }
    }
}

/// A value bound to a statement of [`Write::Exec`]. NULLs carry their
/// column's type: PostgreSQL types every parameter, and a NULL typed as text
/// is refused by an integer column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// NULL in an integer column.
    NullInt,
    /// NULL in a text column.
    NullText,
}

impl SqlArg {
    /// An integer or NULL.
    pub fn opt_int(v: Option<i64>) -> Self {
        v.map_or(Self::NullInt, Self::Int)
    }

    /// Text or NULL.
    pub fn opt_text(v: Option<String>) -> Self {
        v.map_or(Self::NullText, Self::Text)
    }
}

/// What a write returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Nothing,
    Id(i64),
    Count(u64),
    /// The id of a row that already existed (see [`Write::CreateRunOnce`]).
    Existing(i64),
    /// A daily cap refused the write; the count already used (see [`Write::Charged`]).
    OverCap(i64),
}

pub(crate) type Reply = Option<oneshot::Sender<Result<Written, StoreError>>>;

/// A test-only way to wedge the writer, so the watchdog test can prove that a
/// stuck writer stops the systemd watchdog pings: while the file named by
/// `SLUICE_TEST_STALL_WRITER_FILE` exists, the writer takes no batch (as a
/// writer hung on a dead disk would). A file, not a timer, so the test decides
/// the moment without racing the daemon's start-up. Only debug builds (what
/// `cargo test` runs) read the variable; release builds compile it out.
pub(crate) struct StallHook {
    #[cfg(debug_assertions)]
    flag: Option<PathBuf>,
}

impl StallHook {
    pub(crate) fn from_env() -> Self {
        Self {
            #[cfg(debug_assertions)]
            flag: std::env::var_os("SLUICE_TEST_STALL_WRITER_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }

    /// Blocks while the stall file exists (debug builds only).
    pub(crate) fn wait(&self) {
        #[cfg(debug_assertions)]
        if let Some(flag) = &self.flag {
            while flag.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// [`StallHook::wait`] for a writer that is a task, not a thread.
    pub(crate) async fn wait_async(&self) {
        #[cfg(debug_assertions)]
        if let Some(flag) = &self.flag {
            while flag.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// Logs a panic of the writer thread. Nothing else is needed for callers: the
/// unwinding drops the batch's reply senders and the receiver, so waiting
/// callers and later writes get [`StoreError::Closed`] instead of hanging.
pub(crate) struct PanicLog;

impl Drop for PanicLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the store writer panicked; writes now fail as closed");
        }
    }
}

/// The outcome of each write of one batch, with its reply channel.
pub(crate) type Done = Vec<(Reply, Result<Written, StoreError>)>;

pub(crate) fn fail_all(batch: &mut Vec<(Write, Reply)>, err: &StoreError) -> Done {
    batch
        .drain(..)
        .map(|(_, reply)| (reply, Err(err.clone())))
        .collect()
}

pub(crate) fn json_text(v: &Value) -> String {
    v.to_string()
}

impl From<VersionId> for i64 {
    fn from(v: VersionId) -> Self {
        v.0
    }
}
