//! Test fixture: a real engine on a temp store (an SQLite file, or a fresh
//! PostgreSQL database when `SLUICE_TEST_STORE=postgres`: the matrix's second
//! half, see [`Backend`]), and helpers to wait on conditions with a deadline
//! (never sleeps as synchronisation).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::testdb::TestDatabase;
use sluice_daemon::store::{Durability, RunRecord, Store, StoreOptions};
use sluice_shared::Pipeline;
use sluice_shared::event::Event;
use sluice_shared::run::{RunId, TriggerInfo};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
    pub store: Store,
    pub secrets: Secrets,
    /// Where the store lives (last: a PostgreSQL database outlives the engine).
    pub backend: Backend,
}

/// Whether this run of the suite is the PostgreSQL half of the matrix
/// (`SLUICE_TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    TestDatabase::wanted()
}

/// For a test (or a part of one) about the SQLite file itself: on PostgreSQL
/// prints that `what` is skipped and returns true.
pub fn sqlite_file_only(what: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    eprintln!("notice: {what} is about the SQLite file; skipped on PostgreSQL");
    true
}

/// Where a test's store lives: an SQLite file the test names (the default),
/// or, in the PostgreSQL half of the matrix, a fresh database of its own
/// that is dropped with this value.
pub struct Backend {
    db: Option<TestDatabase>,
}

impl Backend {
    /// SQLite, or a new PostgreSQL database when the matrix asks for one.
    /// A matrix run that asked for PostgreSQL fails when it does not answer
    /// (with `CI=true` `TestDatabase::create` itself panics, saying how to start it).
    pub async fn new() -> Self {
        if !TestDatabase::wanted() {
            return Self { db: None };
        }
        match TestDatabase::create().await {
            Some(db) => Self { db: Some(db) },
            None => panic!(
                "SLUICE_TEST_STORE=postgres asks for PostgreSQL, but {} does not answer \
                 (start it with `service postgresql start`, or set SLUICE_TEST_PG_URL)",
                TestDatabase::admin_url()
            ),
        }
    }

    /// [`Backend::new`] for code that may run outside a runtime or inside
    /// one (where it must not block): created on a thread of its own.
    pub fn new_blocking() -> Self {
        if !TestDatabase::wanted() {
            return Self { db: None };
        }
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(Self::new())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The PostgreSQL database's URL, if the store is on PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.db.as_ref().map(TestDatabase::url)
    }

    /// The `[store]` table for a sluiced.toml (empty on SQLite: the default
    /// file in the state directory).
    pub fn config(&self) -> String {
        match self.postgres_url() {
            Some(url) => format!("\n[store]\nurl = \"{url}\"\n"),
            None => String::new(),
        }
    }

    /// `config` with the `[store]` table appended (a config that names a
    /// store of its own cannot also be run on the matrix's).
    pub fn with_config(&self, config: &str) -> String {
        if self.db.is_none() {
            return config.to_owned();
        }
        assert!(
            !config.lines().any(|l| l.trim_start().starts_with("[store")),
            "a test config with a [store] table of its own: {config}"
        );
        format!("{config}\n{}", self.config())
    }

    /// Opens the store: the SQLite file `sqlite`, or the PostgreSQL database.
    pub async fn open(&self, sqlite: &Path, durability: Durability) -> Store {
        let opened = match self.postgres_url() {
            Some(url) => {
                Store::connect(&StoreOptions {
                    durability,
                    ..StoreOptions::postgres(url)
                })
                .await
            }
            None => Store::open(sqlite, durability).await,
        };
        opened.unwrap_or_else(|e| panic!("opening the test store: {e}"))
    }

    /// Every byte the store holds, for grepping: the SQLite file and its
    /// WAL, or every row of every table of the PostgreSQL database as text.
    pub async fn stored_bytes(&self, sqlite: &Path) -> Vec<u8> {
        let Some(url) = self.postgres_url() else {
            let mut all = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let mut p = sqlite.as_os_str().to_owned();
                p.push(suffix);
                if let Ok(b) = std::fs::read(PathBuf::from(p)) {
                    all.extend(b);
                }
            }
            return all;
        };
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("a connection to the test database");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("the tables");
        assert!(!tables.is_empty(), "no tables in {url}");
        let mut all = Vec::new();
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{table}\" t"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("reading {table}: {e}"));
            for row in rows {
                all.extend(row.into_bytes());
                all.push(b'\n');
            }
        }
        let _ = conn.close().await;
        all
    }

    /// Runs `sql` on the store behind the daemon's back (as someone with
    /// access to the database would: tampering tests); the daemon is stopped.
    pub async fn tamper(&self, sqlite: &Path, sql: &str) {
        use sqlx::Connection as _;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.postgres_url() {
            Some(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql).execute(&mut db).await.expect("tamper");
                db.close().await.expect("close");
            }
            None => {
                let mut db =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", sqlite.display()))
                        .await
                        .expect("connect");
                sqlx::raw_sql(sql).execute(&mut db).await.expect("tamper");
                db.close().await.expect("close");
            }
        }
    }
}

