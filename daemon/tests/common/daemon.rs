//! The real `sluiced` binary on a temp directory, and a raw JSON-RPC client
//! speaking to its socket (the protocol types come from `sluice_shared`).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_shared::protocol::{Notification, Request, RpcError, ServerMessage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

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
        std::fs::write(dir.path().join("sluiced.toml"), config).expect("write config");
        let socket = dir.path().join("sluice.sock");
        Self {
            dir,
            child: None,
            socket,
            http: String::new(),
            env: Vec::new(),
            stderr: None,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
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

pub struct Client {
    reader: TokioBufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    next: u64,
    pub notifications: std::collections::VecDeque<Notification>,
}

impl Client {
    pub async fn connect(path: &Path) -> Self {
        // A full listen backlog makes connect wait; bounded like every read.
        let stream = crate::common::within(
            30,
            &format!("a connection to {}", path.display()),
            UnixStream::connect(path),
        )
        .await
        .expect("connect");
        let (r, w) = stream.into_split();
        Self {
            reader: TokioBufReader::new(r),
            writer: w,
            next: 1,
            notifications: Default::default(),
        }
    }

    pub async fn hello(&mut self) -> Result<Value, RpcError> {
        self.call(
            "hello",
            json!({ "protocol": sluice_shared::protocol::protocol_version(), "client": "test" }),
        )
        .await
    }

    /// `hello`, reporting a refusal (an error with a null id) or a closed
    /// connection (`None`) instead of failing.
    pub async fn try_hello(&mut self) -> Option<Result<Value, RpcError>> {
        let mut frame = serde_json::to_string(&Request::new(
            0,
            "hello",
            json!({ "protocol": sluice_shared::protocol::protocol_version() }),
        ))
        .expect("encode");
        frame.push('\n');
        // The daemon may have closed a refused connection already: then the read tells.
        let _ = self.writer.write_all(frame.as_bytes()).await;
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), self.reader.read_line(&mut line))
            .await
            .expect("reply in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        match serde_json::from_str::<ServerMessage>(&line).expect("a JSON-RPC message") {
            ServerMessage::Response(r) => Some(match r.error {
                Some(e) => Err(e),
                None => Ok(r.result.unwrap_or(Value::Null)),
            }),
            ServerMessage::Notification(n) => panic!("notification before hello: {n:?}"),
        }
    }

    /// The reading half, for tests that read raw bytes.
    pub fn reader_mut(&mut self) -> &mut TokioBufReader<OwnedReadHalf> {
        &mut self.reader
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // A daemon that stops reading fills the socket buffer: fail, do not wait.
        crate::common::within(
            30,
            "the daemon to take a request",
            self.writer.write_all(bytes),
        )
        .await
        .expect("write");
    }

    pub async fn read(&mut self) -> ServerMessage {
        let mut line = String::new();
        let n = crate::common::within(
            30,
            "a message from the daemon",
            self.reader.read_line(&mut line),
        )
        .await
        .expect("read");
        assert!(n > 0, "connection closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad message {line}: {e}"))
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next;
        self.next += 1;
        let mut frame = serde_json::to_string(&Request::new(id, method, params)).expect("encode");
        frame.push('\n');
        self.send_raw(frame.as_bytes()).await;
        loop {
            match self.read().await {
                ServerMessage::Response(r) if r.id == json!(id) => {
                    return match r.error {
                        Some(e) => Err(e),
                        None => Ok(r.result.unwrap_or(Value::Null)),
                    };
                }
                ServerMessage::Response(r) => panic!("unexpected response {r:?}"),
                ServerMessage::Notification(n) => self.notifications.push_back(n),
            }
        }
    }

    pub async fn notification(&mut self) -> Notification {
        if let Some(n) = self.notifications.pop_front() {
            return n;
        }
        loop {
            if let ServerMessage::Notification(n) = self.read().await {
                return n;
            }
        }
    }
}
