//! The store: every pipeline version, run, node state, attempt and log line.
//! This module is the whole interface the daemon sees: it returns the store's
//! own records (conversion to wire types happens in `api/`), and nothing
//! above it holds a database handle.
//!
//! Two backends stand behind the same methods (see [`backend`]): embedded
//! SQLite (WAL; the default, zero setup) and PostgreSQL. On both, writes go
//! through one writer that commits in small batches ([`writer`]); reads use a
//! separate pool so they never wait behind a commit.

pub mod approvals;
pub mod audit;
pub(crate) mod backend;
pub mod llm_usage;
pub mod pipelines;
mod postgres;
pub mod records;
pub mod testdb;
pub mod triggers;
pub mod usage;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sluice_shared::Pipeline;
use sluice_shared::run::{AttemptState, LogLine, RunId, RunState, TriggerInfo};
use sluice_shared::time::now_ms;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};

pub use backend::Dialect;
use backend::{Cols, Reads, read};
pub use records::{
    AttemptRecord, DoneAttempt, DoneNode, DoneRun, NewNode, NewRun, NodeChange, NodeRecord,
    RunChange, RunRecord, VersionId,
};
pub use writer::SqlArg;
use writer::{Reply, RunRow, Write, Written};

/// How hard commits are pushed to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every commit is on disk before it is acknowledged (SQLite `synchronous = FULL`,
    /// PostgreSQL `synchronous_commit = on`): nothing committed is lost on power failure.
    #[default]
    Full,
    /// SQLite `synchronous = NORMAL`, PostgreSQL `synchronous_commit = off`: a
    /// power failure may lose the last commits, never corrupt.
    Normal,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(String),
    /// A record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Data(String),
    /// The writer task is gone (the daemon is stopping).
    #[error("the store is closed")]
    Closed,
    /// The store's settings are not usable.
    #[error("{0}")]
    Config(String),
    /// The database server does not answer.
    #[error(
        "cannot reach the PostgreSQL store at {url}: {reason} (is the server running and does it accept this user?)"
    )]
    Unreachable {
        /// Where (without a password).
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// The database was migrated by a newer sluiced.
    #[error(
        "the store at {location} has schema version {found}, newer than this sluiced knows (up to {known}); run the newer sluiced or restore a backup"
    )]
    SchemaNewer {
        /// Which store.
        location: String,
        /// The newest migration applied to it.
        found: i64,
        /// The newest migration this binary has.
        known: i64,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound("row".into()),
            other => Self::Database(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Self::NotFound("row".into()),
            // The same text as sqlx gives for a database error (code and message).
            rusqlite::Error::SqliteFailure(err, Some(msg)) => Self::Database(format!(
                "error returned from database: (code: {}) {msg}",
                err.extended_code
            )),
            other => Self::Database(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Database(format!("migration failed: {e}"))
    }
}

/// Applies `migrator` unless the database already has a migration this
/// binary does not know (a newer sluiced ran on it): that is refused with
/// [`StoreError::SchemaNewer`] before anything is changed.
async fn migrate<C>(
    migrator: sqlx::migrate::Migrator,
    conn: &mut C,
    location: &str,
) -> Result<(), StoreError>
where
    C: sqlx::migrate::Migrate + Send,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match migrator.run_direct(None, conn, false).await {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::VersionMissing(found)) => Err(StoreError::SchemaNewer {
            location: location.to_owned(),
            found,
            known,
        }),
        Err(e) => Err(e.into()),
    }
}

/// How long a statement waits for a lock another connection holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes the WAL file is truncated to after a checkpoint.
const JOURNAL_SIZE_LIMIT: &str = "67108864";
/// Page cache per connection (negative: KiB).
const CACHE_SIZE: &str = "-4000";

/// The pragmas of `base` in [`Store::open`], in the order sqlx sends them, for
/// the writer's own (rusqlite) connection.
fn pragmas(durability: Durability) -> String {
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = {sync}; \
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}; PRAGMA cache_size = {CACHE_SIZE};"
    )
}

