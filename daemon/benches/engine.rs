//! Prints engine throughput and daemon memory on this machine:
//! - runs/s and node executions/s for a 5-node transform-only DAG, durability full
//!   (target: 500 runs/s, 2,500 node executions/s);
//!   with the engine's CPU time per run (target: 0.06 ms per run); once per
//!   store backend (`SLUICE_BENCH_STORE=sqlite|postgres|both`, default both;
//!   PostgreSQL is skipped with a notice when it does not answer);
//! - one-shell-step runs (`run: "true"`) with 8 workers against the spawn
//!   floor measured in the same run: `true` spawned from 8 threads by
//!   `std::process::Command` with nothing else done (target: at least 50 % of it);
//! - idle RSS of the real `sluiced` (target: under 20 MiB);
//! - RSS with 10,000 runs waiting on delay nodes (target: under 150 MiB).
//!
//! Run with `cargo bench -p sluice-daemon --bench engine`; `SLUICE_BENCH_ONLY=engine`
//! (or `shell`, `memory`) runs one part.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Map;
use sluice_daemon::engine::{Engine, EngineOptions, enqueue};
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{Durability, Store};
use sluice_shared::Pipeline;
use sluice_shared::event::Event;
use sluice_shared::run::{RunState, TriggerInfo};

mod support;

use support::{Backend, BenchStore, rss_kib, start_daemon};

fn pipeline(name: &str, yaml: &str) -> Pipeline {
    sluice_shared::load_source(
        Path::new(&format!("{name}.yaml")),
        yaml,
        &Default::default(),
    )
    .pipeline
    .expect("valid benchmark pipeline")
}

const DAG: &str = "inputs:\n  n: { type: integer, default: 0 }\nnodes:\n  - id: a\n    kind: transform\n    output: { n: \"{{ inputs.n }}\" }\n  - id: b\n    kind: transform\n    needs: [a]\n    output: { x: \"{{ nodes.a.output.n + 1 }}\" }\n  - id: c\n    kind: transform\n    needs: [a]\n    output: { y: \"{{ nodes.a.output.n * 2 }}\" }\n  - id: d\n    kind: transform\n    needs: [b, c]\n    output: { z: \"{{ nodes.b.output.x + nodes.c.output.y }}\" }\n  - id: e\n    kind: transform\n    needs: [d]\n    output: { done: true }\n";

