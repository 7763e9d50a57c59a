//! Overhead of the limits on webhook intake (run with `cargo bench --bench limits`).
//!
//! The real listener, engine and SQLite store (durability full), 64 concurrent
//! clients on loopback posting 2 KB deliveries with their own delivery keys to
//! four pipelines owned by four users; runs park in a 1 h delay so the figure is
//! intake, not execution. Measured with no `[limits]` ("off") and with every
//! limit configured high enough never to refuse ("on": per-user rate, per-user
//! and global concurrency caps, daily run and LLM-token caps), alternating
//! rounds so drift hits both alike. Daily run counting is part of run creation
//! in both (usage is always counted, capped or not).
//!
//! `SLUICE_BENCH_SECS` sets each round's duration (default 5 s); `SLUICE_BENCH_ROUNDS`
//! the number of off/on pairs (default 3).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::limits::{Limits, LimitsConfig};
use sluice_daemon::registry::Registry;
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{Durability, Store};
use sluice_daemon::triggers::Triggers;
use sluice_daemon::triggers::webhook::{WebhookOptions, WebhookState, serve};
use sluice_shared::validate::ValidateOptions;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 64;
const USERS: usize = 4;

const ON: &str = r#"
[global]
max_concurrent = 100000

[default]
rate = "1000000/s"
burst = 1000000
max_concurrent = 100000
daily_runs = 1000000000
daily_llm_tokens = 1000000000
day_starts = "00:00 Europe/Berlin"
"#;

/// Accepted deliveries per second for one round.
async fn intake(secs: u64, limits: LimitsConfig) -> (f64, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pdir = dir.path().join("pipelines");
    std::fs::create_dir_all(&pdir).expect("mkdir");
    for u in 0..USERS {
        let path = pdir.join(format!("p{u}.yaml"));
        let text = format!(
            "triggers:\n  - webhook: {{ auth: none, user: user{u} }}\nnodes:\n  - {{ id: a, kind: delay, for: 1h }}\n"
        );
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let store = Store::open(&dir.path().join("sluice.db"), Durability::Full)
        .await
        .expect("store");
    let engine = Engine::start(
        store.clone(),
        &Secrets::default(),
        EngineOptions {
            plugins_dir: dir.path().join("plugins"),
            limits: Arc::new(Limits::new(limits)),
            ..EngineOptions::default()
        },
    )
    .expect("engine");
    let registry = Arc::new(
        Registry::new(store, engine.events())
            .await
            .expect("registry"),
    );
    registry
        .reload(&pdir, &ValidateOptions::default())
        .await
        .expect("reload");
    let stop = CancellationToken::new();
    let state = WebhookState::new(
        Triggers::new(engine.clone(), registry),
        Secrets::default(),
        WebhookOptions::default(),
        stop.clone(),
    );
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/hooks", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener, state, stop.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .expect("client");
    let pad = "x".repeat(2000);
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let (client, pad) = (client.clone(), pad.clone());
        let url = format!("{base}/p{}", worker % USERS);
        tasks.spawn(async move {
            let (mut ok, mut failed, mut i) = (0usize, 0usize, 0usize);
            while Instant::now() < end {
                i += 1;
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", format!("msg_{worker}_{i}"))
                    .body(format!("{{\"n\": {i}, \"pad\": \"{pad}\"}}"))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 202 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        if let Ok((o, f)) = r {
            ok += o;
            failed += f;
        }
    }
    let rate = ok as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    engine.shutdown().await;
    (rate, failed)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let secs = env("SLUICE_BENCH_SECS", if quick { 1 } else { 5 });
    let rounds = env("SLUICE_BENCH_ROUNDS", if quick { 1 } else { 3 });
    let on: LimitsConfig = toml::from_str(ON).expect("limits");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut off_total, mut on_total) = (0.0, 0.0);
        for round in 1..=rounds {
            let (off_rate, off_failed) = intake(secs, LimitsConfig::default()).await;
            let (on_rate, on_failed) = intake(secs, on.clone()).await;
            println!(
                "round {round}: limits off {off_rate:.0} accepted/s ({off_failed} failed), \
                 on {on_rate:.0} accepted/s ({on_failed} failed)"
            );
            off_total += off_rate;
            on_total += on_rate;
        }
        let slower = (1.0 - on_total / off_total) * 100.0;
        println!(
            "webhook intake with limits on vs off (concurrency {CONCURRENCY}, {USERS} users, \
             durability full, {rounds} x {secs} s each): {:.0} vs {:.0} accepted/s, \
             {slower:+.1} % slower with limits (target < 5 %)",
            on_total / rounds as f64,
            off_total / rounds as f64,
        );
    });
}