/// Creates (if needed) and migrates the SQLite file, then opens the read
/// pool and starts the writer thread.
async fn open_sqlite(
    path: &Path,
    durability: Durability,
) -> Result<(Reads, mpsc::Sender<(Write, Reply)>), StoreError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
    }
    let sync = match durability {
        Durability::Full => SqliteSynchronous::Full,
        Durability::Normal => SqliteSynchronous::Normal,
    };
    let base = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
        .pragma("cache_size", CACHE_SIZE);
    let mut migrate_conn = base.clone().create_if_missing(true).connect().await?;
    migrate(
        sqlx::migrate!("./migrations/sqlite"),
        &mut migrate_conn,
        &path.display().to_string(),
    )
    .await?;
    // The writer opens its own connection; this one only created and migrated the file.
    migrate_conn.close().await?;
    let reads = SqlitePoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .connect_with(base.read_only(true))
        .await?;
    let (tx, rx) = mpsc::channel(4096);
    writer::sqlite::start(path.to_path_buf(), durability, rx).await?;
    Ok((Reads::Sqlite(reads), tx))
}

/// Where the store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…` URL, without a password).
    Postgres(String),
}

impl Location {
    /// Parses `[store] url`: `sqlite:///abs/path`, `sqlite://rel/path`,
    /// `postgres://…` or `postgresql://…`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config(
                    "store url sqlite:// names no file (sqlite:///var/lib/sluice/sluice.db)".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(StoreError::Config(format!(
            "store url {} is neither sqlite:// nor postgres://",
            postgres::redact(url)
        )))
    }

    /// The location fit for messages and logs (never a password).
    pub fn display(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => postgres::redact(url),
        }
    }
}

