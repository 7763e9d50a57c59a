//! The real `sluiced` binary on a temp directory (its store the default
//! SQLite file, or a fresh PostgreSQL database in the matrix's PostgreSQL
//! half: [`crate::common::Backend`]), and the shared socket client
//! (`sluice_shared::client`) with deadlines, speaking JSON to it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde_json::Value;
use sluice_daemon::store::{Durability, Store};
use sluice_shared::client::ClientError;
use sluice_shared::method::{Call, Method};
use sluice_shared::protocol::{Notification, RpcError, ServerMessage};

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub socket: PathBuf,
    /// The webhook listener's address, from the ready line.
    pub http: String,
    /// Extra environment for the process (applied after the fixture's own).
    pub env: Vec<(String, String)>,
    /// The process's stderr, read on a thread (lines after the ready line included).
    pub stderr: Option<crate::common::Lines>,
    /// Where its store lives (dropped after the process is killed).
    pub backend: crate::common::Backend,
}

impl Daemon {
    /// Starts sluiced with `config` (sluiced.toml text) and pipeline files.
    pub fn start(config: &str, pipelines: &[(&str, &str)]) -> Self {
        let mut d = Self::prepare(config, pipelines);
        d.spawn();
        d
    }

    /// Writes the files of [`Daemon::start`] without starting the process
    /// (set `env`, or `http` to a fixed address, then call `spawn*`).
    pub fn prepare(config: &str, pipelines: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pdir = dir.path().join("pipelines");
        std::fs::create_dir_all(&pdir).expect("mkdir");
        for (name, text) in pipelines {
            let path = pdir.join(name);
            std::fs::write(&path, text).expect("write pipeline");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        let backend = crate::common::Backend::new_blocking();
        std::fs::write(dir.path().join("sluiced.toml"), backend.with_config(config))
            .expect("write config");
        let socket = dir.path().join("sluice.sock");
        Self {
            dir,
            child: None,
            socket,
            http: String::new(),
            env: Vec::new(),
            stderr: None,
            backend,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A store on the daemon's (its SQLite file or its PostgreSQL database),
    /// to look at what it stored while it runs or after it stopped. Open it
    /// once the daemon has started once (the SQLite file exists).
    pub async fn store(&self) -> Store {
        self.backend
            .open(&self.path("state/sluice.db"), Durability::Full)
            .await
    }

    /// Starts (or restarts) the process and waits for its ready line.
    pub fn spawn(&mut self) {
        self.spawn_with(true, Stdio::piped());
    }

    /// Starts the process with `stderr` (piped: read into [`Daemon::stderr`]);
    /// with `wait`, waits for the ready line (needs a piped stderr).
    pub fn spawn_with(&mut self, wait: bool, stderr: Stdio) {
        // A restart keeps the address, so clients can go on sending.
        let listen = if self.http.is_empty() {
            "127.0.0.1:0"
        } else {
            self.http.as_str()
        };
        let mut cmd = crate::common::sluiced_in(self.dir.path(), &self.socket, listen, "warn");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(stderr)
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn sluiced");
        // The reader thread keeps draining stderr after the ready line.
        self.stderr = child.stderr.take().map(crate::common::Lines::new);
        self.child = Some(child);
        if !wait {
            return;
        }
        let line = self
            .stderr
            .as_mut()
            .expect("a piped stderr to wait on")
            .wait_for(60, "sluiced's ready line", |l| {
                l.starts_with("sluiced: ready")
            });
        if let Some(at) = line.find("http ") {
            self.http = line[at + 5..].trim_end_matches(')').to_owned();
        }
    }

    /// The process id (panics when not running).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("a running sluiced").id() as i32
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            // Bounded by the shutdown grace and the HTTP drain, with room to spare.
            crate::common::wait_exit(&mut child, 90, "sluiced to stop after SIGTERM");
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::common::kill_and_reap(&mut child, "sluiced after SIGKILL");
        }
    }

    pub async fn client(&self) -> Client {
        let mut c = Client::connect(&self.socket).await;
        c.hello().await.expect("hello");
        c
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shared socket client with the tests' manners: params and results as
/// JSON (these tests check the wire itself), every wait bounded by 30 s, and
/// a broken connection a test failure rather than a value.
pub struct Client {
    inner: sluice_shared::client::Client,
}

/// How long one read or write may take before the test fails.
const IO_SECS: u64 = 30;

impl Client {
    pub async fn connect(path: &Path) -> Self {
        // A full listen backlog makes connect wait; bounded like every read.
        let inner = crate::common::within(
            IO_SECS,
            &format!("a connection to {}", path.display()),
            sluice_shared::client::Client::connect(path),
        )
        .await
        .expect("connect");
        Self { inner }
    }

    pub async fn hello(&mut self) -> Result<Value, RpcError> {
        let hello = crate::common::within(IO_SECS, "hello", self.inner.hello("test")).await;
        match hello {
            Ok(h) => Ok(serde_json::to_value(h).expect("encode")),
            Err(ClientError::Rpc(e)) => Err(e),
            Err(e) => panic!("hello: {e}"),
        }
    }

    /// `hello`, reporting a refusal (an error with a null id) or a closed
    /// connection (`None`) instead of failing.
    pub async fn try_hello(&mut self) -> Option<Result<Value, RpcError>> {
        let hello = crate::common::within(IO_SECS, "hello", self.inner.hello("test")).await;
        match hello {
            Ok(h) => Some(Ok(serde_json::to_value(h).expect("encode"))),
            Err(ClientError::Rpc(e)) => Some(Err(e)),
            Err(_) => None,
        }
    }

    /// Writes bytes as they are (frames the tests make bad on purpose).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // A daemon that stops reading fills the socket buffer: fail, do not wait.
        crate::common::within(
            IO_SECS,
            "the daemon to take a request",
            self.inner.send_raw(bytes),
        )
        .await
        .expect("write");
    }

    /// The next message the daemon sends.
    pub async fn read(&mut self) -> ServerMessage {
        crate::common::within(
            IO_SECS,
            "a message from the daemon",
            self.inner.next_message(),
        )
        .await
        .unwrap_or_else(|e| panic!("reading a message: {e}"))
    }

    /// What the daemon sends until it closes the connection.
    pub async fn until_closed(&mut self) -> Vec<ServerMessage> {
        let read = async {
            let mut said = Vec::new();
            loop {
                match self.inner.next_message().await {
                    Ok(m) => said.push(m),
                    Err(ClientError::Closed) => return said,
                    Err(e) => panic!("reading until the close: {e}"),
                }
            }
        };
        crate::common::within(IO_SECS, "the daemon to close the connection", read).await
    }

    /// Calls method `M` with `params` as given; the result as JSON.
    pub async fn call<M: Method>(&mut self, params: Value) -> Result<Value, RpcError> {
        self.call_named(M::NAME, params).await
    }

    /// Calls a method the table does not have (the daemon must say so).
    pub async fn call_unknown(&mut self, method: &'static str) -> Result<Value, RpcError> {
        assert!(
            sluice_shared::method::find(method).is_none(),
            "{method} is a real method"
        );
        self.call_named(method, Value::Object(Default::default()))
            .await
    }

    async fn call_named(&mut self, method: &'static str, params: Value) -> Result<Value, RpcError> {
        let call = Call { method, params };
        let reply = crate::common::within(IO_SECS, method, self.inner.call_value(&call)).await;
        match reply {
            Ok(v) => Ok(v),
            Err(ClientError::Rpc(e)) => Err(e),
            Err(e) => panic!("{method}: {e}"),
        }
    }

    pub async fn notification(&mut self) -> Notification {
        crate::common::within(IO_SECS, "a notification", self.inner.notification())
            .await
            .unwrap_or_else(|e| panic!("waiting for a notification: {e}"))
    }
}
