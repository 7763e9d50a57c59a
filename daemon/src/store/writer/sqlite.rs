//! The SQLite writer: one OS thread owns the write connection (rusqlite,
//! called directly, so a statement costs no hop to another thread, with its
//! prepared statements cached).

use std::path::PathBuf;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};
use sluice_shared::run::{LogLine, RunId};
use tokio::sync::{mpsc, oneshot};

use super::{
    Done, MAX_BATCH, NodeRow, PanicLog, Reply, RunRow, SqlArg, StallHook, Write, Written,
    done_notes,
};
use super::{fail_all, json_text};
use crate::store::records::{NodeChange, RunChange};
use crate::store::{Durability, StoreError};

/// Prepared statements kept by the write connection: the fixed ones, the
/// run/node update shapes and the store submodules' statements all fit, so
/// the hot path never prepares twice.
const STATEMENT_CACHE: usize = 256;

impl ToSql for SqlArg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::NullInt | Self::NullText => ValueRef::Null,
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// Starts the writer thread on the database at `path` (already created and
/// migrated) and waits until its connection is open, so an unusable database
/// fails [`super::Store::open`] instead of every later write.
pub(crate) async fn start(
    path: PathBuf,
    durability: Durability,
    rx: mpsc::Receiver<(Write, Reply)>,
) -> Result<(), StoreError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let stall = StallHook::from_env();
    std::thread::Builder::new()
        .name("sluice-store-writer".into())
        .spawn(move || {
            let _guard = PanicLog;
            match open(&path, durability) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    run(conn, rx, &stall);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(StoreError::from(e)));
                }
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start the store writer: {e}")))?;
    ready_rx.await.map_err(|_| StoreError::Closed)?
}

/// Opens the write connection with the same settings as the sqlx connections
/// of [`super::Store::open`] (same flags, pragmas in sqlx's order, busy timeout).
fn open(path: &std::path::Path, durability: Durability) -> rusqlite::Result<Connection> {
    // What sqlx opens with: no CREATE (the migrations created the file), no
    // mutex (one thread uses it), a private cache, URI names allowed.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)?;
    conn.execute_batch(&crate::store::pragmas(durability))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Runs until every sender is dropped, then closes the connection.
fn run(conn: Connection, mut rx: mpsc::Receiver<(Write, Reply)>, stall: &StallHook) {
    let mut batch: Vec<(Write, Reply)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        stall.wait();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        for (reply, result) in commit_batch(&conn, &mut batch) {
            match reply {
                Some(tx) => {
                    let _ = tx.send(result);
                }
                None => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "a background store write failed");
                    }
                }
            }
        }
    }
    // Cached statements must be finalized before the close can succeed.
    conn.flush_prepared_statement_cache();
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the store write connection failed");
    }
}

