//! The single writer: one task owns the SQLite write connection and commits
//! queued writes in small batches (group commit), each write in its own
//! savepoint so one bad write does not undo its neighbours.

use serde_json::Value;
use sluice_shared::run::{AttemptState, LogLine, RunId};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::records::{NewRun, NodeChange, RunChange, VersionId};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

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
    CreateRun(Box<NewRun>, i64),
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
        run: Box<NewRun>,
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

/// A value bound to a statement of [`Write::Exec`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
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

/// Runs until every sender is dropped.
pub(crate) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<(Write, Reply)>) {
    let mut batch: Vec<(Write, Reply)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch).await;
    }
    let _ = conn.close().await;
}

async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<(Write, Reply)>) {
    let mut results: Vec<Result<Written, StoreError>> = Vec::with_capacity(batch.len());
    let begun = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await;
    if let Err(e) = begun {
        let err = StoreError::from(e);
        for (_, reply) in batch.drain(..) {
            if let Some(tx) = reply {
                let _ = tx.send(Err(err.clone()));
            }
        }
        return;
    }
    // Optimistic pass without savepoints (half the statements); almost no batch
    // has a failing write. If one fails, start over with a savepoint per write
    // so the failure stays its own.
    let mut failed = false;
    for (write, _) in batch.iter() {
        match apply(conn, write).await {
            Ok(w) => results.push(Ok(w)),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if failed {
        results.clear();
        let restarted = match sqlx::query("ROLLBACK").execute(&mut *conn).await {
            Ok(_) => sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = restarted {
            let err = StoreError::from(e);
            for (_, reply) in batch.drain(..) {
                if let Some(tx) = reply {
                    let _ = tx.send(Err(err.clone()));
                }
            }
            return;
        }
        for (write, _) in batch.iter() {
            results.push(apply_in_savepoint(conn, write).await);
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let err = StoreError::from(e);
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        for r in &mut results {
            *r = Err(err.clone());
        }
    }
    for ((_, reply), result) in batch.drain(..).zip(results) {
        if let Some(tx) = reply {
            let _ = tx.send(result);
        } else if let Err(e) = result {
            tracing::error!(error = %e, "a background store write failed");
        }
    }
}

async fn apply_in_savepoint(
    conn: &mut SqliteConnection,
    write: &Write,
) -> Result<Written, StoreError> {
    sqlx::query("SAVEPOINT w").execute(&mut *conn).await?;
    match apply(conn, write).await {
        Ok(w) => {
            sqlx::query("RELEASE w").execute(&mut *conn).await?;
            Ok(w)
        }
        Err(e) => {
            sqlx::query("ROLLBACK TO w").execute(&mut *conn).await?;
            sqlx::query("RELEASE w").execute(&mut *conn).await?;
            Err(e)
        }
    }
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn apply<'a>(
    conn: &'a mut SqliteConnection,
    write: &'a Write,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Written, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        match write {
            Write::SaveVersion {
                pipeline,
                hash,
                definition,
                source_path,
                at,
            } => {
                let existing: Option<(i64, String)> = sqlx::query_as(
                    "SELECT id, hash FROM pipeline_versions WHERE pipeline = ? ORDER BY version DESC LIMIT 1",
                )
                .bind(pipeline)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some((id, h)) = &existing
                    && h == hash
                {
                    return Ok(Written::Id(*id));
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO pipeline_versions (pipeline, version, hash, definition, source_path, created_at)
                     VALUES (?1, COALESCE((SELECT MAX(version) FROM pipeline_versions WHERE pipeline = ?1), 0) + 1, ?2, ?3, ?4, ?5)
                     RETURNING id",
                )
                .bind(pipeline)
                .bind(hash)
                .bind(definition)
                .bind(source_path)
                .bind(at)
                .fetch_one(&mut *conn)
                .await?;
                Ok(Written::Id(id))
            }
            Write::CreateRun(new, at) => {
                let trigger = serde_json::to_string(&new.trigger)
                    .map_err(|e| StoreError::Data(e.to_string()))?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO runs (pipeline, version_id, state, trigger, trigger_kind, user, inputs, retry_of, created_at, deadline)
                     VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                )
                .bind(&new.pipeline)
                .bind(new.version_id.0)
                .bind(trigger)
                .bind(new.trigger.kind.as_str())
                .bind(&new.trigger.user)
                .bind(json_text(&new.inputs))
                .bind(new.retry_of.map(|r| r.0))
                .bind(at)
                .bind(new.deadline)
                .fetch_one(&mut *conn)
                .await?;
                // One multi-row insert: statements, not rows, are what the writer pays for.
                let rows: Vec<(usize, &super::NewNode)> = new.nodes.iter().enumerate().collect();
                for chunk in rows.chunks(100) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO run_nodes (run_id, node_id, position, state, output, reused_from, finished_at) ",
                    );
                    q.push_values(chunk, |mut b, (position, node)| {
                        let (state, output, reused_from) = match &node.reused {
                            Some((from, output)) => {
                                ("succeeded", Some(json_text(output)), Some(from.0))
                            }
                            None => ("pending", None, None),
                        };
                        b.push_bind(id)
                            .push_bind(node.id.clone())
                            .push_bind(*position as i64)
                            .push_bind(state)
                            .push_bind(output)
                            .push_bind(reused_from)
                            .push_bind(reused_from.map(|_| *at));
                    });
                    q.build().execute(&mut *conn).await?;
                }
                Ok(Written::Id(id))
            }
            Write::Run(run, change) => {
                let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE runs SET id = id");
                if let Some(state) = change.state {
                    q.push(", state = ").push_bind(state.as_str());
                }
                if let Some(at) = change.started_at {
                    q.push(", started_at = COALESCE(started_at, ")
                        .push_bind(at)
                        .push(")");
                }
                if let Some(at) = change.finished_at {
                    q.push(", finished_at = ").push_bind(at);
                }
                if let Some(wake) = change.wake_at {
                    q.push(", wake_at = ").push_bind(wake);
                }
                if let Some(error) = &change.error {
                    q.push(", error = ").push_bind(error.clone());
                }
                if let Some(deadline) = change.deadline {
                    q.push(", deadline = ").push_bind(deadline);
                }
                q.push(" WHERE id = ").push_bind(run.0);
                let done = q.build().execute(&mut *conn).await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("run {run}")));
                }
                Ok(Written::Nothing)
            }
            Write::Node(run, node, change) => {
                let mut q =
                    sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE run_nodes SET run_id = run_id");
                if let Some(state) = change.state {
                    q.push(", state = ").push_bind(state.as_str());
                }
                if let Some(n) = change.attempts {
                    q.push(", attempts = ").push_bind(i64::from(n));
                }
                if let Some(output) = &change.output {
                    q.push(", output = ")
                        .push_bind(output.as_ref().map(json_text));
                }
                if let Some(error) = &change.error {
                    q.push(", error = ").push_bind(error.clone());
                }
                if let Some(at) = change.started_at {
                    q.push(", started_at = COALESCE(started_at, ")
                        .push_bind(at)
                        .push(")");
                }
                if let Some(at) = change.finished_at {
                    q.push(", finished_at = ").push_bind(at);
                }
                if let Some(wake) = change.wake_at {
                    q.push(", wake_at = ").push_bind(wake);
                }
                q.push(" WHERE run_id = ")
                    .push_bind(run.0)
                    .push(" AND node_id = ")
                    .push_bind(node.clone());
                let done = q.build().execute(&mut *conn).await?;
                if done.rows_affected() == 0 {
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
                sqlx::query(
                    "INSERT INTO attempts (run_id, node_id, attempt, state, started_at) VALUES (?, ?, ?, 'running', ?)
                     ON CONFLICT (run_id, node_id, attempt) DO NOTHING",
                )
                .bind(run.0)
                .bind(node)
                .bind(i64::from(*attempt))
                .bind(at)
                .execute(&mut *conn)
                .await?;
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
                sqlx::query(
                    "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                     ON CONFLICT (run_id, node_id, attempt) DO UPDATE SET state = ?4, finished_at = ?5, error = ?6",
                )
                .bind(run.0)
                .bind(node)
                .bind(i64::from(*attempt))
                .bind(state.as_str())
                .bind(at)
                .bind(error)
                .execute(&mut *conn)
                .await?;
                Ok(Written::Nothing)
            }
            Write::Logs(lines) => {
                for chunk in lines.chunks(100) {
                    let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT OR IGNORE INTO logs (run_id, node_id, attempt, seq, at, stream, line) ",
                    );
                    q.push_values(chunk, |mut b, l| {
                        b.push_bind(l.run.0)
                            .push_bind(l.node.clone())
                            .push_bind(i64::from(l.attempt))
                            .push_bind(i64::from(l.seq))
                            .push_bind(l.at_ms)
                            .push_bind(l.stream.clone())
                            .push_bind(l.line.clone());
                    });
                    q.build().execute(&mut *conn).await?;
                }
                Ok(Written::Count(lines.len() as u64))
            }
            Write::Exec(statements) => {
                let mut last = Written::Nothing;
                for (sql, args) in statements {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                    for a in args {
                        q = match a {
                            SqlArg::Null => q.bind(None::<i64>),
                            SqlArg::Int(i) => q.bind(*i),
                            SqlArg::Real(f) => q.bind(*f),
                            SqlArg::Text(t) => q.bind(t.clone()),
                        };
                    }
                    if sql.to_ascii_uppercase().contains("RETURNING") {
                        let row = q.fetch_optional(&mut *conn).await?;
                        last = match row {
                            Some(r) => Written::Id(sqlx::Row::try_get::<i64, _>(&r, 0)?),
                            None => Written::Nothing,
                        };
                    } else {
                        last = Written::Count(q.execute(&mut *conn).await?.rows_affected());
                    }
                }
                Ok(last)
            }
            Write::CreateRunOnce {
                run,
                key,
                expires_at,
                at,
            } => {
                let existing: Option<i64> = sqlx::query_scalar(
                    "SELECT run_id FROM trigger_keys WHERE pipeline = ? AND key = ? AND expires_at > ?",
                )
                .bind(&run.pipeline)
                .bind(key)
                .bind(at)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some(id) = existing {
                    return Ok(Written::Existing(id));
                }
                let Written::Id(id) = apply(conn, &Write::CreateRun(run.clone(), *at)).await?
                else {
                    return Err(StoreError::Data("creating a run returned no id".into()));
                };
                sqlx::query(
                    "INSERT INTO trigger_keys (pipeline, key, run_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (pipeline, key) DO UPDATE SET run_id = ?3, created_at = ?4, expires_at = ?5",
                )
                .bind(&run.pipeline)
                .bind(key)
                .bind(id)
                .bind(at)
                .bind(expires_at)
                .execute(&mut *conn)
                .await?;
                Ok(Written::Id(id))
            }
            Write::Charged {
                user,
                day,
                cap,
                then,
            } => {
                // A redelivery finds its run even when the cap is reached since.
                if let Write::CreateRunOnce { run, key, at, .. } = then.as_ref() {
                    let existing: Option<i64> = sqlx::query_scalar(
                        "SELECT run_id FROM trigger_keys WHERE pipeline = ? AND key = ? AND expires_at > ?",
                    )
                    .bind(&run.pipeline)
                    .bind(key)
                    .bind(at)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if let Some(id) = existing {
                        return Ok(Written::Existing(id));
                    }
                }
                let used: i64 =
                    sqlx::query_scalar("SELECT runs FROM usage WHERE user = ? AND day = ?")
                        .bind(user)
                        .bind(day)
                        .fetch_optional(&mut *conn)
                        .await?
                        .unwrap_or(0);
                if used >= *cap {
                    return Ok(Written::OverCap(used));
                }
                let result = apply(conn, then).await?;
                if let Written::Id(_) = result {
                    sqlx::query(
                        "INSERT INTO usage (user, day, runs) VALUES (?, ?, 1)
                         ON CONFLICT (user, day) DO UPDATE SET runs = runs + 1",
                    )
                    .bind(user)
                    .bind(day)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(result)
            }
            Write::All(writes) => {
                for w in writes {
                    apply(conn, w).await?;
                }
                Ok(Written::Nothing)
            }
            Write::Prune {
                finished_before,
                keep_per_pipeline,
            } => {
                let by_age = sqlx::query(
                    // Bounded per write so a first prune of a big store does not hold the
                    // single writer for long; the caller repeats until nothing is left.
                    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT 500)",
                )
                .bind(finished_before)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                let by_count = sqlx::query(
                    "DELETE FROM runs WHERE id IN (
                        SELECT id FROM (
                            SELECT id, finished_at, ROW_NUMBER() OVER (PARTITION BY pipeline ORDER BY id DESC) AS n FROM runs
                        ) WHERE n > ? AND finished_at IS NOT NULL LIMIT 500
                    )",
                )
                .bind(keep_per_pipeline)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                Ok(Written::Count(by_age + by_count))
            }
        }
    })
}

impl From<VersionId> for i64 {
    fn from(v: VersionId) -> Self {
        v.0
    }
}
