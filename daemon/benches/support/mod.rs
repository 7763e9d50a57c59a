//! What the benchmarks share: a socket client, the real daemon, RSS, percentiles.

#![allow(dead_code)]

use std::io::{BufRead, BufReader as StdBufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_shared::protocol::Request;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A JSON-RPC connection to the daemon's socket.
pub struct Conn {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next: u64,
}

impl Conn {
    /// Connects and says hello.
    pub async fn open(path: &std::path::Path) -> Self {
        let s = UnixStream::connect(path).await.expect("connect");
        let (r, w) = s.into_split();
        let mut c = Self {
            reader: BufReader::new(r),
            writer: w,
            next: 1,
        };
        c.call(
            "hello",
            json!({ "protocol": sluice_shared::protocol::protocol_version() }),
        )
        .await;
        c
    }

    /// Calls `method` and returns its result (panics on an error reply).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut frame = serde_json::to_string(&Request::new(id, method, params)).expect("encode");
        frame.push('\n');
        self.writer
            .write_all(frame.as_bytes())
            .await
            .expect("write");
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.expect("read");
            let v: Value = serde_json::from_str(&line).expect("json");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{v}");
                return v["result"].clone();
            }
        }
    }

    /// The next line the daemon sends.
    pub async fn line(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).await.expect("read");
        serde_json::from_str(&line).expect("json")
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
