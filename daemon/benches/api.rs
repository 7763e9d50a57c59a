//! Prints socket API latency and event fan-out on this machine:
//! - `runs.get` round trip p50/p99 on a store holding 100,000 runs (target p99 < 2 ms);
//! - events delivered per second to 10 subscribers.
//!
//! Run with `cargo bench -p sluice-daemon --bench api`.

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
use sluice_daemon::store::{Durability, NewNode, NewRun, Store};
use sluice_shared::event::Event;
use sluice_shared::method as m;
use sluice_shared::run::TriggerInfo;
use sqlx::{Connection, SqliteConnection};

mod support;

use support::{Conn, pct};

const RUNS: i64 = 100_000;

async fn setup(dir: &std::path::Path) -> (Engine, std::path::PathBuf) {
    let db = dir.join("sluice.db");
    let store = Store::open(&db, Durability::Full).await.expect("store");
    let p = sluice_shared::load_source(std::path::Path::new("bench.yaml"), "nodes:\n  - id: a\n    kind: transform\n    output: { x: 1 }\n  - id: b\n    kind: transform\n    needs: [a]\n    output: { y: 2 }\n", &Default::default())
        .pipeline
        .expect("pipeline");
    let version = store.save_version(&p, None).await.expect("version");
    // One seed run through the store, the rest copied in bulk (fast setup, same shape).
    store
        .create_run(NewRun {
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
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
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
    tokio::spawn(api::serve(
        listener,
        ctx,
        tokio_util::sync::CancellationToken::new(),
    ));
    (engine, socket)
}

async fn latency(socket: &std::path::Path) {
    let mut c = Conn::open(socket).await;
    for i in 0..200 {
        c.call::<m::RunsGet>(json!({ "id": 1 + (i * 7919) % RUNS }))
            .await;
    }
    let mut times = Vec::with_capacity(5000);
    for i in 0..5000i64 {
        let id = 1 + (i * 104_729) % RUNS;
        let t = Instant::now();
        let r = c.call::<m::RunsGet>(json!({ "id": id })).await;
        times.push(t.elapsed());
        assert_eq!(r["id"], id);
    }
    times.sort();
    println!(
        "api: runs.get round trip on {RUNS} runs: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} calls)",
        pct(&times, 0.5),
        pct(&times, 0.99),
        pct(&times, 1.0),
        times.len()
    );
    let mut times = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        c.call::<m::Status>(json!({})).await;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "api: status round trip: p50 {:.3} ms, p99 {:.3} ms",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
}

async fn fan_out(engine: &Engine, socket: &std::path::Path) {
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
        "api: fan-out of {EVENTS} events to {SUBSCRIBERS} subscribers in {secs:.2} s: {:.0} events/s delivered ({dropped} dropped as lagged)",
        delivered as f64 / secs
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, socket) = setup(dir.path()).await;
        latency(&socket).await;
        fan_out(&engine, &socket).await;
    });
}
