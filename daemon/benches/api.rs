//! Prints socket API latency and event fan-out on this machine:
//! - `runs.get` round trip p50/p99 on a store holding 100,000 runs (target p99 < 2 ms),
//!   and calls/s from one client and from 8 at once;
//! - events delivered per second to 10 subscribers.
//!
//! Each once per store backend (`SLUICE_BENCH_STORE=sqlite|postgres|both`,
//! default both; PostgreSQL is skipped with a notice when it does not answer).
//! Run with `cargo bench -p sluice-daemon --bench api`; `SLUICE_BENCH_ONLY=get`
//! (or `fanout`) runs one part.

use sluice_shared::client::Notice;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sluice_daemon::api::identity::Access;
use sluice_daemon::api::{self, ApiContext};
use sluice_daemon::audit::Audit;
use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::metrics::Metrics;
use sluice_daemon::registry::Registry;
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{NewNode, NewRun};
use sluice_shared::event::Event;
use sluice_shared::method as m;
use sluice_shared::run::TriggerInfo;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio_util::sync::CancellationToken;

mod support;

use support::{Backend, BenchStore, Conn, pct};

const RUNS: i64 = 100_000;

async fn setup(
    dir: &std::path::Path,
    bench: &BenchStore,
) -> (Engine, std::path::PathBuf, CancellationToken) {
    let store = bench.store.clone();
    let p = sluice_shared::load_source(std::path::Path::new("bench.yaml"), "nodes:\n  - id: a\n    kind: transform\n    output: { x: 1 }\n  - id: b\n    kind: transform\n    needs: [a]\n    output: { y: 2 }\n", &Default::default())
        .pipeline
        .expect("pipeline");
    let version = store.save_version(&p, None).await.expect("version");
    // One seed run through the store, the rest copied in bulk (fast setup, same shape).
    store
        .create_run(NewRun {
            done: None,
            pipeline: "bench".into(),
            version_id: version,
            trigger: TriggerInfo::manual(Some("bench".into())),
            inputs: json!({}),
            retry_of: None,
            deadline: None,
            nodes: vec![
                NewNode {
                    id: "a".into(),
                    reused: None,
                },
                NewNode {
                    id: "b".into(),
                    reused: None,
                },
            ],
        })
        .await
        .expect("run");
    store.flush().await.expect("flush");
    match bench.backend {
        Backend::Sqlite => seed_sqlite(&bench.location).await,
        Backend::Postgres => seed_postgres(&bench.location).await,
    }

    let engine = Engine::start(store.clone(), &Secrets::default(), EngineOptions::default())
        .expect("engine");
    let registry = Arc::new(
        Registry::new(store.clone(), engine.events())
            .await
            .expect("registry"),
    );
    let audit = Arc::new(Audit::open(store.clone()).await.expect("audit"));
    let triggers = sluice_daemon::triggers::Triggers::new(engine.clone(), Arc::clone(&registry));
    let ctx = ApiContext::new(
        engine.clone(),
        registry,
        triggers,
        None,
        Access::from_config(None).expect("access"),
        audit,
        Arc::new(Metrics::default()),
        dir.join("pipelines"),
        Default::default(),
        dir.to_owned(),
        api::SocketLimits::default(),
    );
    let socket = dir.join("s.sock");
    let listener = api::bind(&socket).expect("bind");
    let stop = CancellationToken::new();
    tokio::spawn(api::serve(listener, ctx, stop.clone()));
    (engine, socket, stop)
}

/// Copies run 1 into runs 2..=RUNS in bulk on the SQLite file at `path`.
async fn seed_sqlite(path: &str) {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{path}"))
        .await
        .expect("conn");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO runs (id, pipeline, version_id, state, trigger_kind, user, created_at, started_at, finished_at)
         SELECT i, pipeline, version_id, 'succeeded', trigger_kind, user, created_at + i, created_at + i, created_at + i + 5 FROM n, runs WHERE runs.id = 1",
    )
    .bind(RUNS)
    .execute(&mut conn)
    .await
    .expect("runs");
    sqlx::query(
        "INSERT INTO run_payloads (run_id, trigger, inputs)
         SELECT r.id, p.trigger, p.inputs FROM runs r, run_payloads p WHERE p.run_id = 1 AND r.id > 1",
    )
    .execute(&mut conn)
    .await
    .expect("payloads");
    sqlx::query(
        "INSERT INTO run_nodes (run_id, node_id, position, state, attempts, output, started_at, finished_at)
         SELECT r.id, n.node_id, n.position, 'succeeded', 1, '{\"x\":1}', r.started_at, r.finished_at FROM runs r, run_nodes n WHERE n.run_id = 1 AND r.id > 1",
    )
    .execute(&mut conn)
    .await
    .expect("nodes");
    sqlx::query(
        "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at)
         SELECT run_id, node_id, 1, 'succeeded', started_at, finished_at FROM run_nodes WHERE run_id > 1",
    )
    .execute(&mut conn)
    .await
    .expect("attempts");
    sqlx::query("COMMIT")
        .execute(&mut conn)
        .await
        .expect("commit");
    conn.close().await.expect("close");
}

