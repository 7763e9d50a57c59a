//! What the benchmarks share: a socket client, the real daemon, RSS, percentiles.

#![allow(dead_code)]

use std::io::{BufRead, BufReader as StdBufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice_shared::client::{Client, Notice};
use sluice_shared::method::{Call, Method};

/// A connection to the daemon's socket (the shared client); params and
/// results as JSON, failures panic (a benchmark has nothing to recover).
pub struct Conn {
    inner: Client,
}

impl Conn {
    /// Connects and says hello.
    pub async fn open(path: &std::path::Path) -> Self {
        let (inner, _) = Client::open(path, "bench").await.expect("connect");
        Self { inner }
    }

    /// Calls method `M` and returns its result (panics on an error reply).
    pub async fn call<M: Method>(&mut self, params: Value) -> Value {
        let call = Call {
            method: M::NAME,
            params,
        };
        self.inner
            .call_value(&call)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", M::NAME))
    }

    /// The next notification the daemon sends.
    pub async fn notice(&mut self) -> Notice {
        Notice::read(self.inner.notification().await.expect("read"))
    }
}

/// The `q` quantile of sorted durations, in ms.
pub fn pct(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0
}

/// Resident memory of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Starts the real `sluiced` on `state` and waits until it is ready.
pub fn start_daemon(state: &Path, socket: Option<&Path>) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluiced"));
    if let Some(s) = socket {
        cmd.arg("--socket").arg(s);
    }
    let mut child = cmd
        .arg("--state-dir")
        .arg(state)
        .env("SLUICE_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sluiced");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = StdBufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.expect("stderr line").starts_with("sluiced: ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}