/// Runs a fixed statement without parameters (transaction control).
fn exec_fixed(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Applies and commits `batch` (emptied); returns each write's result with its reply.
fn commit_batch(conn: &Connection, batch: &mut Vec<(Write, Reply)>) -> Done {
    let mut results: Vec<Result<Written, StoreError>> = Vec::with_capacity(batch.len());
    if let Err(e) = exec_fixed(conn, "BEGIN IMMEDIATE") {
        return fail_all(batch, &StoreError::from(e));
    }
    // Optimistic pass without savepoints (half the statements); almost no batch
    // has a failing write. If one fails, start over with a savepoint per write
    // so the failure stays its own.
    let mut failed = false;
    for (write, _) in batch.iter() {
        match apply(conn, write) {
            Ok(w) => results.push(Ok(w)),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if failed {
        results.clear();
        let restarted =
            exec_fixed(conn, "ROLLBACK").and_then(|()| exec_fixed(conn, "BEGIN IMMEDIATE"));
        if let Err(e) = restarted {
            return fail_all(batch, &StoreError::from(e));
        }
        for (write, _) in batch.iter() {
            results.push(apply_in_savepoint(conn, write));
        }
    }
    if let Err(e) = exec_fixed(conn, "COMMIT") {
        let err = StoreError::from(e);
        let _ = exec_fixed(conn, "ROLLBACK");
        for r in &mut results {
            *r = Err(err.clone());
        }
    }
    // The writes are dropped here, before any reply: a caller sharing a
    // write's data (a new run) then holds it alone.
    batch
        .drain(..)
        .zip(results)
        .map(|((_, reply), result)| (reply, result))
        .collect()
}

fn apply_in_savepoint(conn: &Connection, write: &Write) -> Result<Written, StoreError> {
    exec_fixed(conn, "SAVEPOINT w")?;
    match apply(conn, write) {
        Ok(w) => {
            exec_fixed(conn, "RELEASE w")?;
            Ok(w)
        }
        Err(e) => {
            exec_fixed(conn, "ROLLBACK TO w")?;
            exec_fixed(conn, "RELEASE w")?;
            Err(e)
        }
    }
}

/// The run a delivery key names, unless expired.
fn keyed_run(
    conn: &Connection,
    pipeline: &str,
    key: &str,
    at: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT run_id FROM trigger_keys WHERE pipeline = ? AND key = ? AND expires_at > ?",
        )?
        .query_row(params![pipeline, key, at], |r| r.get(0))
        .optional()?)
}

/// Inserts a new run with its payload and nodes, queued or (executed before
/// it was written) finished with its attempts; returns its id.
fn insert_run(conn: &Connection, row: &RunRow, at: i64) -> Result<i64, StoreError> {
    let new = &row.run;
    let done = new.done.as_ref();
    // No `RETURNING id`: SQLite runs RETURNING through a temporary b-tree,
    // while the writer's own connection knows the new rowid for free.
    conn.prepare_cached(
        "INSERT INTO runs (pipeline, version_id, state, trigger_kind, user, retry_of, created_at, deadline, started_at, finished_at, error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        new.pipeline,
        new.version_id.0,
        done.map_or("queued", |d| d.state.as_str()),
        new.trigger.kind.as_str(),
        new.trigger.user,
        new.retry_of.map(|r| r.0),
        at,
        new.deadline,
        done.map(|d| d.started_at),
        done.map(|d| d.finished_at),
        done.and_then(|d| d.error.as_deref()),
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached("INSERT INTO run_payloads (run_id, trigger, inputs) VALUES (?, ?, ?)")?
        .execute(params![id, row.trigger, row.inputs])?;
    // One cached statement per row: with no thread hop per statement,
    // rebinding a prepared insert is as cheap as a multi-row insert.
    let mut insert = conn.prepare_cached(
        "INSERT INTO run_nodes (run_id, node_id, position, state, attempts, output, error, reused_from, started_at, finished_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for (position, node) in new.nodes.iter().enumerate() {
        let n = NodeRow::of(new, position, at);
        insert.execute(params![
            id,
            node.id,
            i64::try_from(position).unwrap_or(i64::MAX),
            n.state,
            n.attempts,
            n.output,
            n.error,
            n.reused_from,
            n.started_at,
            n.finished_at,
        ])?;
    }
    if let Some(done) = done {
        let mut attempt = conn.prepare_cached(
            "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
        )?;
        for a in &done.attempts {
            attempt.execute(params![
                id,
                a.node,
                i64::from(a.attempt),
                a.state.as_str(),
                a.at,
                a.error
            ])?;
        }
        if !done.notes.is_empty() {
            insert_logs(conn, &done_notes(new, id))?;
        }
    }
    Ok(id)
}

fn apply(conn: &Connection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::SaveVersion {
            pipeline,
            hash,
            definition,
            source_path,
            at,
        } => save_version(
            conn,
            pipeline,
            hash,
            definition,
            source_path.as_deref(),
            *at,
        ),
        Write::CreateRun(row, at) => Ok(Written::Id(insert_run(conn, row, *at)?)),
        Write::Run(run, change) => {
            if update_run(conn, *run, change)? == 0 {
                return Err(StoreError::NotFound(format!("run {run}")));
            }
            Ok(Written::Nothing)
        }
        Write::Node(run, node, change) => {
            if update_node(conn, *run, node, change)? == 0 {
                return Err(StoreError::NotFound(format!("node '{node}' of run {run}")));
            }
            Ok(Written::Nothing)
        }
        Write::AttemptStart {
            run,
            node,
            attempt,
            at,
        } => {
            conn.prepare_cached(
                "INSERT INTO attempts (run_id, node_id, attempt, state, started_at) VALUES (?, ?, ?, 'running', ?)
                 ON CONFLICT (run_id, node_id, attempt) DO NOTHING",
            )?
            .execute(params![run.0, node, i64::from(*attempt), at])?;
            Ok(Written::Nothing)
        }
        Write::AttemptProcess {
            run,
            node,
            attempt,
            pgid,
            start,
        } => {
            conn.prepare_cached(
                "UPDATE attempts SET pgid = ?, pstart = ? WHERE run_id = ? AND node_id = ? AND attempt = ?",
            )?
            .execute(params![
                pgid,
                i64::try_from(*start).unwrap_or(i64::MAX),
                run.0,
                node,
                i64::from(*attempt)
            ])?;
            Ok(Written::Nothing)
        }
        Write::AttemptEnd {
            run,
            node,
            attempt,
            state,
            at,
            error,
        } => {
            // An instant node has no separate start record: insert and finish in one step.
            conn.prepare_cached(
                "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                 ON CONFLICT (run_id, node_id, attempt) DO UPDATE SET state = ?4, finished_at = ?5, error = ?6",
            )?
            .execute(params![
                run.0,
                node,
                i64::from(*attempt),
                state.as_str(),
                at,
                error
            ])?;
            Ok(Written::Nothing)
        }
        Write::Logs(lines) => insert_logs(conn, lines),
        Write::Exec(statements) => exec_statements(conn, statements),
        Write::CreateRunOnce {
            run,
            key,
            expires_at,
            at,
        } => {
            if let Some(id) = keyed_run(conn, &run.run.pipeline, key, *at)? {
                return Ok(Written::Existing(id));
            }
            let id = insert_run(conn, run, *at)?;
            conn.prepare_cached(
                "INSERT INTO trigger_keys (pipeline, key, run_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (pipeline, key) DO UPDATE SET run_id = ?3, created_at = ?4, expires_at = ?5",
            )?
            .execute(params![run.run.pipeline, key, id, at, expires_at])?;
            Ok(Written::Id(id))
        }
        Write::Charged {
            user,
            day,
            cap,
            then,
        } => charged(conn, user, day, *cap, then),
        Write::All(writes) => {
            for w in writes {
                apply(conn, w)?;
            }
            Ok(Written::Nothing)
        }
        Write::Prune {
            finished_before,
            keep_per_pipeline,
        } => prune(conn, *finished_before, *keep_per_pipeline),
    }
}

/// Stores a pipeline version unless its latest version has the same hash.
fn save_version(
    conn: &Connection,
    pipeline: &str,
    hash: &str,
    definition: &str,
    source_path: Option<&str>,
    at: i64,
) -> Result<Written, StoreError> {
    let existing: Option<(i64, String)> = conn
            .prepare_cached(
                "SELECT id, hash FROM pipeline_versions WHERE pipeline = ? ORDER BY version DESC LIMIT 1",
            )?
            .query_row(params![pipeline], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
    if let Some((id, h)) = &existing
        && h == hash
    {
        return Ok(Written::Id(*id));
    }
    let id: i64 = conn
            .prepare_cached(
                "INSERT INTO pipeline_versions (pipeline, version, hash, definition, source_path, created_at)
                 VALUES (?1, COALESCE((SELECT MAX(version) FROM pipeline_versions WHERE pipeline = ?1), 0) + 1, ?2, ?3, ?4, ?5)
                 RETURNING id",
            )?
            .query_row(params![pipeline, hash, definition, source_path, at], |r| {
                r.get(0)
            })?;
    Ok(Written::Id(id))
}

/// Inserts log lines; a line already stored (same attempt and seq) is kept.
fn insert_logs(conn: &Connection, lines: &[LogLine]) -> Result<Written, StoreError> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO logs (run_id, node_id, attempt, seq, at, stream, line)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?;
    for l in lines {
        insert.execute(params![
            l.run.0,
            l.node,
            i64::from(l.attempt),
            i64::from(l.seq),
            l.at_ms,
            l.stream,
            l.line,
        ])?;
    }
    Ok(Written::Count(lines.len() as u64))
}

/// Runs a store submodule's statements (see [`Write::Exec`]).
fn exec_statements(
    conn: &Connection,
    statements: &[(String, Vec<SqlArg>)],
) -> Result<Written, StoreError> {
    let mut last = Written::Nothing;
    for (sql, args) in statements {
        let mut stmt = conn.prepare_cached(sql)?;
        bind_numbered(&mut stmt, args)?;
        if sql.to_ascii_uppercase().contains("RETURNING") {
            // SQLite makes every change of a RETURNING statement on the
            // first step, so reading only the first row applies all of it.
            let mut rows = stmt.raw_query();
            last = match rows.next()? {
                Some(r) => Written::Id(r.get(0)?),
                None => Written::Nothing,
            };
        } else {
            last = Written::Count(stmt.raw_execute()? as u64);
        }
    }
    Ok(last)
}

/// Binds `args` to a statement written with PostgreSQL-style `$N`
/// placeholders. SQLite numbers `$N` names by first appearance, not by N, so
/// each parameter is bound by the number in its name (as sqlx does).
fn bind_numbered(stmt: &mut rusqlite::Statement<'_>, args: &[SqlArg]) -> Result<(), StoreError> {
    for index in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(index) {
            Some(name) => name
                .strip_prefix(['$', '?'])
                .and_then(|digits| digits.parse::<usize>().ok())
                .ok_or_else(|| StoreError::Database(format!("unsupported parameter {name}")))?,
            None => index,
        };
        let arg = args.get(n.wrapping_sub(1)).ok_or_else(|| {
            StoreError::Database(format!("parameter {n} has no value ({} given)", args.len()))
        })?;
        stmt.raw_bind_parameter(index, arg)?;
    }
    Ok(())
}