/// The same bulk copy on the PostgreSQL database at `url`; the identity
/// sequence is moved past the copied ids, and the planner given statistics.
async fn seed_postgres(url: &str) {
    let mut conn = PgConnection::connect(url).await.expect("conn");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO runs (id, pipeline, version_id, state, trigger_kind, \"user\", created_at, started_at, finished_at)
         SELECT i, pipeline, version_id, 'succeeded', trigger_kind, \"user\", created_at + i, created_at + i, created_at + i + 5
         FROM generate_series(2, $1::BIGINT) AS i, runs WHERE runs.id = 1",
    )
    .bind(RUNS)
    .execute(&mut *tx)
    .await
    .expect("runs");
    sqlx::query(
        "INSERT INTO run_payloads (run_id, trigger, inputs)
         SELECT r.id, p.trigger, p.inputs FROM runs r, run_payloads p WHERE p.run_id = 1 AND r.id > 1",
    )
    .execute(&mut *tx)
    .await
    .expect("payloads");
    sqlx::query(
        "INSERT INTO run_nodes (run_id, node_id, position, state, attempts, output, started_at, finished_at)
         SELECT r.id, n.node_id, n.position, 'succeeded', 1, '{\"x\":1}'::JSON, r.started_at, r.finished_at FROM runs r, run_nodes n WHERE n.run_id = 1 AND r.id > 1",
    )
    .execute(&mut *tx)
    .await
    .expect("nodes");
    sqlx::query(
        "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, finished_at)
         SELECT run_id, node_id, 1, 'succeeded', started_at, finished_at FROM run_nodes WHERE run_id > 1",
    )
    .execute(&mut *tx)
    .await
    .expect("attempts");
    sqlx::query("SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT MAX(id) FROM runs))")
        .execute(&mut *tx)
        .await
        .expect("sequence");
    tx.commit().await.expect("commit");
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .expect("analyze");
    conn.close().await.expect("close");
}

async fn latency(label: &str, socket: &std::path::Path) {
    let mut c = Conn::open(socket).await;
    for i in 0..200 {
        c.call::<m::RunsGet>(json!({ "id": 1 + (i * 7919) % RUNS }))
            .await;
    }
    let mut times = Vec::with_capacity(5000);
    let started = Instant::now();
    for i in 0..5000i64 {
        let id = 1 + (i * 104_729) % RUNS;
        let t = Instant::now();
        let r = c.call::<m::RunsGet>(json!({ "id": id })).await;
        times.push(t.elapsed());
        assert_eq!(r["id"], id);
    }
    let one_client = times.len() as f64 / started.elapsed().as_secs_f64();
    times.sort();
    println!(
        "runs.get {label}: round trip on {RUNS} runs: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} calls, one client: {one_client:.0} calls/s)",
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0),
        times.len()
    );
    concurrent_gets(label, socket, 8, 2000).await;
    let mut times = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        c.call::<m::Status>(json!({})).await;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "api {label}: status round trip: p50 {:.3} ms, p99 {:.3} ms",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
}

/// `runs.get` from `clients` connections at once, `calls` each: calls/s and p99.
async fn concurrent_gets(label: &str, socket: &std::path::Path, clients: i64, calls: i64) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let socket = socket.to_owned();
        tasks.spawn(async move {
            let mut c = Conn::open(&socket).await;
            let mut times = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
            for i in 0..calls {
                let id = 1 + ((client * calls + i) * 104_729) % RUNS;
                let t = Instant::now();
                let r = c.call::<m::RunsGet>(json!({ "id": id })).await;
                times.push(t.elapsed());
                assert_eq!(r["id"], id);
            }
            times
        });
    }
    let mut times = Vec::new();
    while let Some(t) = tasks.join_next().await {
        times.extend(t.expect("client"));
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    times.sort();
    println!(
        "runs.get {label}: {clients} clients at once: {rate:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms ({} calls)",
        pct(&times, 0.5),
        pct(&times, 0.99),
        times.len()
    );
}

async fn fan_out(label: &str, engine: &Engine, socket: &std::path::Path) {
    const EVENTS: u64 = 20_000;
    const SUBSCRIBERS: usize = 10;
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = Conn::open(socket).await;
        c.call::<m::Subscribe>(json!({})).await;
        subs.push(c);
    }
    let started = Instant::now();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut c| {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move {
                let mut got = 0u64;
                let mut missed = 0u64;
                while got + missed < EVENTS {
                    match c.notice().await {
                        Notice::Event(_) => got += 1,
                        Notice::Lagged(l) => missed += l.missed,
                        Notice::Other(_) => {}
                    }
                    progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                (got, missed)
            })
        })
        .collect();
    let tx = engine.events();
    // Publish as fast as the slowest subscriber keeps up (at most 1,000 events ahead):
    // the figure is sustained fan-out, not how fast a burst can be dropped.
    for i in 0..EVENTS {
        let _ = tx.send(Event::Other {
            what: "bench".into(),
            details: json!(i),
        });
        while (i + 1) * SUBSCRIBERS as u64
            > progress.load(std::sync::atomic::Ordering::Relaxed) + 1000 * SUBSCRIBERS as u64
        {
            tokio::task::yield_now().await;
        }
    }
    let mut delivered = 0;
    let mut dropped = 0;
    for r in readers {
        let (g, m) = r.await.expect("reader");
        delivered += g;
        dropped += m;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "api {label}: fan-out of {EVENTS} events to {SUBSCRIBERS} subscribers in {secs:.2} s: {:.0} events/s delivered ({dropped} dropped as lagged)",
        delivered as f64 / secs
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    rt.block_on(async {
        for backend in Backend::chosen() {
            let dir = tempfile::tempdir().expect("tempdir");
            let Some(bench) =
                BenchStore::open(backend, dir.path(), <m::RunsGet as m::Method>::NAME).await
            else {
                continue;
            };
            let (engine, socket, stop) = setup(dir.path(), &bench).await;
            if part("get") {
                latency(bench.label(), &socket).await;
            }
            if part("fanout") {
                fan_out(bench.label(), &engine, &socket).await;
            }
            stop.cancel();
            engine.shutdown().await;
        }
    });
}
