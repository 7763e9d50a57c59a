//! Does the SQLite writer still need rusqlite? The writer's hot path, three ways,
//! on the same file settings (WAL, `synchronous = FULL`, the store's pragmas):
//!
//! - **store**: the real [`Store`] (`create_run` + `apply`): the rusqlite
//!   writer thread, its channel, group commit and replies, with N callers
//!   at once so batches of up to N writes form;
//! - **sqlx**: the same statements through one sqlx `SqliteConnection`
//!   (`sqlx::query` with its prepared statement cache), N writes per
//!   transaction, driven from a tokio task; and again from a thread of its
//!   own (a current-thread runtime, as a dedicated writer thread would be);
//! - **rusqlite**: the same statements with rusqlite's cached statements on
//!   one thread, N writes per transaction: the driver floor. `sqlx` against
//!   it is driver overhead; `store` against it is the writer's policy
//!   (channel, batching, replies).
//!
//! A run is two writes, as the engine writes a run of instant nodes: created
//! (INSERT INTO runs, its payload, 3 node rows), then finished
//! (an attempt insert, 3 node UPDATEs, a run UPDATE): 10 statements. Each way
//! runs N = 1, 16, 128 on a fresh file and prints runs/s, µs per write and
//! CPU µs per write (this process: the writer and its callers).
//!
//! `cargo bench -p sluice-daemon --bench store_writer`; `SLUICE_BENCH_SECS`
//! sets each measurement's duration (default 3 s).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{OpenFlags, params};
use serde_json::{Value, json};
use sluice_daemon::store::{
    Change, Durability, NewNode, NewRun, NodeChange, RunChange, Store, VersionId,
};
use sluice_shared::run::{NodeState, RunId, RunState, TriggerInfo};
use sluice_shared::time::now_ms;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

/// The nodes of every run.
const NODES: [&str; 3] = ["a", "b", "c"];
/// Writes per run (created, finished).
const WRITES_PER_RUN: usize = 2;
/// Writes per transaction measured.
const BATCHES: [usize; 3] = [1, 16, 128];

// The statements the store's SQLite writer runs for these writes, verbatim
// (`store/writer/sqlite.rs`: `insert_run`, `AttemptStart`, and the SET lists
// `update_node` and `update_run` build for the fields set here).
const INSERT_RUN: &str = "INSERT INTO runs (pipeline, version_id, state, trigger_kind, user, retry_of, created_at, deadline)
             VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)";
const INSERT_PAYLOAD: &str = "INSERT INTO run_payloads (run_id, trigger, inputs) VALUES (?, ?, ?)";
const INSERT_NODE: &str =
    "INSERT INTO run_nodes (run_id, node_id, position, state, output, reused_from, finished_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)";
const INSERT_ATTEMPT: &str = "INSERT INTO attempts (run_id, node_id, attempt, state, started_at) VALUES (?, ?, ?, 'running', ?)
                 ON CONFLICT (run_id, node_id, attempt) DO NOTHING";
const UPDATE_NODE: &str = "UPDATE run_nodes SET state = ?, attempts = ?, output = ?, started_at = COALESCE(started_at, ?), finished_at = ? WHERE run_id = ? AND node_id = ?";
const UPDATE_RUN: &str =
    "UPDATE runs SET state = ?, started_at = COALESCE(started_at, ?), finished_at = ? WHERE id = ?";

// The store's SQLite settings (`store/mod.rs`: `BUSY_TIMEOUT`, `pragmas()`,
// `open_sqlite`; the writer's statement cache in `writer/sqlite.rs`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
     PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -4000;";
const STATEMENT_CACHE: usize = 256;

/// What one measurement did.
struct Figures {
    runs: usize,
    elapsed: f64,
    cpu: f64,
}

impl Figures {
    fn writes(&self) -> f64 {
        (self.runs * WRITES_PER_RUN) as f64
    }

    /// Wall µs per write.
    fn us_per_write(&self) -> f64 {
        self.elapsed * 1e6 / self.writes()
    }

    /// CPU µs per write.
    fn cpu_per_write(&self) -> f64 {
        self.cpu * 1e6 / self.writes()
    }

