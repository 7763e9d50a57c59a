//! Trigger benchmarks, printed as figures (run with `cargo bench --bench triggers`):
//!
//! 1. Webhook intake: Standard-Webhooks-signed 2 KB deliveries, each with its own
//!    webhook-id (so every one goes through the dedup insert), from 64 concurrent
//!    clients on loopback (one kept-alive HTTP/1.1 connection each, plain hyper:
//!    the load generator shares the 2 cores, so it should cost little), against
//!    the real listener, engine and store at
//!    the default durability (fsync per commit group). A 202 means committed.
//!    Measured twice: runs executing (one transform node) as in production, and
//!    runs parking in a delay, which isolates intake from execution. Each
//!    once per store backend (`SLUICE_BENCH_STORE=sqlite|postgres|both`,
//!    default both; PostgreSQL is skipped with a notice when it does not answer).
//! 2. File save to active version: the watcher on a temp directory; each save
//!    (in place, or temp file + rename) is timed until the registry has the new version.
//!
//! `SLUICE_BENCH_SECS` sets the intake duration (default 10 s), `SLUICE_BENCH_CONNS`
//! its clients (default 64);
//! `SLUICE_BENCH_ONLY=intake` (or `park`, `save`) runs one part.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::registry::Registry;
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{Durability, Store};
use sluice_daemon::triggers::Triggers;
use sluice_daemon::triggers::webhook::{
    WebhookOptions, WebhookState, hmac_key, serve, sign_standard_webhook,
};
use sluice_daemon::watcher::{WatchOptions, Watcher};
use sluice_shared::validate::ValidateOptions;
use tokio_util::sync::CancellationToken;

mod support;

use support::{Backend, BenchStore};

const KEY: &str = "whsec_c2x1aWNlLWJlbmNoLWtleS0xMjM0NTY3ODkwYWJj";
/// Intake clients unless `SLUICE_BENCH_CONNS` says otherwise.
const CONCURRENCY: usize = 64;

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn setup(
    dir: &std::path::Path,
    files: &[(&str, &str)],
    store: Store,
) -> (Engine, Arc<Registry>, std::path::PathBuf) {
    let pdir = dir.join("pipelines");
    std::fs::create_dir_all(&pdir).expect("mkdir");
    for (name, text) in files {
        write(&pdir.join(name), text);
    }
    let secrets = Secrets::from_map([("bench_key".to_owned(), KEY.to_owned())].into());
    let engine = Engine::start(
        store.clone(),
        &secrets,
        EngineOptions {
            plugins_dir: dir.join("plugins"),
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
    (engine, registry, pdir)
}

/// The pipeline's single node: executed at once, or a delay that parks the run.
const EXECUTES: &str = "- id: a\n    kind: transform\n    output: { n: \"{{ trigger.body.n }}\" }";
const PARKS: &str = "- { id: a, kind: delay, for: 1h }";

async fn webhook_intake(secs: u64, node: &str, what: &str, backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(bench) = BenchStore::open(backend, dir.path(), "intake").await else {
        return;
    };
    let pipeline =
        format!("triggers:\n  - webhook: {{ auth: hmac, secret: bench_key }}\nnodes:\n  {node}\n");
    let pipeline = pipeline.as_str();
    let (engine, registry, _) =
        setup(dir.path(), &[("bench.yaml", pipeline)], bench.store.clone()).await;
    let secrets = Secrets::from_map([("bench_key".to_owned(), KEY.to_owned())].into());
    let stop = CancellationToken::new();
    let state = WebhookState::new(
        Triggers::new(engine.clone(), registry),
        secrets,
        WebhookOptions::default(),
        stop.clone(),
    );
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, state, stop.clone()));
    let key = Arc::new(hmac_key(KEY).expect("key"));
    let pad = "x".repeat(2000);
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let clients = std::env::var("SLUICE_BENCH_CONNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CONCURRENCY);
    for worker in 0..clients {
        let (addr, key, pad) = (addr, Arc::clone(&key), pad.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0usize;
            // One kept-alive HTTP/1.1 connection per client, as a webhook sender keeps.
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            else {
                return (lat, 1);
            };
            tokio::spawn(conn);
            let mut i = 0usize;
            while Instant::now() < end {
                i += 1;
                let id = format!("msg_{worker}_{i}");
                let ts = jiff::Timestamp::now().as_second();
                let body = format!("{{\"n\": {i}, \"pad\": \"{pad}\"}}");
                let sig = sign_standard_webhook(&key, &id, ts, body.as_bytes());
                let request = hyper::Request::post("/hooks/bench")
                    .header("host", "127.0.0.1")
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sig)
                    .body(http_body_util::Full::new(axum::body::Bytes::from(body)));
                let Ok(request) = request else {
                    failed += 1;
                    continue;
                };
                let t = Instant::now();
                match sender.send_request(request).await {
                    Ok(resp) => {
                        let accepted = resp.status().as_u16() == 202;
                        // Read the reply to the end so the connection serves the next request.
                        let read = http_body_util::BodyExt::collect(resp.into_body()).await;
                        if accepted && read.is_ok() {
                            lat.push(t.elapsed());
                        } else {
                            failed += 1;
                        }
                    }
                    Err(_) => {
                        failed += 1;
                        break;
                    }
                }
            }
            (lat, failed)
        });
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok((l, f)) = r {
            lat.extend(l);
            failed += f;
        }
    }
    let elapsed = started.elapsed();
    lat.sort();
    let runs = engine
        .store()
        .runs(Some("bench"), i64::MAX)
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    println!(
        "intake {}: webhook, {what} (signed 2 KB, dedup key, durability full, concurrency {clients}, {:.1} s): \
         {:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} accepted, {} failed, {} runs stored",
        bench.label(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lat.len(),
        failed,
        runs,
    );
    stop.cancel();
    engine.shutdown().await;
}