/// The real `sluiced` on directory `dir` (its `sluiced.toml`, `state/` and
/// `pipelines/`), serving `socket` and HTTP on `listen`, logging at `log`.
pub fn sluiced_in(dir: &Path, socket: &Path, listen: &str, log: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluiced"));
    cmd.arg("--config")
        .arg(dir.join("sluiced.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--pipelines")
        .arg(dir.join("pipelines"))
        .arg("--socket")
        .arg(socket)
        .arg("--listen")
        .arg(listen)
        .env("SLUICE_LOG", log);
    cmd
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("sluice.db")
}

pub fn options(dir: &Path) -> EngineOptions {
    EngineOptions {
        workers: 8,
        plugins_dir: dir.join("plugins"),
        shutdown_grace: Duration::from_millis(0),
        ..EngineOptions::default()
    }
}

impl Fixture {
    pub async fn new() -> Self {
        Self::with_secrets(BTreeMap::new()).await
    }

    pub async fn with_secrets(secrets: BTreeMap<String, String>) -> Self {
        Self::build(secrets, 8).await
    }

    pub async fn with_workers(workers: usize) -> Self {
        Self::build(BTreeMap::new(), workers).await
    }

    async fn build(secrets: BTreeMap<String, String>, workers: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new().await;
        let store = backend.open(&db_path(dir.path()), Durability::Full).await;
        let secrets = Secrets::from_map(secrets);
        let opts = EngineOptions {
            workers,
            ..options(dir.path())
        };
        let engine = Engine::start(store.clone(), &secrets, opts).expect("engine");
        Self {
            dir,
            engine,
            store,
            secrets,
            backend,
        }
    }

    /// A new engine on the same state directory and store, as after a restart.
    pub async fn restart(&mut self) {
        self.engine.shutdown().await;
        let store = self
            .backend
            .open(&db_path(self.dir.path()), Durability::Full)
            .await;
        self.engine =
            Engine::start(store.clone(), &self.secrets, options(self.dir.path())).expect("engine");
        self.store = store;
        self.engine.recover().await.expect("recover");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every byte the store holds (see [`Backend::stored_bytes`]).
    pub async fn stored_bytes(&self) -> Vec<u8> {
        self.backend.stored_bytes(&db_path(self.dir.path())).await
    }

    pub async fn submit(&self, pipeline: &Pipeline, inputs: Value) -> RunId {
        let inputs: Map<String, Value> = inputs.as_object().cloned().unwrap_or_default();
        self.engine
            .submit(
                pipeline,
                None,
                &inputs,
                TriggerInfo::manual(Some("tester".into())),
            )
            .await
            .expect("submit")
    }
}

pub fn pipeline(name: &str, yaml: &str) -> Pipeline {
    let f = sluice_shared::load_source(
        Path::new(&format!("{name}.yaml")),
        yaml,
        &Default::default(),
    );
    assert!(f.is_valid(), "{:#?}", f.diagnostics);
    f.pipeline.expect("pipeline")
}

/// Polls `check` until it returns `Some`, failing after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `run` has finished and returns its record; panics after
/// [`RUN_SECS`] naming the run (`Engine::wait` itself waits forever).
pub async fn finished(engine: &Engine, run: RunId) -> RunRecord {
    within(RUN_SECS, &format!("run {run} to finish"), engine.wait(run))
        .await
        .unwrap_or_else(|e| panic!("waiting for run {run}: {e}"))
}

/// How long a test run may take to finish (generous: the machine is shared).
pub const RUN_SECS: u64 = 120;

/// Waits for an event matching `pred` on `rx`, failing after `secs` seconds.
pub async fn next_event<F>(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    secs: u64,
    mut pred: F,
) -> Event
where
    F: FnMut(&Event) -> bool,
{
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(secs), wait)
        .await
        .expect("timed out waiting for an event")
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A child's output read on a thread, so a test can wait for a line with a
/// deadline instead of blocking on the pipe forever.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line received so far (for failure messages).
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `stream` (the thread drains it to the end, so the child
    /// never blocks on a full pipe, even once nobody waits for lines).
    pub fn new(stream: impl std::io::Read + Send + 'static) -> Self {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line matching `pred`; panics after `secs` seconds or when the
    /// stream ends, saying `what` it waited for and what it saw.
    pub fn wait_for(&mut self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "timed out after {secs} s waiting for {what}; saw:\n{}",
                    self.seen.join("\n")
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the stream ended before {what}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line until the stream ends; panics after `secs` seconds.
    pub fn rest(&mut self, secs: u64, what: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let start = self.seen.len();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return self.seen[start..].to_vec();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "timed out after {secs} s waiting for {what}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// Waits for `child` to exit; after `secs` seconds kills it and panics, saying `what`.
pub fn wait_exit(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                kill_and_reap(child, what);
                panic!("timed out after {secs} s waiting for {what} (killed it)");
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// SIGKILLs `child` and reaps it within 30 s; past that it panics saying
/// `what` (only reports it when already unwinding, as in a `Drop`).
pub fn kill_and_reap(child: &mut std::process::Child, what: &str) {
    let _ = child.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let problem = match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Ok(None) => format!("{what} had not exited 30 s after SIGKILL"),
            Err(e) => format!("reaping {what}: {e}"),
        };
        if std::thread::panicking() {
            eprintln!("{problem}");
            return;
        }
        panic!("{problem}");
    }
}

/// Awaits `fut`, panicking after `secs` seconds with `what` it waited for.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s waiting for {what}"))
}

/// An HTTP client whose every request fails (naming its URL) after 30 s
/// instead of waiting forever on a daemon that stopped answering.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Runs `cmd` to its end like `Command::output`, but kills it and panics
/// after `secs` seconds, saying `what`.
pub fn output_within(
    cmd: &mut std::process::Command,
    secs: u64,
    what: &str,
) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = wait_exit(&mut child, secs, what);
    // The readers end with the child (unless it left a grandchild holding the
    // pipes, which the tests here do not start).
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