/// How to open the store.
#[derive(Clone)]
pub struct StoreOptions {
    /// Where it lives.
    pub location: Location,
    /// How hard commits are pushed to disk.
    pub durability: Durability,
    /// PostgreSQL password (from a secret; never from the config file).
    pub password: Option<String>,
    /// PostgreSQL read connections at most.
    pub pool_size: u32,
    /// PostgreSQL: statements running longer are cancelled.
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("location", &self.location.display())
            .field("durability", &self.durability)
            .field("password", &self.password.as_ref().map(|_| "REDACTED"))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl StoreOptions {
    /// Default PostgreSQL read connections.
    pub const DEFAULT_POOL_SIZE: u32 = 8;
    /// Default PostgreSQL statement timeout.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

    /// An SQLite file.
    pub fn sqlite(path: &Path, durability: Durability) -> Self {
        Self {
            location: Location::Sqlite(path.to_path_buf()),
            durability,
            password: None,
            pool_size: Self::DEFAULT_POOL_SIZE,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
        }
    }

    /// Checks the options without connecting (`sluiced check-config` and
    /// before every open), so a bad URL is reported as such, not as a
    /// connection failure.
    pub fn check(&self) -> Result<(), StoreError> {
        if let Location::Postgres(url) = &self.location {
            if self.pool_size == 0 {
                return Err(StoreError::Config(
                    "[store] pool_size must be at least 1".into(),
                ));
            }
            if self.statement_timeout.is_zero() {
                return Err(StoreError::Config(
                    "[store] statement_timeout must be more than 0 (PostgreSQL reads 0 as no limit)"
                        .into(),
                ));
            }
            postgres::connect_options(url, self)?;
        }
        Ok(())
    }

    /// A PostgreSQL database, with defaults.
    pub fn postgres(url: &str) -> Self {
        Self {
            location: Location::Postgres(url.to_owned()),
            ..Self::sqlite(Path::new(""), Durability::Full)
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writes: mpsc::Sender<(Write, Reply)>,
    reads: Reads,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, migrates it and starts the writer.
    pub async fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::connect(&StoreOptions::sqlite(path, durability)).await
    }

    /// Opens the store `options` name, migrates it and starts the writer.
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        options.check()?;
        let (reads, writes) = match &options.location {
            Location::Sqlite(path) => open_sqlite(path, options.durability).await?,
            Location::Postgres(url) => postgres::open(url, options).await?,
        };
        Ok(Self { writes, reads })
    }

    /// Which SQL the backend speaks.
    pub fn dialect(&self) -> Dialect {
        self.reads.dialect()
    }

    async fn write(&self, w: Write) -> Result<Written, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send((w, Some(tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a write without waiting for its commit (log lines).
    async fn write_detached(&self, w: Write) -> Result<(), StoreError> {
        self.writes
            .send((w, None))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(Write::All(Vec::new())).await.map(|_| ())
    }

    /// Stores `pipeline` as its newest version unless it equals the newest already stored.
    pub async fn save_version(
        &self,
        pipeline: &Pipeline,
        source_path: Option<&Path>,
    ) -> Result<VersionId, StoreError> {
        let definition =
            serde_json::to_string(pipeline).map_err(|e| StoreError::Data(e.to_string()))?;
        let hash = content_hash(&definition);
        match self
            .write(Write::SaveVersion {
                pipeline: pipeline.name.clone(),
                hash,
                definition,
                source_path: source_path.map(|p| p.display().to_string()),
                at: now_ms(),
            })
            .await?
        {
            Written::Id(id) => Ok(VersionId(id)),
            other => Err(StoreError::Data(format!(
                "unexpected write result {other:?}"
            ))),
        }
    }

    /// Commits a new queued run; the returned id is durable once this returns.
    pub async fn create_run(&self, run: NewRun) -> Result<RunId, StoreError> {
        self.create_run_shared(std::sync::Arc::new(run))
            .await
            .map(|(id, _)| id)
    }

    /// [`Store::create_run`] of a run the caller keeps; also returns its `created_at`.
    pub(crate) async fn create_run_shared(
        &self,
        run: std::sync::Arc<NewRun>,
    ) -> Result<(RunId, i64), StoreError> {
        let at = now_ms();
        match self
            .write(Write::CreateRun(RunRow::encode(run)?, at))
            .await?
        {
            Written::Id(id) => Ok((RunId(id), at)),
            other => Err(StoreError::Data(format!(
                "unexpected write result {other:?}"
            ))),
        }
    }

    /// Applies several changes atomically.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let writes = changes.into_iter().map(Change::into_write).collect();
        self.write(Write::All(writes)).await.map(|_| ())
    }

    /// Appends log lines (committed with the next batch; not waited for).
    pub async fn append_logs(&self, lines: Vec<LogLine>) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.write_detached(Write::Logs(lines)).await
    }

    /// Deletes finished runs that finished before `before_ms` or beyond the newest
    /// `keep_per_pipeline` of their pipeline; returns how many were deleted.
    pub async fn prune(&self, before_ms: i64, keep_per_pipeline: i64) -> Result<u64, StoreError> {
        match self
            .write(Write::Prune {
                finished_before: before_ms,
                keep_per_pipeline,
            })
            .await?
        {
            Written::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Runs store-submodule statements atomically (through the single writer).
    /// Returns the last statement's `RETURNING` value or affected row count.
    async fn exec(&self, statements: Vec<(String, Vec<SqlArg>)>) -> Result<i64, StoreError> {
        match self.write(Write::Exec(statements)).await? {
            Written::Id(id) | Written::Existing(id) => Ok(id),
            Written::Count(n) => Ok(i64::try_from(n).unwrap_or(i64::MAX)),
            Written::Nothing | Written::OverCap(_) => Ok(0),
        }
    }

    /// The read pool, for the store's own queries: nothing above the store
    /// holds a database handle.
    fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The SQLite read pool, for tests that look inside the file.
    #[cfg(test)]
    fn sqlite_reads(&self) -> &sqlx::SqlitePool {
        match &self.reads {
            Reads::Sqlite(pool) => pool,
            Reads::Postgres(_) => panic!("not an SQLite store"),
        }
    }

    /// A stored pipeline version.
    pub async fn version(&self, id: VersionId) -> Result<(Pipeline, i64), StoreError> {
        let (text, version): (String, i64) = read!(self, pool => sqlx::query_as(
            "SELECT definition, version FROM pipeline_versions WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(pool)
        .await?)
        .ok_or_else(|| StoreError::NotFound(format!("pipeline version {}", id.0)))?;
        let pipeline = serde_json::from_str(&text)
            .map_err(|e| StoreError::Data(format!("pipeline version {}: {e}", id.0)))?;
        Ok((pipeline, version))
    }

    /// One run.
    pub async fn run(&self, id: RunId) -> Result<Option<RunRecord>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM runs_full WHERE id = $1")
            .bind(id.0)
            .fetch_optional(pool)
            .await?
            .as_ref()
            .map(run_record)
            .transpose())
    }

    /// Runs not yet finished (queued, running, waiting), oldest first.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM runs_full WHERE finished_at IS NULL AND state IN ('queued', 'running', 'waiting') ORDER BY id",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(run_record)
        .collect())
    }

    /// Queued runs with an id above `after`, oldest first (the backlog a restart left to drain).
    pub async fn queued_after(&self, after: RunId, limit: i64) -> Result<Vec<RunId>, StoreError> {
        let ids: Vec<i64> = read!(self, pool => sqlx::query_scalar(
            "SELECT id FROM runs WHERE finished_at IS NULL AND state = 'queued' AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.0)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        Ok(ids.into_iter().map(RunId).collect())
    }

    /// Runs of any state, newest first (optionally of one pipeline).
    pub async fn runs(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM runs_full WHERE ($1 IS NULL OR pipeline = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(run_record)
        .collect())
    }

    /// The nodes of a run, in pipeline order.
    pub async fn nodes(&self, run: RunId) -> Result<Vec<NodeRecord>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM run_nodes WHERE run_id = $1 ORDER BY position")
            .bind(run.0)
            .fetch_all(pool)
            .await?
            .iter()
            .map(node_record)
            .collect())
    }

    /// Every attempt of every node of a run.
    pub async fn attempts(&self, run: RunId) -> Result<Vec<AttemptRecord>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM attempts WHERE run_id = $1 ORDER BY node_id, attempt",
        )
        .bind(run.0)
        .fetch_all(pool)
        .await?
        .iter()
        .map(attempt_record)
        .collect())
    }

    /// Log lines of a run (optionally one node), in order.
    pub async fn logs(&self, run: RunId, node: Option<&str>) -> Result<Vec<LogLine>, StoreError> {
        read!(self, pool => sqlx::query(
            "SELECT * FROM logs WHERE run_id = $1 AND ($2 IS NULL OR node_id = $2) ORDER BY node_id, attempt, seq",
        )
        .bind(run.0)
        .bind(node)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| log_line(r, run))
        .collect())
    }
}