async fn throughput(runs: usize, backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(bench) = BenchStore::open(backend, dir.path(), "engine").await else {
        return;
    };
    let store = bench.store.clone();
    let engine = Engine::start(store.clone(), &Secrets::default(), EngineOptions::default())
        .expect("engine");
    let p = Arc::new(pipeline("dag", DAG));
    let mut events = engine.subscribe();
    let server_before = bench.server_cpu().await;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let submitters = 64;
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let engine = engine.clone();
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            for n in (s..runs).step_by(submitters) {
                let mut inputs = Map::new();
                inputs.insert("n".into(), serde_json::json!(n));
                engine
                    .submit(&p, None, &inputs, TriggerInfo::manual(None))
                    .await
                    .expect("submit");
            }
        }));
    }
    let mut finished = 0;
    let mut succeeded = 0;
    while finished < runs {
        match events.recv().await {
            Ok(Event::RunState { state, .. }) if state.is_finished() => {
                finished += 1;
                if state == RunState::Succeeded {
                    succeeded += 1;
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Count from the store instead.
                let all = store
                    .runs(None, i64::try_from(runs).unwrap_or(i64::MAX))
                    .await
                    .expect("runs");
                finished = all.iter().filter(|r| r.state.is_finished()).count();
                succeeded = all
                    .iter()
                    .filter(|r| r.state == RunState::Succeeded)
                    .count();
            }
            Err(_) => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let server = support::server_cpu_between(&server_before, &bench.server_cpu().await);
    for t in tasks {
        t.await.expect("submitter");
    }
    assert_eq!(succeeded, runs, "every run succeeds");
    let server = if backend == Backend::Postgres {
        format!(
            " + {:.3} ms in the PostgreSQL server's backends",
            server * 1000.0 / runs as f64
        )
    } else {
        String::new()
    };
    println!(
        "engine {}: {runs} runs of a 5-node transform DAG in {elapsed:.2} s: {:.0} runs/s, {:.0} node executions/s, \
         {:.3} ms CPU per run (process, submitters included){server}; durability full",
        bench.label(),
        runs as f64 / elapsed,
        (runs * 5) as f64 / elapsed,
        cpu * 1000.0 / runs as f64
    );
    engine.shutdown().await;
}

/// CPU seconds this process has used so far.
fn cpu_seconds() -> f64 {
    sluice_daemon::procstat::read().map_or(0.0, |s| s.cpu_seconds)
}

/// `true` started and waited for from `threads` threads for `secs`: the spawn
/// floor of this machine, in processes per second.
fn spawn_floor(threads: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let status = std::process::Command::new("true")
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .expect("spawn true");
                    assert!(status.success());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("spawner"))
        .sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// One-shell-step runs with 8 workers, next to the spawn floor measured just before.
async fn shell_runs(runs: usize) {
    let floor = tokio::task::spawn_blocking(|| spawn_floor(8, 3.0))
        .await
        .expect("floor");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("sluice.db"), Durability::Full)
        .await
        .expect("store");
    let limits: sluice_daemon::limits::LimitsConfig = toml::from_str(
        "[global]\nmax_concurrent = 100000\n[default]\nrate = \"1000000/s\"\nburst = 1000000\nmax_concurrent = 100000\nmax_queued = 1000000\n",
    )
    .expect("limits");
    let opts = EngineOptions {
        workers: 8,
        limits: Arc::new(sluice_daemon::limits::Limits::new(limits)),
        ..EngineOptions::default()
    };
    let engine = Engine::start(store.clone(), &Secrets::default(), opts).expect("engine");
    let p = Arc::new(pipeline(
        "sh",
        "nodes:\n  - id: t\n    kind: shell\n    run: 'true'\n",
    ));
    let mut events = engine.subscribe();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let submitters = 16;
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let engine = engine.clone();
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            for _ in (s..runs).step_by(submitters) {
                engine
                    .submit(&p, None, &Map::new(), TriggerInfo::manual(None))
                    .await
                    .expect("submit");
            }
        }));
    }
    let mut finished = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while finished < runs {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(Event::RunState { state, .. })) if state.is_finished() => {
                assert_eq!(state, RunState::Succeeded, "every shell run succeeds");
                finished += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                let all = store.runs(None, runs as i64 + 10).await.expect("list");
                finished = all.iter().filter(|r| r.state.is_finished()).count();
            }
            Ok(Err(_)) => break,
            Err(_) => panic!("shell runs did not finish within 10 minutes ({finished} of {runs})"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    for t in tasks {
        t.await.expect("submitter");
    }
    let rate = runs as f64 / elapsed;
    println!(
        "shell: {runs} one-shell-step runs, 8 workers, in {elapsed:.2} s: {rate:.0} runs/s = {:.0} % of the \
         spawn floor measured in the same run ({floor:.0} spawns/s of `true` from 8 threads); \
         {:.3} ms daemon CPU per run (children not counted)",
        rate * 100.0 / floor,
        cpu * 1000.0 / runs as f64
    );
    engine.shutdown().await;
}

async fn memory(waiting: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let mut daemon = start_daemon(&state, None);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "daemon: idle RSS {:.1} MiB",
        rss_kib(daemon.id()) as f64 / 1024.0
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();

    let store = Store::open(&state.join("sluice.db"), Durability::Normal)
        .await
        .expect("store");
    let p = pipeline(
        "sleepy",
        "nodes:\n  - id: pause\n    kind: delay\n    for: 1h\n  - id: after\n    kind: transform\n    needs: [pause]\n    output: {}\n",
    );
    for _ in 0..waiting {
        enqueue(&store, &p, None, &Map::new(), TriggerInfo::manual(None))
            .await
            .expect("enqueue");
    }
    store.flush().await.expect("flush");
    let started = Instant::now();
    let mut daemon = start_daemon(&state, None);
    loop {
        let unfinished = store.unfinished_runs().await.expect("runs");
        if unfinished
            .iter()
            .filter(|r| r.state == RunState::Waiting)
            .count()
            == waiting
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "runs did not all reach their delay"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "daemon: RSS {:.1} MiB with {waiting} runs waiting on delays (all started in {:.1} s)",
        rss_kib(daemon.id()) as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // SLUICE_BENCH_ONLY=shell (or engine, memory) runs one part, for profiling.
        let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
        let part = |name: &str| only.is_empty() || only == name;
        if part("engine") {
            for backend in Backend::chosen() {
                throughput(2000, backend).await;
            }
        }
        if part("shell") {
            shell_runs(3000).await;
        }
        if part("memory") {
            memory(10_000).await;
        }
    });
}
