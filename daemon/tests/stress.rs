//! Past capacity: bursts of webhook deliveries far beyond the workers and the
//! concurrency caps, against the real `sluiced` binary, must all drain; a full
//! queue refuses before acknowledging and accepts again once it has drained.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_shared::method::{self as m, Method as _};

use daemon::Daemon;
use sluice_daemon::store::Store;

const BURST: usize = 2_000;
const CLIENTS: usize = 16;

const ONE_SHELL: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: s
    kind: shell
    run: "true"
"#;

/// A shell step then an HTTP call to the in-test server at `URL`.
const SHELL_HTTP: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: s
    kind: shell
    run: "true"
  - id: h
    kind: http
    needs: [s]
    url: "URL"
"#;

/// Counts of runs per state, read from the daemon's store.
async fn states(store: &Store) -> Vec<(String, i64)> {
    let mut counts: Vec<(String, i64)> = Vec::new();
    for run in store.runs(None, i64::MAX).await.expect("runs") {
        let state = run.state.as_str();
        match counts.iter_mut().find(|(s, _)| s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state.to_owned(), 1)),
        }
    }
    counts
}

fn count(states: &[(String, i64)], state: &str) -> i64 {
    states
        .iter()
        .find(|(s, _)| s == state)
        .map_or(0, |(_, n)| *n)
}

/// Posts `n` deliveries to `pipeline` from `CLIENTS` concurrent clients;
/// returns the status codes seen, in no particular order.
async fn burst(http: &str, pipeline: &str, n: usize) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let url = format!("http://{http}/hooks/{pipeline}");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, next) = (client.clone(), url.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n as u64 {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .expect("delivery answered");
                codes.push(r.status().as_u16());
            }
            codes
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// Waits until `want` runs have succeeded and none is unfinished, or fails
/// with the counts seen.
async fn drained(d: &Daemon, want: i64, secs: u64) {
    let store = d.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        // The unfinished count is one cheap query; every run is read once it is 0.
        let (queued, running, waiting) = store.state_counts().await.expect("state counts");
        if queued + running + waiting == 0 {
            let s = states(&store).await;
            if count(&s, "succeeded") == want {
                assert_eq!(
                    s.iter().map(|(_, n)| n).sum::<i64>(),
                    want,
                    "only succeeded runs: {s:?}"
                );
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let s = states(&store).await;
            panic!("the burst did not drain within {secs} s: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP server on 127.0.0.1 answering 200 to anything.
async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/ok")
}

async fn drains(config: &str, pipeline: &str, text: &str) {
    let d = Daemon::start(config, &[(&format!("{pipeline}.yaml"), text)]);
    let codes = burst(&d.http, pipeline, BURST).await;
    let accepted = codes.iter().filter(|c| **c == 202).count();
    assert_eq!(accepted, BURST, "every delivery accepted: {codes:?}");
    drained(&d, BURST as i64, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_shell_runs_drains_on_the_default_config() {
    drains("", "one", ONE_SHELL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_drains_with_one_worker() {
    drains("[engine]\nworkers = 1\n", "one", ONE_SHELL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_shell_and_http_runs_drains_with_caps_above_the_workers() {
    let url = upstream().await;
    drains(
        "[engine]\nworkers = 16\n[limits.global]\nmax_concurrent = 1000\n",
        "two",
        &SHELL_HTTP.replace("URL", &url),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_shell_and_http_runs_drains_with_caps_below_the_workers() {
    let url = upstream().await;
    drains(
        "[engine]\nworkers = 8\n[limits.global]\nmax_concurrent = 4\n[limits.default]\nmax_concurrent = 2\n",
        "two",
        &SHELL_HTTP.replace("URL", &url),
    )
    .await;
}

/// One run holds the only slot until `gate` exists.
fn gated(gate: &std::path::Path) -> String {
    format!(
        r#"
triggers:
  - webhook: {{ auth: none }}
nodes:
  - id: s
    kind: shell
    run: "while [ ! -e '{}' ]; do sleep 0.01; done"
"#,
        gate.display()
    )
}

async fn post(http: &str, pipeline: &str) -> reqwest::Response {
    common::http_client()
        .post(format!("http://{http}/hooks/{pipeline}"))
        .header("content-type", "application/json")
        .body("{}")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("delivery answered")
}

/// Starts a daemon whose single slot is held by a gated run, so that every
/// further delivery queues.
async fn held_daemon(limits: &str) -> (Daemon, std::path::PathBuf) {
    let gate_dir = tempfile::tempdir().expect("tempdir");
    let gate = gate_dir.keep().join("open");
    let config = format!("[engine]\nworkers = 1\n[limits.global]\nmax_concurrent = 1\n{limits}");
    let d = Daemon::start(&config, &[("gate.yaml", &gated(&gate))]);
    assert_eq!(post(&d.http, "gate").await.status(), 202);
    let store = d.store().await;
    common::eventually(30, "the first run to hold the slot", || async {
        (count(&states(&store).await, "running") == 1).then_some(())
    })
    .await;
    (d, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_503_and_accepts_again_once_drained() {
    let (d, gate) = held_daemon("max_queued = 20\n").await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        let r = post(&d.http, "gate").await;
        if r.status() == 503 {
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            assert!(retry.is_some_and(|s| s >= 1), "Retry-After on a 503");
            let body: serde_json::Value = r.json().await.expect("json body");
            assert_eq!(body["limit"], "max_queued", "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("queue is full")),
                "{body}"
            );
            codes.push(503);
        } else {
            codes.push(r.status().as_u16());
        }
    }
    assert_eq!(codes[..20], [202; 20], "{codes:?}");
    assert_eq!(codes[20..], [503; 10], "{codes:?}");
    // Nothing refused was written: 21 runs exist.
    let store = d.store().await;
    assert_eq!(states(&store).await.iter().map(|(_, n)| n).sum::<i64>(), 21);

    // The socket refuses too, with the limit error.
    let mut c = d.client().await;
    let err = c
        .call::<m::PipelinesTrigger>(serde_json::json!({ "name": "gate" }))
        .await
        .expect_err("refused while the queue is full");
    assert_eq!(err.code, sluice_shared::protocol::ErrorCode::Refused as i64);
    assert!(err.message.contains("queue is full"), "{}", err.message);

    std::fs::write(&gate, b"").expect("open the gate");
    drained(&d, 21, 60).await;
    assert_eq!(post(&d.http, "gate").await.status(), 202);
    drained(&d, 22, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_share_of_the_queue_refuses_with_429() {
    let (d, gate) = held_daemon("[limits.default]\nmax_queued = 3\n").await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(post(&d.http, "gate").await.status().as_u16());
    }
    assert_eq!(codes, [202, 202, 202, 429, 429]);
    let mut c = d.client().await;
    let usage = c
        .call::<m::LimitsUsage>(serde_json::json!({}))
        .await
        .expect(m::LimitsUsage::NAME);
    assert_eq!(usage["global"]["backlog"], 3, "{usage}");
    assert_eq!(usage["global"]["max_queued"], 10_000, "{usage}");
    std::fs::write(&gate, b"").expect("open the gate");
    drained(&d, 4, 60).await;
}