/// A `logs` row as a line.
pub(crate) fn log_line(r: &impl Cols, run: RunId) -> Result<LogLine, StoreError> {
    Ok(LogLine {
        run,
        node: r.text("node_id")?,
        attempt: u32::try_from(r.int("attempt")?).unwrap_or(0),
        seq: u32::try_from(r.int("seq")?).unwrap_or(0),
        at_ms: r.int("at")?,
        stream: r.text("stream")?,
        line: r.text("line")?,
    })
}

fn node_record(r: &impl Cols) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        node_id: r.text("node_id")?,
        position: r.int("position")?,
        state: parse(r.text("state")?)?,
        attempts: u32::try_from(r.int("attempts")?).unwrap_or(0),
        output: r.json("output")?,
        error: r.opt_text("error")?,
        started_at: r.opt_int("started_at")?,
        finished_at: r.opt_int("finished_at")?,
        wake_at: r.opt_int("wake_at")?,
        reused_from: r.opt_int("reused_from")?.map(RunId),
    })
}

fn attempt_record(r: &impl Cols) -> Result<AttemptRecord, StoreError> {
    Ok(AttemptRecord {
        node_id: r.text("node_id")?,
        attempt: u32::try_from(r.int("attempt")?).unwrap_or(0),
        state: parse(r.text("state")?)?,
        started_at: r.int("started_at")?,
        finished_at: r.opt_int("finished_at")?,
        error: r.opt_text("error")?,
        pgid: r.opt_int("pgid")?.and_then(|p| i32::try_from(p).ok()),
        pstart: r.opt_int("pstart")?.and_then(|s| u64::try_from(s).ok()),
    })
}

