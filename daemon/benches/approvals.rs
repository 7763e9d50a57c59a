//! Prints what waiting approvals cost the real `sluiced` on this machine:
//! - RSS with 10,000 runs waiting on approvals (target: under 150 MiB);
//! - `approvals.decide` round trip p50/p99 over the socket with those waiting
//!   (target: under 10 ms).
//!
//! Run with `cargo bench -p sluice-daemon --bench approvals`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, json};
use sluice_daemon::engine::enqueue;
use sluice_daemon::store::{Durability, Store};
use sluice_shared::method as m;
use sluice_shared::run::TriggerInfo;
use support::{Conn, pct, rss_kib, start_daemon};

const WAITING: usize = 10_000;
const DECIDED: usize = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let socket = dir.path().join("sluice.sock");
    let store = Store::open(&state.join("sluice.db"), Durability::Normal)
        .await
        .expect("store");
    let p = sluice_shared::load_source(
        Path::new("gated.yaml"),
        "nodes:\n  - id: gate\n    kind: approval\n    message: \"Run #{{ run.id }}?\"\n    timeout: 1d\n  - id: after\n    kind: transform\n    needs: [gate]\n    output: { by: \"{{ nodes.gate.output.by }}\" }\n",
        &Default::default(),
    )
    .pipeline
    .expect("valid benchmark pipeline");
    for _ in 0..WAITING {
        enqueue(
            &store,
            &p,
            None,
            &Map::new(),
            TriggerInfo::manual(Some("bench".into())),
        )
        .await
        .expect("enqueue");
    }
    store.flush().await.expect("flush");

    let started = Instant::now();
    let mut daemon = start_daemon(&state, Some(&socket));
    loop {
        if store.pending_approvals().await.expect("count") as usize == WAITING {
            let (_, running, _) = store.state_counts().await.expect("counts");
            if running == 0 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "approvals were not all requested in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "daemon: RSS {:.1} MiB with {WAITING} runs waiting on approvals (all requested in {:.1} s)",
        rss_kib(daemon.id()) as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );

    let mut conn = Conn::open(&socket).await;
    let pending = store.approvals(true, DECIDED as i64).await.expect("list");
    let mut times = Vec::with_capacity(pending.len());
    for a in &pending {
        let t = Instant::now();
        let r = conn
            .call::<m::ApprovalsDecide>(json!({ "id": a.id, "approve": true, "reason": "bench" }))
            .await;
        times.push(t.elapsed());
        assert_eq!(r["decided"], true, "{r}");
    }
    times.sort();
    println!(
        "approvals.decide with {WAITING} waiting: p50 {:.2} ms, p99 {:.2} ms over {} decisions",
        pct(&times, 0.5),
        pct(&times, 0.99),
        times.len()
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
