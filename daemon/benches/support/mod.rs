//! What the benchmarks share: a socket client, the real daemon, RSS,
//! percentiles, and a fresh store on each backend.

#![allow(dead_code)]

use std::io::{BufRead, BufReader as StdBufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice_daemon::store::testdb::TestDatabase;
use sluice_daemon::store::{Durability, Store, StoreOptions};
use sluice_shared::client::{Client, Notice};
use sluice_shared::method::{Call, Method};
use sqlx::Connection;

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

/// A store backend a benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file (the default store).
    Sqlite,
    /// A fresh database on the test PostgreSQL server (see `store::testdb`).
    Postgres,
}

impl Backend {
    /// The label printed with each figure.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// The backends chosen by `SLUICE_BENCH_STORE=sqlite|postgres|both`
    /// (default both), in that order: the two figures of one run sit side by side.
    pub fn chosen() -> Vec<Self> {
        match std::env::var("SLUICE_BENCH_STORE").as_deref() {
            Err(_) | Ok("" | "both") => vec![Self::Sqlite, Self::Postgres],
            Ok("sqlite") => vec![Self::Sqlite],
            Ok("postgres") => vec![Self::Postgres],
            Ok(other) => panic!("SLUICE_BENCH_STORE={other}: expected sqlite, postgres or both"),
        }
    }
}

/// A fresh store on one backend, durability full. A PostgreSQL database
/// is dropped with this value, so keep it until the figure is printed.
pub struct BenchStore {
    /// The store.
    pub store: Store,
    /// Which backend it is.
    pub backend: Backend,
    /// Where the data lives: the SQLite file's path or the PostgreSQL URL.
    pub location: String,
    db: Option<TestDatabase>,
}

impl BenchStore {
    /// Opens a fresh store on `backend`: `sluice.db` in `dir`, or a new
    /// database on the test server (`SLUICE_TEST_PG_URL`, default
    /// `postgres://root@127.0.0.1:5432/postgres`). When PostgreSQL does not
    /// answer, prints a notice that the `what` figure is skipped and returns `None`.
    pub async fn open(backend: Backend, dir: &Path, what: &str) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let path = dir.join("sluice.db");
                let store = Store::open(&path, Durability::Full)
                    .await
                    .expect("open the SQLite store");
                Some(Self {
                    store,
                    backend,
                    location: path.display().to_string(),
                    db: None,
                })
            }
            Backend::Postgres => {
                let admin = TestDatabase::admin_url();
                let probe = tokio::time::timeout(
                    Duration::from_secs(5),
                    sqlx::PgConnection::connect(&admin),
                )
                .await;
                let reason = match probe {
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        None
                    }
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("no answer within 5 s".to_owned()),
                };
                if let Some(reason) = reason {
                    let admin = without_password(&admin);
                    println!(
                        "{what} postgres: skipped, PostgreSQL at {admin} does not answer ({reason}); \
                         start it with `service postgresql start` or set SLUICE_TEST_PG_URL"
                    );
                    return None;
                }
                let Some(db) = TestDatabase::create().await else {
                    let admin = without_password(&admin);
                    println!("{what} postgres: skipped, no database could be created on {admin}");
                    return None;
                };
                let store = Store::connect(&StoreOptions::postgres(db.url()))
                    .await
                    .expect("open the PostgreSQL store");
                Some(Self {
                    store,
                    backend,
                    location: db.url().to_owned(),
                    db: Some(db),
                })
            }
        }
    }

    /// The label printed with each figure.
    pub fn label(&self) -> &'static str {
        self.backend.label()
    }

    /// CPU seconds used so far by the PostgreSQL server processes serving
    /// this store's database (its backends, read from `/proc`), by pid:
    /// work the store does outside this process. Empty on SQLite, and when
    /// the server is not on this machine. The server's shared helpers (WAL
    /// writer, checkpointer) are not counted.
    pub async fn server_cpu(&self) -> std::collections::HashMap<i32, f64> {
        let mut cpu = std::collections::HashMap::new();
        if self.db.is_none() {
            return cpu;
        }
        let Ok(mut conn) = sqlx::PgConnection::connect(&self.location).await else {
            return cpu;
        };
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        let _ = conn.close().await;
        for pid in pids {
            if let Some(secs) = process_cpu_seconds(pid) {
                cpu.insert(pid, secs);
            }
        }
        cpu
    }
}

/// CPU seconds the server spent between two [`BenchStore::server_cpu`]
/// readings (a backend started in between counts from zero).
pub fn server_cpu_between(
    before: &std::collections::HashMap<i32, f64>,
    after: &std::collections::HashMap<i32, f64>,
) -> f64 {
    after
        .iter()
        .map(|(pid, secs)| secs - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// User plus system CPU seconds of process `pid`, from `/proc/PID/stat`.
fn process_cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields start after the command name's closing parenthesis; field 3 is f[0].
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some((utime + stime) as f64 / ticks as f64)
}

/// `url` fit to print: a password, if any, replaced.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