    fn print(&self, n: usize, way: &str) {
        println!(
            "store_writer N={n:<3} {way:<44} {:>7.0} runs/s, {:>7.1} µs per write, {:>6.1} µs CPU per write ({} runs in {:.2} s)",
            self.runs as f64 / self.elapsed,
            self.us_per_write(),
            self.cpu_per_write(),
            self.runs,
            self.elapsed
        );
    }
}

/// CPU seconds this process has used so far.
fn cpu_seconds() -> f64 {
    sluice_daemon::procstat::read().map_or(0.0, |s| s.cpu_seconds)
}

/// A fresh store file at `path`, migrated, with the version the runs use.
async fn fresh(path: &Path) -> (Store, VersionId) {
    let store = Store::open(path, Durability::Full)
        .await
        .expect("open the store");
    let pipeline = sluice_shared::load_source(
        Path::new("bench.yaml"),
        "nodes:\n  - { id: a, kind: transform, output: { x: 1 } }\n  - { id: b, kind: transform, needs: [a], output: { x: 2 } }\n  - { id: c, kind: transform, needs: [b], output: { x: 3 } }\n",
        &Default::default(),
    )
    .pipeline
    .expect("valid benchmark pipeline");
    let version = store.save_version(&pipeline, None).await.expect("version");
    (store, version)
}

/// The run the store creates, with inputs that differ per run.
fn new_run(version: VersionId, n: usize) -> NewRun {
    NewRun {
        done: None,
        pipeline: "bench".into(),
        version_id: version,
        trigger: TriggerInfo::manual(None),
        inputs: json!({ "n": n }),
        retry_of: None,
        deadline: None,
        nodes: NODES
            .iter()
            .map(|id| NewNode {
                id: (*id).into(),
                reused: None,
            })
            .collect(),
    }
}

/// The output each node finishes with.
fn output(node: &str) -> Value {
    json!({ "node": node, "ok": true })
}

/// The "finished" write of a run, as changes for [`Store::apply`].
fn finish_changes(run: RunId) -> Vec<Change> {
    let at = now_ms();
    let mut changes = vec![Change::AttemptStart(run, NODES[0].into(), 1)];
    for node in NODES {
        changes.push(Change::Node(
            run,
            node.into(),
            NodeChange {
                state: Some(NodeState::Succeeded),
                attempts: Some(1),
                output: Some(Some(output(node))),
                started_at: Some(at),
                finished_at: Some(Some(at)),
                ..Default::default()
            },
        ));
    }
    changes.push(Change::Run(
        run,
        RunChange {
            state: Some(RunState::Succeeded),
            started_at: Some(at),
            finished_at: Some(at),
            ..Default::default()
        },
    ));
    changes
}

/// (a) The real store: `callers` tasks, each creating and finishing runs one
/// after another until `secs` have passed.
async fn via_store(path: &Path, callers: usize, secs: f64) -> Figures {
    let (store, version) = fresh(path).await;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut runs = 0;
            while Instant::now() < deadline {
                let id = store
                    .create_run(new_run(version, caller * 1_000_000 + runs))
                    .await
                    .expect("create_run");
                store.apply(finish_changes(id)).await.expect("apply");
                runs += 1;
            }
            runs
        });
    }
    let mut runs = 0;
    while let Some(r) = tasks.join_next().await {
        runs += r.expect("caller");
    }
    let figures = Figures {
        runs,
        elapsed: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu_before,
    };
    check(path, runs);
    figures
}

/// The encoded trigger and inputs of a run (the store's callers encode them per run too).
fn encoded(version: VersionId, n: usize) -> (NewRun, String, String) {
    let run = new_run(version, n);
    let trigger = serde_json::to_string(&run.trigger).expect("trigger");
    let inputs = run.inputs.to_string();
    (run, trigger, inputs)
}

