//! The PostgreSQL writer: one task owns one connection and commits batches
//! of writes as the SQLite writer does. Each write is as few round trips as
//! PostgreSQL allows: a new run with its payload and nodes is one statement
//! (data-modifying CTEs), log lines are one `UNNEST` insert per batch.
//! A lost connection is reopened with backoff while writers wait in the
//! queue; nothing queued is dropped.

use sluice_shared::run::{LogLine, RunId};
use sluice_shared::time::{equal_jitter, exponential};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};
use sqlx::query::Query;
// Dynamic SQL here is built from fixed fragments and `$N` markers only;
// every value is bound.
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres, Row};
use tokio::sync::mpsc;

use super::{
    Done, MAX_BATCH, NodeRow, PanicLog, Reply, RunRow, SqlArg, StallHook, Write, Written,
    done_notes,
};
use super::{fail_all, json_text};
use crate::store::StoreError;
use crate::store::records::{NodeChange, RunChange};

/// Starts the writer task on an open connection; `options` reopen it after a loss.
pub(crate) fn start(
    conn: PgConnection,
    options: PgConnectOptions,
    rx: mpsc::Receiver<(Write, Reply)>,
) {
    tokio::spawn(run(conn, options, rx));
}

async fn run(
    mut conn: PgConnection,
    options: PgConnectOptions,
    mut rx: mpsc::Receiver<(Write, Reply)>,
) {
    let _guard = PanicLog;
    let stall = StallHook::from_env();
    let mut batch: Vec<(Write, Reply)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        stall.wait_async().await;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let done = commit_batch(&mut conn, &mut batch).await;
        let failed = done.iter().any(|(_, r)| r.is_err());
        for (reply, result) in done {
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
        if failed && conn.ping().await.is_err() {
            match reconnect(&options, &rx).await {
                Some(c) => conn = c,
                None => return,
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the store write connection failed");
    }
}

/// Reopens the write connection, backing off up to 10 s between attempts;
/// `None` once every sender is gone (the daemon is stopping).
async fn reconnect(
    options: &PgConnectOptions,
    rx: &mpsc::Receiver<(Write, Reply)>,
) -> Option<PgConnection> {
    let mut attempt = 0u32;
    loop {
        match PgConnection::connect_with(options).await {
            Ok(conn) => {
                tracing::info!(attempts = attempt + 1, "store write connection reopened");
                return Some(conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reopen the store write connection; retrying");
            }
        }
        if rx.is_closed() {
            return None;
        }
        let wait = equal_jitter(exponential(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
            attempt.saturating_add(2),
        ));
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

/// Runs a statement without parameters or results (transaction control).
async fn control(conn: &mut PgConnection, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Applies and commits `batch` (emptied); see the SQLite writer for the policy.
async fn commit_batch(conn: &mut PgConnection, batch: &mut Vec<(Write, Reply)>) -> Done {
    let mut results: Vec<Result<Written, StoreError>> = Vec::with_capacity(batch.len());
    if let Err(e) = control(conn, "BEGIN").await {
        return fail_all(batch, &e);
    }
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
        // PostgreSQL refuses every statement after a failed one until the
        // transaction ends: redo the batch with a savepoint per write.
        results.clear();
        let restarted = match control(conn, "ROLLBACK").await {
            Ok(()) => control(conn, "BEGIN").await,
            Err(e) => Err(e),
        };
        if let Err(e) = restarted {
            return fail_all(batch, &e);
        }
        for (write, _) in batch.iter() {
            results.push(apply_in_savepoint(conn, write).await);
        }
    }
    if let Err(err) = control(conn, "COMMIT").await {
        let _ = control(conn, "ROLLBACK").await;
        for r in &mut results {
            *r = Err(err.clone());
        }
    }
    batch
        .drain(..)
        .zip(results)
        .map(|((_, reply), result)| (reply, result))
        .collect()
}

async fn apply_in_savepoint(conn: &mut PgConnection, write: &Write) -> Result<Written, StoreError> {
    control(conn, "SAVEPOINT w").await?;
    match apply(conn, write).await {
        Ok(w) => {
            control(conn, "RELEASE w").await?;
            Ok(w)
        }
        Err(e) => {
            control(conn, "ROLLBACK TO w").await?;
            control(conn, "RELEASE w").await?;
            Err(e)
        }
    }
}

/// Text as PostgreSQL can hold it: its `text` cannot contain NUL (SQLite's
/// can), so a NUL that reaches a text column (a node's error, a reason) is
/// stored as U+FFFD instead of failing the whole write. JSON columns keep
/// NUL: it is escaped there, and `json` (not `jsonb`) accepts the escape.
pub(crate) fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Binds store arguments to a query.
fn bind<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    args: &'q [SqlArg],
) -> Query<'q, Postgres, PgArguments> {
    for a in args {
        q = match a {
            SqlArg::Int(i) => q.bind(*i),
            SqlArg::Real(f) => q.bind(*f),
            SqlArg::Text(t) => q.bind(pg_text(t)),
            SqlArg::NullInt => q.bind(None::<i64>),
            SqlArg::NullText => q.bind(None::<&str>),
        };
    }
    q
}

/// The first column of a `RETURNING` row as an integer (`RETURNING 1` is an int4).
fn returned(row: &PgRow) -> Result<i64, StoreError> {
    match row.try_get::<i64, _>(0) {
        Ok(v) => Ok(v),
        Err(_) => Ok(i64::from(row.try_get::<i32, _>(0)?)),
    }
}

/// Runs one statement; its `RETURNING` value, or the rows it changed.
async fn exec(conn: &mut PgConnection, sql: &str, args: &[SqlArg]) -> Result<Written, StoreError> {
    let q = bind(sqlx::query(AssertSqlSafe(sql)), args);
    if sql.to_ascii_uppercase().contains("RETURNING") {
        Ok(match q.fetch_optional(&mut *conn).await? {
            Some(row) => Written::Id(returned(&row)?),
            None => Written::Nothing,
        })
    } else {
        Ok(Written::Count(q.execute(&mut *conn).await?.rows_affected()))
    }
}

/// The run a delivery key names, unless expired.
async fn keyed_run(
    conn: &mut PgConnection,
    pipeline: &str,
    key: &str,
    at: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT run_id FROM trigger_keys WHERE pipeline = $1 AND key = $2 AND expires_at > $3",
    )
    .bind(pipeline)
    .bind(key)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Inserts a new run, its payload and its nodes in one statement: queued, or
/// (executed before it was written) finished with its attempts.
async fn insert_run(conn: &mut PgConnection, row: &RunRow, at: i64) -> Result<i64, StoreError> {
    let new = &row.run;
    let done = new.done.as_ref();
    let count = new.nodes.len();
    let mut ids = Vec::with_capacity(count);
    let mut positions = Vec::with_capacity(count);
    let mut states = Vec::with_capacity(count);
    let mut attempts = Vec::with_capacity(count);
    let mut outputs = Vec::with_capacity(count);
    let mut errors = Vec::with_capacity(count);
    let mut reused = Vec::with_capacity(count);
    let mut started = Vec::with_capacity(count);
    let mut finished = Vec::with_capacity(count);
    for (position, node) in new.nodes.iter().enumerate() {
        let n = NodeRow::of(new, position, at);
        ids.push(node.id.as_str());
        positions.push(i64::try_from(position).unwrap_or(i64::MAX));
        states.push(n.state);
        attempts.push(n.attempts);
        outputs.push(n.output);
        errors.push(n.error.map(|e| pg_text(e).into_owned()));
        reused.push(n.reused_from);
        started.push(n.started_at);
        finished.push(n.finished_at);
    }
    let tried = done.map_or(&[][..], |d| d.attempts.as_slice());
    let a_nodes: Vec<&str> = tried.iter().map(|a| a.node.as_str()).collect();
    let a_numbers: Vec<i64> = tried.iter().map(|a| i64::from(a.attempt)).collect();
    let a_states: Vec<&str> = tried.iter().map(|a| a.state.as_str()).collect();
    let a_at: Vec<i64> = tried.iter().map(|a| a.at).collect();
    let a_errors: Vec<Option<String>> = tried
        .iter()
        .map(|a| a.error.as_deref().map(|e| pg_text(e).into_owned()))
        .collect();
    let id: i64 = sqlx::query_scalar(
        "WITH r AS (
            INSERT INTO runs (pipeline, version_id, state, trigger_kind, \"user\", retry_of, created_at, deadline, started_at, finished_at, error)
            VALUES ($1, $2, $16, $3, $4, $5, $6, $7, $17, $18, $19) RETURNING id
         ), p AS (
            INSERT INTO run_payloads (run_id, trigger, inputs)
            SELECT id, $8::json, $9::json FROM r
         ), n AS (
            INSERT INTO run_nodes (run_id, node_id, position, state, attempts, output, error, reused_from, started_at, finished_at)
            SELECT r.id, n.node_id, n.position, n.state, n.attempts, n.output::json, n.error, n.reused_from, n.started_at, n.finished_at
            FROM r, UNNEST($10::text[], $11::bigint[], $12::text[], $20::bigint[], $13::text[], $21::text[], $14::bigint[], $22::bigint[], $15::bigint[])
                 AS n (node_id, position, state, attempts, output, error, reused_from, started_at, finished_at)
         ), a AS (
            INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at, error)
            SELECT r.id, a.node_id, a.attempt, a.state, a.at, a.at, a.error
            FROM r, UNNEST($23::text[], $24::bigint[], $25::text[], $26::bigint[], $27::text[])
                 AS a (node_id, attempt, state, at, error)
         )
         SELECT id FROM r",
    )
    .bind(&new.pipeline)
    .bind(new.version_id.0)
    .bind(new.trigger.kind.as_str())
    .bind(new.trigger.user.as_deref().map(pg_text))
    .bind(new.retry_of.map(|r| r.0))
    .bind(at)
    .bind(new.deadline)
    .bind(row.trigger.as_str())
    .bind(row.inputs.as_str())
    .bind(&ids)
    .bind(&positions)
    .bind(&states)
    .bind(&outputs)
    .bind(&reused)
    .bind(&finished)
    .bind(done.map_or("queued", |d| d.state.as_str()))
    .bind(done.map(|d| d.started_at))
    .bind(done.map(|d| d.finished_at))
    .bind(done.and_then(|d| d.error.as_deref()).map(pg_text))
    .bind(&attempts)
    .bind(&errors)
    .bind(&started)
    .bind(&a_nodes)
    .bind(&a_numbers)
    .bind(&a_states)
    .bind(&a_at)
    .bind(&a_errors)
    .fetch_one(&mut *conn)
    .await?;
    if done.is_some_and(|d| !d.notes.is_empty()) {
        insert_logs(conn, &done_notes(new, id)).await?;
    }
    Ok(id)
}

async fn apply(conn: &mut PgConnection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::SaveVersion {
            pipeline,
            hash,
            definition,
            source_path,
            at,
        } => {
            let existing: Option<(i64, String)> = sqlx::query_as(
                "SELECT id, hash FROM pipeline_versions WHERE pipeline = $1 ORDER BY version DESC LIMIT 1",
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
                 VALUES ($1, COALESCE((SELECT MAX(version) FROM pipeline_versions WHERE pipeline = $1), 0) + 1, $2, $3, $4, $5)
                 RETURNING id",
            )
            .bind(pipeline)
            .bind(hash)
            .bind(definition)
            .bind(source_path.as_deref())
            .bind(at)
            .fetch_one(&mut *conn)
            .await?;
            Ok(Written::Id(id))
        }
        Write::CreateRun(row, at) => Ok(Written::Id(insert_run(conn, row, *at).await?)),
        Write::Run(run, change) => {
            let (sql, args) = update_run(*run, change);
            if changed(conn, &sql, &args).await? == 0 {
                return Err(StoreError::NotFound(format!("run {run}")));
            }
            Ok(Written::Nothing)
        }
        Write::Node(run, node, change) => {
            let (sql, args) = update_node(*run, node, change);
            if changed(conn, &sql, &args).await? == 0 {
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
                "INSERT INTO attempts (run_id, node_id, attempt, state, started_at) VALUES ($1, $2, $3, 'running', $4)",
            )
            .bind(run.0)
            .bind(node)
            .bind(i64::from(*attempt))
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(Written::Nothing)
        }
        Write::AttemptProcess {
            run,
            node,
            attempt,
            pgid,
            start,
        } => {
            sqlx::query(
                "UPDATE attempts SET pgid = $1, pstart = $2 WHERE run_id = $3 AND node_id = $4 AND attempt = $5",
            )
            .bind(i64::from(*pgid))
            .bind(i64::try_from(*start).unwrap_or(i64::MAX))
            .bind(run.0)
            .bind(node)
            .bind(i64::from(*attempt))
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
            sqlx::query(
                "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at, error)
                 VALUES ($1, $2, $3, $4, $5, $5, $6)
                 ON CONFLICT (run_id, node_id, attempt) DO UPDATE SET state = $4, finished_at = $5, error = $6",
            )
            .bind(run.0)
            .bind(node)
            .bind(i64::from(*attempt))
            .bind(state.as_str())
            .bind(at)
            .bind(error.as_deref().map(pg_text))
            .execute(&mut *conn)
            .await?;
            Ok(Written::Nothing)
        }
        Write::Logs(lines) => insert_logs(conn, lines).await,
        Write::Exec(statements) => {
            let mut last = Written::Nothing;
            for (sql, args) in statements {
                last = exec(conn, sql, args).await?;
            }
            Ok(last)
        }
        Write::CreateRunOnce {
            run,
            key,
            expires_at,
            at,
        } => {
            if let Some(id) = keyed_run(conn, &run.run.pipeline, key, *at).await? {
                return Ok(Written::Existing(id));
            }
            let id = insert_run(conn, run, *at).await?;
            sqlx::query(
                "INSERT INTO trigger_keys (pipeline, key, run_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (pipeline, key) DO UPDATE SET run_id = $3, created_at = $4, expires_at = $5",
            )
            .bind(&run.run.pipeline)
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
            if let Write::CreateRunOnce { run, key, at, .. } = then.as_ref()
                && let Some(id) = keyed_run(conn, &run.run.pipeline, key, *at).await?
            {
                return Ok(Written::Existing(id));
            }
            if *cap < i64::MAX {
                let used: Option<i64> =
                    sqlx::query_scalar("SELECT runs FROM usage WHERE \"user\" = $1 AND day = $2")
                        .bind(user)
                        .bind(day)
                        .fetch_optional(&mut *conn)
                        .await?;
                let used = used.unwrap_or(0);
                if used >= *cap {
                    return Ok(Written::OverCap(used));
                }
            }
            let result = Box::pin(apply(conn, then)).await?;
            if let Written::Id(_) = result {
                sqlx::query(
                    "INSERT INTO usage (\"user\", day, runs) VALUES ($1, $2, 1)
                     ON CONFLICT (\"user\", day) DO UPDATE SET runs = usage.runs + 1",
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
                Box::pin(apply(conn, w)).await?;
            }
            Ok(Written::Nothing)
        }
        Write::Prune {
            finished_before,
            keep_per_pipeline,
        } => {
            // Bounded per write, as on SQLite: the caller repeats until nothing is left.
            let by_age = sqlx::query(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1 LIMIT 500)",
            )
            .bind(finished_before)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            let by_count = sqlx::query(
                "DELETE FROM runs WHERE id IN (
                    SELECT id FROM (
                        SELECT id, finished_at, ROW_NUMBER() OVER (PARTITION BY pipeline ORDER BY id DESC) AS n FROM runs
                    ) AS ranked WHERE n > $1 AND finished_at IS NOT NULL LIMIT 500
                )",
            )
            .bind(keep_per_pipeline)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(Written::Count(by_age + by_count))
        }
    }
}

/// Rows an UPDATE (or, with nothing to set, an existence check) touched.
async fn changed(conn: &mut PgConnection, sql: &str, args: &[SqlArg]) -> Result<u64, StoreError> {
    if sql.starts_with("SELECT") {
        Ok(u64::from(
            bind(sqlx::query(AssertSqlSafe(sql)), args)
                .fetch_optional(&mut *conn)
                .await?
                .is_some(),
        ))
    } else {
        Ok(bind(sqlx::query(AssertSqlSafe(sql)), args)
            .execute(&mut *conn)
            .await?
            .rows_affected())
    }
}

/// Inserts a batch of log lines in one statement; a line already stored is kept.
async fn insert_logs(conn: &mut PgConnection, lines: &[LogLine]) -> Result<Written, StoreError> {
    let mut runs = Vec::with_capacity(lines.len());
    let mut nodes = Vec::with_capacity(lines.len());
    let mut attempts = Vec::with_capacity(lines.len());
    let mut seqs = Vec::with_capacity(lines.len());
    let mut ats = Vec::with_capacity(lines.len());
    let mut streams = Vec::with_capacity(lines.len());
    let mut texts = Vec::with_capacity(lines.len());
    for l in lines {
        runs.push(l.run.0);
        nodes.push(l.node.as_str());
        attempts.push(i64::from(l.attempt));
        seqs.push(i64::from(l.seq));
        ats.push(l.at_ms);
        streams.push(l.stream.as_str());
        texts.push(pg_text(&l.line));
    }
    sqlx::query(
        "INSERT INTO logs (run_id, node_id, attempt, seq, at, stream, line)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&runs)
    .bind(&nodes)
    .bind(&attempts)
    .bind(&seqs)
    .bind(&ats)
    .bind(&streams)
    .bind(&texts)
    .execute(&mut *conn)
    .await?;
    Ok(Written::Count(lines.len() as u64))
}

/// The UPDATE of a [`RunChange`]: only the fields it sets, so the few shapes
/// stay in the connection's statement cache.
fn update_run(run: RunId, change: &RunChange) -> (String, Vec<SqlArg>) {
    let mut set = SetClause::default();
    set.add(
        "state",
        change.state.map(|s| SqlArg::Text(s.as_str().into())),
    );
    if let Some(at) = change.started_at {
        set.push_expr("started_at = COALESCE(started_at, $)", SqlArg::Int(at));
    }
    set.add("finished_at", change.finished_at.map(SqlArg::Int));
    set.add("wake_at", change.wake_at.map(SqlArg::opt_int));
    set.add("error", change.error.clone().map(SqlArg::opt_text));
    set.add("deadline", change.deadline.map(SqlArg::opt_int));
    set.finish(
        "runs",
        "SELECT 1 FROM runs",
        "id = $",
        vec![SqlArg::Int(run.0)],
    )
}

/// The UPDATE of a [`NodeChange`] (see [`update_run`]).
fn update_node(run: RunId, node: &str, change: &NodeChange) -> (String, Vec<SqlArg>) {
    let mut set = SetClause::default();
    set.add(
        "state",
        change.state.map(|s| SqlArg::Text(s.as_str().into())),
    );
    set.add(
        "attempts",
        change.attempts.map(|a| SqlArg::Int(i64::from(a))),
    );
    if let Some(output) = &change.output {
        set.push_expr(
            "output = $::json",
            SqlArg::opt_text(output.as_ref().map(json_text)),
        );
    }
    set.add("error", change.error.clone().map(SqlArg::opt_text));
    if let Some(at) = change.started_at {
        set.push_expr("started_at = COALESCE(started_at, $)", SqlArg::Int(at));
    }
    set.add("finished_at", change.finished_at.map(SqlArg::opt_int));
    set.add("wake_at", change.wake_at.map(SqlArg::opt_int));
    set.finish(
        "run_nodes",
        "SELECT 1 FROM run_nodes",
        "run_id = $ AND node_id = $",
        vec![SqlArg::Int(run.0), SqlArg::Text(node.to_owned())],
    )
}

/// A `SET` list with numbered parameters: each `$` in an expression becomes
/// the next `$N`.
#[derive(Default)]
struct SetClause {
    columns: Vec<String>,
    args: Vec<SqlArg>,
}

impl SetClause {
    fn add(&mut self, column: &str, value: Option<SqlArg>) {
        if let Some(v) = value {
            self.push_expr(&format!("{column} = $"), v);
        }
    }

    fn push_expr(&mut self, expr: &str, value: SqlArg) {
        self.args.push(value);
        let n = self.args.len();
        self.columns.push(expr.replacen('$', &format!("${n}"), 1));
    }

    /// `UPDATE table SET … WHERE key`, or `exists WHERE key` when nothing is set.
    fn finish(
        mut self,
        table: &str,
        exists: &str,
        key: &str,
        key_args: Vec<SqlArg>,
    ) -> (String, Vec<SqlArg>) {
        let head = if self.columns.is_empty() {
            exists.to_owned()
        } else {
            format!("UPDATE {table} SET {}", self.columns.join(", "))
        };
        let mut key_sql = String::new();
        let mut rest = key;
        for arg in key_args {
            self.args.push(arg);
            let n = self.args.len();
            let (before, after) = rest.split_once('$').unwrap_or((rest, ""));
            key_sql.push_str(before);
            key_sql.push_str(&format!("${n}"));
            rest = after;
        }
        key_sql.push_str(rest);
        (format!("{head} WHERE {key_sql}"), self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_number_their_parameters_in_order() {
        let (sql, args) = update_run(
            RunId(7),
            &RunChange {
                state: Some(sluice_shared::run::RunState::Running),
                started_at: Some(5),
                wake_at: Some(None),
                ..Default::default()
            },
        );
        assert_eq!(
            sql,
            "UPDATE runs SET state = $1, started_at = COALESCE(started_at, $2), wake_at = $3 WHERE id = $4"
        );
        assert_eq!(
            args,
            [
                SqlArg::Text("running".into()),
                SqlArg::Int(5),
                SqlArg::NullInt,
                SqlArg::Int(7)
            ]
        );
        let (sql, args) = update_node(RunId(7), "a", &NodeChange::default());
        assert_eq!(
            sql,
            "SELECT 1 FROM run_nodes WHERE run_id = $1 AND node_id = $2"
        );
        assert_eq!(args.len(), 2);
    }
}