async fn save_to_active(rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = |n: usize| format!("nodes:\n  - id: a\n    kind: shell\n    run: echo {n}\n");
    let store = Store::open(&dir.path().join("sluice.db"), Durability::Full)
        .await
        .expect("store");
    let (engine, registry, pdir) = setup(dir.path(), &[("p.yaml", &text(0))], store).await;
    let stop = CancellationToken::new();
    let (_w, _) = Watcher::start(
        Arc::clone(&registry),
        &pdir,
        ValidateOptions::default(),
        WatchOptions::default(),
        stop.clone(),
    )
    .await
    .expect("watcher");
    let mut times = Vec::new();
    for n in 1..=rounds {
        let before = registry.get("p").map(|e| e.version).unwrap_or(0);
        let t = Instant::now();
        if n % 2 == 0 {
            write(&pdir.join("p.yaml"), &text(n));
        } else {
            write(&pdir.join(".p.yaml.tmp"), &text(n));
            std::fs::rename(pdir.join(".p.yaml.tmp"), pdir.join("p.yaml")).expect("rename");
        }
        while registry.get("p").map(|e| e.version).unwrap_or(0) == before {
            if t.elapsed() > Duration::from_secs(10) {
                println!("save {n}: not active after 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "file save to active version ({rounds} saves, in place and temp+rename, debounce {} ms): \
         p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        WatchOptions::default().debounce.as_millis(),
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    stop.cancel();
    engine.shutdown().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, briefly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("SLUICE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 10 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("SLUICE_BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    runtime.block_on(async {
        if part("intake") {
            for backend in Backend::chosen() {
                webhook_intake(secs, EXECUTES, "runs execute", backend).await;
            }
        }
        if part("park") {
            for backend in Backend::chosen() {
                webhook_intake(secs, PARKS, "runs park in a 1h delay", backend).await;
            }
        }
        if part("save") {
            save_to_active(if quick { 5 } else { 40 }).await;
        }
    });
}