/// (c) The same statements with rusqlite on this thread, `n` writes per transaction.
fn via_rusqlite(path: &Path, version: VersionId, n: usize, secs: f64) -> Figures {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(path, flags).expect("open");
    conn.busy_timeout(BUSY_TIMEOUT).expect("busy timeout");
    conn.execute_batch(PRAGMAS).expect("pragmas");
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let exec = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut runs = 0;
    let mut ids = Vec::with_capacity(n);
    while Instant::now() < deadline {
        ids.clear();
        exec("BEGIN IMMEDIATE");
        for lane in 0..n {
            let (run, trigger, inputs) = encoded(version, runs + lane);
            let at = now_ms();
            // As the writer: the new rowid, not RETURNING (a temporary b-tree).
            conn.prepare_cached(INSERT_RUN)
                .and_then(|mut s| {
                    s.execute(params![
                        run.pipeline,
                        run.version_id.0,
                        run.trigger.kind.as_str(),
                        run.trigger.user,
                        run.retry_of.map(|r| r.0),
                        at,
                        run.deadline,
                    ])
                })
                .expect("insert run");
            let id = conn.last_insert_rowid();
            conn.prepare_cached(INSERT_PAYLOAD)
                .and_then(|mut s| s.execute(params![id, trigger, inputs]))
                .expect("insert payload");
            let mut insert = conn.prepare_cached(INSERT_NODE).expect("prepare node");
            for (position, node) in run.nodes.iter().enumerate() {
                insert
                    .execute(params![
                        id,
                        node.id,
                        position as i64,
                        "pending",
                        None::<String>,
                        None::<i64>,
                        None::<i64>
                    ])
                    .expect("insert node");
            }
            ids.push(id);
        }
        exec("COMMIT");
        exec("BEGIN IMMEDIATE");
        for &id in &ids {
            let at = now_ms();
            conn.prepare_cached(INSERT_ATTEMPT)
                .and_then(|mut s| s.execute(params![id, NODES[0], 1i64, at]))
                .expect("insert attempt");
            for node in NODES {
                let changed = conn
                    .prepare_cached(UPDATE_NODE)
                    .and_then(|mut s| {
                        s.execute(params![
                            NodeState::Succeeded.as_str(),
                            1i64,
                            output(node).to_string(),
                            at,
                            at,
                            id,
                            node
                        ])
                    })
                    .expect("update node");
                assert_eq!(changed, 1, "node row exists");
            }
            let changed = conn
                .prepare_cached(UPDATE_RUN)
                .and_then(|mut s| s.execute(params![RunState::Succeeded.as_str(), at, at, id]))
                .expect("update run");
            assert_eq!(changed, 1, "run row exists");
        }
        exec("COMMIT");
        runs += n;
    }
    let figures = Figures {
        runs,
        elapsed: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu_before,
    };
    conn.flush_prepared_statement_cache();
    drop(conn);
    check(path, runs);
    figures
}

/// (b) The same statements through one sqlx connection, `n` writes per transaction.
async fn via_sqlx(path: &Path, version: VersionId, n: usize, secs: f64) -> Figures {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("journal_size_limit", "67108864")
        .pragma("cache_size", "-4000")
        .statement_cache_capacity(STATEMENT_CACHE)
        .connect()
        .await
        .expect("connect");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut runs = 0;
    let mut ids = Vec::with_capacity(n);
    while Instant::now() < deadline {
        ids.clear();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        for lane in 0..n {
            let (run, trigger, inputs) = encoded(version, runs + lane);
            let at = now_ms();
            let id = sqlx::query(INSERT_RUN)
                .bind(&run.pipeline)
                .bind(run.version_id.0)
                .bind(run.trigger.kind.as_str())
                .bind(run.trigger.user.as_deref())
                .bind(run.retry_of.map(|r| r.0))
                .bind(at)
                .bind(run.deadline)
                .execute(&mut *tx)
                .await
                .expect("insert run")
                .last_insert_rowid();
            sqlx::query(INSERT_PAYLOAD)
                .bind(id)
                .bind(trigger)
                .bind(inputs)
                .execute(&mut *tx)
                .await
                .expect("insert payload");
            for (position, node) in run.nodes.iter().enumerate() {
                sqlx::query(INSERT_NODE)
                    .bind(id)
                    .bind(&node.id)
                    .bind(position as i64)
                    .bind("pending")
                    .bind(None::<String>)
                    .bind(None::<i64>)
                    .bind(None::<i64>)
                    .execute(&mut *tx)
                    .await
                    .expect("insert node");
            }
            ids.push(id);
        }
        tx.commit().await.expect("commit");
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
        for &id in &ids {
            let at = now_ms();
            sqlx::query(INSERT_ATTEMPT)
                .bind(id)
                .bind(NODES[0])
                .bind(1i64)
                .bind(at)
                .execute(&mut *tx)
                .await
                .expect("insert attempt");
            for node in NODES {
                let changed = sqlx::query(UPDATE_NODE)
                    .bind(NodeState::Succeeded.as_str())
                    .bind(1i64)
                    .bind(output(node).to_string())
                    .bind(at)
                    .bind(at)
                    .bind(id)
                    .bind(node)
                    .execute(&mut *tx)
                    .await
                    .expect("update node")
                    .rows_affected();
                assert_eq!(changed, 1, "node row exists");
            }
            let changed = sqlx::query(UPDATE_RUN)
                .bind(RunState::Succeeded.as_str())
                .bind(at)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await
                .expect("update run")
                .rows_affected();
            assert_eq!(changed, 1, "run row exists");
        }
        tx.commit().await.expect("commit");
        runs += n;
    }
    let figures = Figures {
        runs,
        elapsed: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu_before,
    };
    conn.close().await.expect("close");
    check(path, runs);
    figures
}

