//! The kill -9 soak: webhook load with a unique `Idempotency-Key` per delivery
//! from several clients while the real `sluiced` is SIGKILLed at random moments
//! and started again. Senders retry unanswered and refused deliveries with the
//! same key. Checked: every restart succeeds at the first attempt, every
//! acknowledged delivery has exactly one run, every run reaches a final state
//! with every node final, and (on SQLite) `PRAGMA integrity_check` is ok.
//! The suite's PostgreSQL half (`SLUICE_TEST_STORE=postgres`) runs the same
//! soak with the daemon on PostgreSQL.
//!
//! CI runs 10 cycles of each test. Longer soaks:
//! `SLUICE_SOAK_CYCLES=1000 cargo test --release -p sluice-daemon --test soak -- --nocapture`.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon::Daemon;

const TRANSFORM: &str = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: t\n    kind: transform\n    output: { ok: true }\n";
const SHELL: &str = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: s\n    kind: shell\n    run: \"true\"\n";

fn cycles() -> u64 {
    std::env::var("SLUICE_SOAK_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// Acknowledged deliveries: key → run id.
type Acks = Arc<Mutex<HashMap<String, i64>>>;

/// One sender: delivers unique keys one after another; a delivery is retried
/// with the same key until it is acknowledged (202), whatever happened to the
/// previous try (connection refused or cut by the kill, 503/429 refusals).
async fn sender(id: usize, url: String, acks: Acks, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("soak-{id}-{n}");
        n += 1;
        loop {
            let r = client
                .post(&url)
                .header("idempotency-key", &key)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 202 => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let run = body["run"].as_i64().expect("a run id in the 202 reply");
                    acks.lock().expect("acks").insert(key.clone(), run);
                    sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(r) if r.status() == 503 || r.status() == 429 => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    // Back off as told (capped, so the soak keeps its pace).
                    tokio::time::sleep(Duration::from_millis((wait * 1000).min(200))).await;
                }
                Ok(r) => panic!("unexpected reply {} for {key}", r.status()),
                // The daemon is down or was killed mid-request: try again soon.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

async fn soak(config: &str, pipeline: &str, clients: usize) {
    // Retention would prune runs beyond 10,000 per pipeline, which a long
    // soak makes, and the check below looks for every acknowledged one.
    let config = format!("[retention]\nmax_runs_per_pipeline = 1000000000\n{config}");
    // A restart that is not ready at its first attempt fails the fixture's spawn.
    let mut d = Daemon::start(&config, &[("soak.yaml", pipeline)]);
    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let url = format!("http://{}/hooks/soak", d.http);
    let senders: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(sender(
                i,
                url.clone(),
                Arc::clone(&acks),
                Arc::clone(&stop),
                Arc::clone(&sent),
            ))
        })
        .collect();
    let cycles = cycles();
    let started = Instant::now();
    for _ in 0..cycles {
        // A random moment under load: the schedule of the kill, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..400))).await;
        d.kill();
        d.spawn();
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        tokio::time::timeout(Duration::from_secs(120), s)
            .await
            .expect("senders finish their last delivery")
            .expect("sender");
    }
    let acks = acks.lock().expect("acks").clone();

    // Every run reaches a final state.
    let store = d.store().await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (queued, running, waiting) = store.state_counts().await.expect("state counts");
        let unfinished = queued + running + waiting;
        if unfinished == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} runs still unfinished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs: HashMap<i64, (String, String)> = store
        .runs(None, i64::MAX)
        .await
        .expect("runs")
        .into_iter()
        .map(|r| {
            let state = r.state.to_string();
            (r.id.0, (state, r.error.unwrap_or_default()))
        })
        .collect();
    // Every acknowledged delivery has exactly one run, and no run lacks a delivery.
    let acked: HashSet<i64> = acks.values().copied().collect();
    assert_eq!(acked.len(), acks.len(), "two keys share a run");
    for (key, run) in &acks {
        assert!(
            runs.contains_key(run),
            "acknowledged {key} has no run {run}"
        );
    }
    assert_eq!(
        runs.len(),
        acks.len(),
        "runs without an acknowledged delivery (duplicates)"
    );
    // A run fails only where the engine gives up on a node interrupted again and again.
    let failed: Vec<_> = runs
        .iter()
        .filter(|(_, (s, e))| s != "succeeded" && !e.contains("interrupted"))
        .collect();
    assert!(
        failed.is_empty(),
        "runs neither succeeded nor given up after interruptions: {failed:?}"
    );
    // What the store holds is whole: every run has its pipeline's node, final
    // (on both backends; a kill must never leave a run half written).
    for &id in runs.keys() {
        let nodes = store
            .nodes(sluice_shared::run::RunId(id))
            .await
            .expect("nodes");
        assert_eq!(nodes.len(), 1, "run {id} has its one node: {nodes:?}");
        assert!(
            nodes.iter().all(|n| n.state.is_finished()),
            "run {id} has a node left unfinished: {nodes:?}"
        );
    }
    drop(store);
    // The file itself is sound (SQLite only: PostgreSQL's own WAL recovery
    // is not ours to check; the reads above are its equivalent).
    if !common::sqlite_file_only("PRAGMA integrity_check") {
        let db = rusqlite::Connection::open(d.path("state/sluice.db")).expect("open db");
        let integrity: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(integrity, "ok");
    }
    println!(
        "soak ({}): {cycles} kill -9 cycles in {:.1} s, {} acknowledged deliveries from {clients} clients, each exactly one run, all succeeded, store whole",
        if common::on_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        started.elapsed().as_secs_f64(),
        acks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_soak_below_capacity() {
    soak("", TRANSFORM, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_soak_above_capacity() {
    // A small backlog bound and few workers: deliveries are refused and retried.
    soak(
        "[engine]\nworkers = 2\n[limits.global]\nmax_concurrent = 4\nmax_queued = 40\n",
        SHELL,
        8,
    )
    .await;
}