/// One change applied by [`Store::apply`].
#[derive(Clone, Debug)]
pub enum Change {
    /// Change a run.
    Run(RunId, RunChange),
    /// Change a node of a run.
    Node(RunId, String, NodeChange),
    /// An attempt started.
    AttemptStart(RunId, String, u32),
    /// An attempt ended.
    AttemptEnd(RunId, String, u32, AttemptState, Option<String>),
    /// An attempt's child process started: its process group and the leader's start time.
    AttemptProcess(RunId, String, u32, i32, u64),
    /// Store-submodule statements that must commit with the rest.
    Sql(Vec<(String, Vec<SqlArg>)>),
}

impl Change {
    fn into_write(self) -> Write {
        let at = now_ms();
        match self {
            Self::Run(run, c) => Write::Run(run, c),
            Self::Node(run, node, c) => Write::Node(run, node, c),
            Self::AttemptStart(run, node, attempt) => Write::AttemptStart {
                run,
                node,
                attempt,
                at,
            },
            Self::AttemptEnd(run, node, attempt, state, error) => Write::AttemptEnd {
                run,
                node,
                attempt,
                state,
                at,
                error,
            },
            Self::AttemptProcess(run, node, attempt, pgid, start) => Write::AttemptProcess {
                run,
                node,
                attempt,
                pgid,
                start,
            },
            Self::Sql(statements) => Write::Exec(statements),
        }
    }
}

fn parse<T: FromStr>(s: String) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| StoreError::Data(e.to_string()))
}

pub(crate) fn run_record(r: &impl Cols) -> Result<RunRecord, StoreError> {
    let trigger: TriggerInfo = r
        .json_as("trigger")?
        .ok_or_else(|| StoreError::Data("run without a trigger".into()))?;
    Ok(RunRecord {
        id: RunId(r.int("id")?),
        pipeline: r.text("pipeline")?,
        version_id: VersionId(r.int("version_id")?),
        state: parse::<RunState>(r.text("state")?)?,
        trigger,
        user: r.opt_text("user")?,
        inputs: r.json("inputs")?.unwrap_or(Value::Null),
        retry_of: r.opt_int("retry_of")?.map(RunId),
        created_at: r.int("created_at")?,
        started_at: r.opt_int("started_at")?,
        finished_at: r.opt_int("finished_at")?,
        deadline: r.opt_int("deadline")?,
        wake_at: r.opt_int("wake_at")?,
        error: r.opt_text("error")?,
    })
}