/// Applies `then` charged to a daily run cap (see [`Write::Charged`]).
fn charged(
    conn: &Connection,
    user: &str,
    day: &str,
    cap: i64,
    then: &Write,
) -> Result<Written, StoreError> {
    // A redelivery finds its run even when the cap is reached since.
    if let Write::CreateRunOnce { run, key, at, .. } = then
        && let Some(id) = keyed_run(conn, &run.run.pipeline, key, *at)?
    {
        return Ok(Written::Existing(id));
    }
    // Counted but not capped (`i64::MAX`): nothing to look up.
    if cap < i64::MAX {
        let used: i64 = conn
            .prepare_cached("SELECT runs FROM usage WHERE user = ? AND day = ?")?
            .query_row(params![user, day], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if used >= cap {
            return Ok(Written::OverCap(used));
        }
    }
    let result = apply(conn, then)?;
    if let Written::Id(_) = result {
        conn.prepare_cached(
            "INSERT INTO usage (user, day, runs) VALUES (?, ?, 1)
                 ON CONFLICT (user, day) DO UPDATE SET runs = runs + 1",
        )?
        .execute(params![user, day])?;
    }
    Ok(result)
}

/// Deletes a bounded batch of finished runs past retention.
fn prune(
    conn: &Connection,
    finished_before: i64,
    keep_per_pipeline: i64,
) -> Result<Written, StoreError> {
    let by_age = conn
            .prepare_cached(
                // Bounded per write so a first prune of a big store does not hold the
                // single writer for long; the caller repeats until nothing is left.
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT 500)",
            )?
            .execute(params![finished_before])?;
    let by_count = conn
            .prepare_cached(
                "DELETE FROM runs WHERE id IN (
                    SELECT id FROM (
                        SELECT id, finished_at, ROW_NUMBER() OVER (PARTITION BY pipeline ORDER BY id DESC) AS n FROM runs
                    ) WHERE n > ? AND finished_at IS NOT NULL LIMIT 500
                )",
            )?
            .execute(params![keep_per_pipeline])?;
    Ok(Written::Count((by_age + by_count) as u64))
}