/// Warns (a figure, not a test) unless `runs` succeeded runs are in the file.
fn check(path: &Path, runs: usize) {
    let conn = rusqlite::Connection::open(path).expect("open to check");
    let stored: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE state = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    if usize::try_from(stored).ok() != Some(runs) {
        println!("warning: {path:?} holds {stored} succeeded runs, {runs} were written");
    }
}

/// A fresh file in `dir` for one measurement, with its version.
async fn prepared(dir: &Path, name: &str) -> (PathBuf, VersionId) {
    let path = dir.join(format!("{name}.db"));
    let (store, version) = fresh(&path).await;
    store.flush().await.expect("flush");
    drop(store);
    (path, version)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.2 } else { 3.0 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "store_writer: a run = 2 writes = 10 statements; WAL, synchronous = FULL; {secs} s per line"
    );
    for n in BATCHES {
        let store = runtime.block_on(via_store(&dir.path().join(format!("store{n}.db")), n, secs));
        store.print(n, "store (rusqlite writer thread, N callers)");

        let (path, version) = runtime.block_on(prepared(dir.path(), &format!("sqlx{n}")));
        let sqlx_task = runtime.block_on(async move {
            tokio::spawn(async move { via_sqlx(&path, version, n, secs).await })
                .await
                .expect("sqlx task")
        });
        sqlx_task.print(n, "sqlx (one connection, from a tokio task)");

        let (path, version) = runtime.block_on(prepared(dir.path(), &format!("sqlxt{n}")));
        let sqlx_thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(via_sqlx(&path, version, n, secs))
        })
        .join()
        .expect("sqlx thread");
        sqlx_thread.print(n, "sqlx (one connection, from its own thread)");

        let (path, version) = runtime.block_on(prepared(dir.path(), &format!("rusqlite{n}")));
        let raw = std::thread::spawn(move || via_rusqlite(&path, version, n, secs))
            .join()
            .expect("rusqlite thread");
        raw.print(n, "rusqlite (same statements, one thread)");

        println!(
            "store_writer N={n:<3} per write, against raw rusqlite: sqlx from a task {:.2}× time, {:.2}× CPU; \
             sqlx from its own thread {:.2}× time, {:.2}× CPU; the store {:.2}× time, {:.2}× CPU",
            sqlx_task.us_per_write() / raw.us_per_write(),
            sqlx_task.cpu_per_write() / raw.cpu_per_write(),
            sqlx_thread.us_per_write() / raw.us_per_write(),
            sqlx_thread.cpu_per_write() / raw.cpu_per_write(),
            store.us_per_write() / raw.us_per_write(),
            store.cpu_per_write() / raw.cpu_per_write(),
        );
    }
}
