//! Overload figures of the real `sluiced` (release build with `cargo bench`):
//!
//! - CPU the daemon spends while 1,000 admitted runs wait for one busy worker
//!   (a waiting driver must cost nothing);
//! - restart to ready after kill -9 with 10,000 runs queued and 64 running;
//! - the drain rate of those 10,000 queued one-shell-step runs.
//!
//! `cargo bench -p sluice-daemon --bench overload`; `SLUICE_BENCH_QUEUED`
//! changes the backlog size (default 10,000).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ONE_SHELL: &str = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: s\n    kind: shell\n    run: \"true\"\n";

fn gated(gate: &Path) -> String {
    format!(
        "triggers:\n  - webhook: {{ auth: none }}\nnodes:\n  - id: s\n    kind: shell\n    run: \"while [ ! -e '{}' ]; do sleep 0.05; done\"\n",
        gate.display()
    )
}

struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
    http: String,
}

impl Daemon {
    fn new(dir: &Path, config: &str, pipelines: &[(&str, String)]) -> Self {
        std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
        for (name, text) in pipelines {
            std::fs::write(dir.join("pipelines").join(name), text).expect("pipeline");
        }
        std::fs::write(dir.join("sluiced.toml"), config).expect("config");
        Self {
            dir: dir.to_owned(),
            child: None,
            http: String::new(),
        }
    }

    /// Starts the daemon; returns how long until its ready line.
    fn start(&mut self) -> Duration {
        let t = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluiced"))
            .arg("--config")
            .arg(self.dir.join("sluiced.toml"))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--pipelines")
            .arg(self.dir.join("pipelines"))
            .arg("--socket")
            .arg(self.dir.join("sock"))
            .arg("--listen")
            .arg(if self.http.is_empty() {
                "127.0.0.1:0"
            } else {
                &self.http
            })
            .env("SLUICE_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sluiced");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref() {
            let line = line.expect("stderr");
            if line.starts_with("sluiced: ready") {
                if let Some(at) = line.find("http ") {
                    self.http = line[at + 5..].trim_end_matches(')').to_owned();
                }
                break;
            }
        }
        let ready = t.elapsed();
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        ready
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn counts(&self) -> (i64, i64, i64) {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.join("state/sluice.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open db");
        conn.query_row(
            "SELECT sum(state = 'queued'), sum(state = 'running'), sum(state = 'succeeded') FROM runs",
            [],
            |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?.unwrap_or(0),
                    r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                ))
            },
        )
        .expect("count runs")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

async fn post_many(http: &str, pipeline: &str, n: u64) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/hooks/{pipeline}");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, next) = (client.clone(), url.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status(), 202, "accepted");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn starved_cpu(root: &Path) {
    let gate = root.join("starve-gate");
    let mut d = Daemon::new(
        &root.join("starve"),
        "[engine]\nworkers = 1\n[limits.global]\nmax_concurrent = 2000\n",
        &[("gate.yaml", gated(&gate)), ("one.yaml", ONE_SHELL.into())],
    );
    d.start();
    post_many(&d.http, "gate", 1).await;
    wait_until("the gate run to hold the worker", 30, || d.counts().1 == 1);
    post_many(&d.http, "one", 1000).await;
    wait_until("1,000 runs admitted", 60, || d.counts().1 == 1001);
    let pid = d.pid();
    let before = cpu_secs(pid);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = cpu_secs(pid) - before;
    println!(
        "starved drivers: 1,000 runs waiting for the one busy worker used {used:.2} CPU s in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    std::fs::write(&gate, b"").expect("gate");
    let t = Instant::now();
    wait_until("the starved runs to drain", 300, || d.counts().2 == 1001);
    println!(
        "  then drained with 1 worker at {:.0} runs/s",
        1001.0 / t.elapsed().as_secs_f64()
    );
}

async fn restart_and_drain(root: &Path, queued: u64) {
    let gate = root.join("restart-gate");
    let mut d = Daemon::new(
        &root.join("restart"),
        &format!(
            "[limits.global]\nmax_concurrent = 64\nmax_queued = {q}\n[limits.default]\nmax_queued = {q}\n",
            q = queued + 100
        ),
        &[("gate.yaml", gated(&gate)), ("one.yaml", ONE_SHELL.into())],
    );
    d.start();
    post_many(&d.http, "gate", 64).await;
    wait_until("64 gated runs running", 60, || d.counts().1 == 64);
    let t = Instant::now();
    post_many(&d.http, "one", queued).await;
    println!(
        "intake: {queued} deliveries queued behind 64 running runs in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    wait_until("the backlog to be queued", 60, || {
        d.counts().0 == i64::try_from(queued).unwrap_or(0)
    });
    d.kill();
    let ready = d.start();
    // Ready means answering: the socket and the HTTP listener.
    let t = Instant::now();
    let _sock = std::os::unix::net::UnixStream::connect(d.dir.join("sock")).expect("socket");
    let r = reqwest::Client::new()
        .get(format!("http://{}/healthz", d.http))
        .send()
        .await;
    println!(
        "restart after kill -9 with {queued} queued and 64 running: ready line after {:.0} ms, socket and HTTP answering {:.0} ms later (HTTP {})",
        ready.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0,
        r.map_or_else(|e| e.to_string(), |r| r.status().to_string())
    );
    std::fs::write(&gate, b"").expect("gate");
    let t = Instant::now();
    let total = i64::try_from(queued).unwrap_or(0) + 64;
    wait_until("the backlog to drain", 1800, || d.counts().2 == total);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "drain: {total} one-shell-step runs in {secs:.1} s = {:.0} runs/s (default 16 workers, max_concurrent 64)",
        total as f64 / secs
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let queued = std::env::var("SLUICE_BENCH_QUEUED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 200 } else { 10_000 });
    let root = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        starved_cpu(root.path()).await;
        restart_and_drain(root.path(), queued).await;
    });
}