/// Applies a [`RunChange`]; returns the rows changed. The statement's shape
/// depends only on which fields are set, so the few shapes stay cached.
fn update_run(conn: &Connection, run: RunId, change: &RunChange) -> Result<usize, StoreError> {
    let state = change.state.map(|s| s.as_str());
    let mut set = SetClause::default();
    set.add("state = ?", &state);
    set.add("started_at = COALESCE(started_at, ?)", &change.started_at);
    set.add("finished_at = ?", &change.finished_at);
    set.add("wake_at = ?", &change.wake_at);
    set.add("error = ?", &change.error);
    set.add("deadline = ?", &change.deadline);
    if set.is_empty() {
        // Nothing to change; still report whether the run exists.
        return Ok(conn
            .prepare_cached("SELECT 1 FROM runs WHERE id = ?")?
            .query_row(params![run.0], |_| Ok(()))
            .optional()?
            .map_or(0, |()| 1));
    }
    let (sql, mut args) = set.finish("UPDATE runs SET ", " WHERE id = ?");
    args.push(&run.0);
    Ok(conn.prepare_cached(&sql)?.execute(args.as_slice())?)
}

/// Applies a [`NodeChange`]; returns the rows changed (see [`update_run`]).
fn update_node(
    conn: &Connection,
    run: RunId,
    node: &str,
    change: &NodeChange,
) -> Result<usize, StoreError> {
    let state = change.state.map(|s| s.as_str());
    let attempts = change.attempts.map(i64::from);
    let output = change.output.as_ref().map(|o| o.as_ref().map(json_text));
    let mut set = SetClause::default();
    set.add("state = ?", &state);
    set.add("attempts = ?", &attempts);
    set.add("output = ?", &output);
    set.add("error = ?", &change.error);
    set.add("started_at = COALESCE(started_at, ?)", &change.started_at);
    set.add("finished_at = ?", &change.finished_at);
    set.add("wake_at = ?", &change.wake_at);
    if set.is_empty() {
        return Ok(conn
            .prepare_cached("SELECT 1 FROM run_nodes WHERE run_id = ? AND node_id = ?")?
            .query_row(params![run.0, node], |_| Ok(()))
            .optional()?
            .map_or(0, |()| 1));
    }
    let (sql, mut args) = set.finish("UPDATE run_nodes SET ", " WHERE run_id = ? AND node_id = ?");
    args.push(&run.0);
    args.push(&node);
    Ok(conn.prepare_cached(&sql)?.execute(args.as_slice())?)
}