/// A short stable hash of a definition (FNV-1a, 64-bit): enough to tell versions apart.
fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(name: &str, run: &str) -> Pipeline {
        let src = format!("nodes:\n  - id: a\n    kind: shell\n    run: {run}\n");
        let f = sluice_shared::load_source(
            Path::new(&format!("{name}.yaml")),
            &src,
            &Default::default(),
        );
        f.pipeline.expect("valid")
    }

    #[tokio::test]
    async fn runs_stored_before_payloads_moved_keep_their_trigger_and_inputs() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        // A store as the release before migration 8 left it, with one run in it.
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        let mut before = sqlx::migrate!("./migrations/sqlite");
        before.migrations = before
            .migrations
            .iter()
            .filter(|m| m.version < 8)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        before.run(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO pipeline_versions (id, pipeline, version, hash, definition, created_at) VALUES (1, 'p', 1, 'h', '{}', 0);
             INSERT INTO runs (id, pipeline, version_id, state, trigger, trigger_kind, user, inputs, created_at)
             VALUES (7, 'p', 1, 'queued', '{\"kind\":\"manual\",\"user\":\"alice\",\"details\":{\"note\":\"hi\"}}', 'manual', 'alice', '{\"x\":1}', 5)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let store = Store::open(&path, Durability::Full).await.unwrap();
        let run = store.run(RunId(7)).await.unwrap().expect("the run is kept");
        assert_eq!(run.inputs, serde_json::json!({"x": 1}));
        assert_eq!(run.trigger.user.as_deref(), Some("alice"));
        assert_eq!(run.trigger.details, serde_json::json!({"note": "hi"}));
        assert_eq!(store.active_runs("p").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn versions_runs_nodes_and_logs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::Full)
            .await
            .unwrap();
        let v1 = store
            .save_version(&pipeline("p", "echo 1"), None)
            .await
            .unwrap();
        assert_eq!(
            store
                .save_version(&pipeline("p", "echo 1"), None)
                .await
                .unwrap(),
            v1,
            "same content, same version"
        );
        let v2 = store
            .save_version(&pipeline("p", "echo 2"), None)
            .await
            .unwrap();
        assert_ne!(v1, v2);
        assert_eq!(store.version(v2).await.unwrap().1, 2);

        let run = store
            .create_run(NewRun {
                done: None,
                pipeline: "p".into(),
                version_id: v1,
                trigger: TriggerInfo::manual(Some("alice".into())),
                inputs: serde_json::json!({"x": 1}),
                retry_of: None,
                deadline: None,
                nodes: vec![NewNode {
                    id: "a".into(),
                    reused: None,
                }],
            })
            .await
            .unwrap();
        store
            .apply(vec![
                Change::AttemptStart(run, "a".into(), 1),
                Change::Node(
                    run,
                    "a".into(),
                    NodeChange {
                        state: Some(sluice_shared::run::NodeState::Running),
                        attempts: Some(1),
                        ..Default::default()
                    },
                ),
            ])
            .await
            .unwrap();
        store
            .append_logs(vec![LogLine {
                run,
                node: "a".into(),
                attempt: 1,
                seq: 1,
                at_ms: 0,
                stream: "stdout".into(),
                line: "hi".into(),
            }])
            .await
            .unwrap();
        store.flush().await.unwrap();
        let r = store.run(run).await.unwrap().unwrap();
        assert_eq!(r.state, RunState::Queued);
        assert_eq!(r.user.as_deref(), Some("alice"));
        let nodes = store.nodes(run).await.unwrap();
        assert_eq!(nodes[0].attempts, 1);
        assert_eq!(
            store.attempts(run).await.unwrap()[0].state,
            AttemptState::Running
        );
        assert_eq!(store.logs(run, Some("a")).await.unwrap()[0].line, "hi");
        assert_eq!(store.unfinished_runs().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_failing_write_does_not_undo_its_batch_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::Normal)
            .await
            .unwrap();
        let v = store
            .save_version(&pipeline("p", "echo"), None)
            .await
            .unwrap();
        let bad = store.apply(vec![Change::Node(
            RunId(999),
            "a".into(),
            NodeChange::default(),
        )]);
        let q = pipeline("q", "echo");
        let good = store.save_version(&q, None);
        let (bad, good) = tokio::join!(bad, good);
        assert!(matches!(bad, Err(StoreError::NotFound(_))));
        assert!(good.is_ok());
        assert!(store.version(v).await.is_ok());
    }
}