/// The `SET` list of an UPDATE built from the fields a change sets. It never
/// assigns a key column to itself as a placeholder: SQLite treats any
/// assignment to the rowid or an indexed key as a key change and rewrites
/// the row and its index entries (and re-checks foreign keys) for it.
#[derive(Default)]
struct SetClause<'a> {
    columns: Vec<&'static str>,
    args: Vec<&'a dyn ToSql>,
}

impl<'a> SetClause<'a> {
    fn add<T: ToSql>(&mut self, column: &'static str, value: &'a Option<T>) {
        if let Some(v) = value {
            self.columns.push(column);
            self.args.push(v);
        }
    }

    fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    fn finish(self, head: &str, tail: &str) -> (String, Vec<&'a dyn ToSql>) {
        (
            format!("{head}{}{tail}", self.columns.join(", ")),
            self.args,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn upsert(name: &str) -> Vec<(String, Vec<SqlArg>)> {
        vec![(
            "INSERT INTO pipeline_state (name, enabled, updated_at) VALUES (?, 1, 0) RETURNING enabled"
                .to_owned(),
            vec![SqlArg::Text(name.to_owned())],
        )]
    }

    #[tokio::test]
    async fn a_failing_write_in_a_batch_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path, Durability::Normal).await.unwrap();
        drop(store);
        // One batch, built here rather than left to the timing of a channel.
        let conn = open(&path, Durability::Normal).unwrap();
        let mut batch: Vec<(Write, Reply)> = vec![
            (Write::Exec(upsert("a")), None),
            (Write::Exec(upsert("a")), None),
            (Write::Exec(upsert("b")), None),
        ];
        let done = commit_batch(&conn, &mut batch);
        assert!(batch.is_empty());
        let results: Vec<_> = done.into_iter().map(|(_, r)| r).collect();
        assert!(matches!(results[0], Ok(Written::Id(1))), "{results:?}");
        assert!(
            matches!(&results[1], Err(StoreError::Database(m)) if m.contains("UNIQUE")),
            "{results:?}"
        );
        assert!(matches!(results[2], Ok(Written::Id(1))), "{results:?}");
        let names: Vec<String> = conn
            .prepare("SELECT name FROM pipeline_state ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            names,
            ["a", "b"],
            "both neighbours of the failure are committed"
        );
    }

    #[tokio::test]
    async fn exec_results_and_a_constraint_failure_that_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::Normal)
            .await
            .unwrap();
        assert_eq!(store.exec(upsert("a")).await.unwrap(), 1, "RETURNING value");
        // Queued together, so they share a batch: the duplicate fails alone.
        let (dup, other) = tokio::join!(store.exec(upsert("a")), store.exec(upsert("b")));
        match dup {
            Err(StoreError::Database(m)) => assert!(m.contains("UNIQUE constraint failed"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(other.unwrap(), 1);
        let count = store
            .exec(vec![(
                "UPDATE pipeline_state SET updated_at = ?".to_owned(),
                vec![SqlArg::Int(5)],
            )])
            .await
            .unwrap();
        assert_eq!(count, 2, "affected rows");
        let none = store
            .exec(vec![(
                "UPDATE pipeline_state SET enabled = 0 WHERE name = ? RETURNING 1".to_owned(),
                vec![SqlArg::Text("zz".into())],
            )])
            .await
            .unwrap();
        assert_eq!(none, 0, "RETURNING without a row");
    }

    #[tokio::test]
    async fn the_write_connection_has_the_pools_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let _store = Store::open(&path, Durability::Full).await.unwrap();
        let conn = open(&path, Durability::Full).unwrap();
        let int = |pragma: &str| -> i64 {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
                .unwrap()
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(int("foreign_keys"), 1);
        assert_eq!(int("synchronous"), 2, "FULL");
        assert_eq!(int("busy_timeout"), 10_000);
        assert_eq!(int("journal_size_limit"), 67_108_864);
        assert_eq!(int("cache_size"), -4000);
        drop(conn);
        let conn = open(&path, Durability::Normal).unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
    }
}
