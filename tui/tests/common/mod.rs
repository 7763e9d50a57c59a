//! What the `sluice` tests share: the real `sluiced` on a temp directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one `sluice` command may take before the test fails (a
/// `--wait` on a short run included).
pub const COMMAND_SECS: u64 = 60;

/// The daemon binary next to ours (built on demand: the console never links the daemon).
pub fn sluiced() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluiced");
    if !path.exists() {
        // Long enough for a cold build on a busy machine, but not forever.
        let status = status_within(
            Command::new(env!("CARGO")).args(["build", "-p", "sluice-daemon", "--bin", "sluiced"]),
            1800,
            "cargo build sluiced",
        );
        assert!(status.success());
    }
    path
}

/// A `sluiced` with its own pipelines, config, state and socket; killed on drop.
pub struct Daemon {
    /// Holds `pipelines/`, `state/`, `sluiced.toml` and the socket.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    /// Writes the pipelines and the config, without starting the daemon.
    pub fn new(pipelines: &[(&str, &str)], config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipelines");
        std::fs::create_dir_all(&p).unwrap();
        for (name, text) in pipelines {
            std::fs::write(p.join(name), text).unwrap();
            std::fs::set_permissions(p.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::write(dir.path().join("sluiced.toml"), config).unwrap();
        Self { dir, child: None }
    }

    /// Writes everything and starts the daemon.
    pub fn started(pipelines: &[(&str, &str)], config: &str) -> Self {
        let mut d = Self::new(pipelines, config);
        d.start();
        d
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    /// Starts the daemon and waits until it says it is ready.
    pub fn start(&mut self) {
        let mut child = Command::new(sluiced())
            .arg("--config")
            .arg(self.dir.path().join("sluiced.toml"))
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--pipelines")
            .arg(self.dir.path().join("pipelines"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SLUICE_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Lines::new(child.stderr.take().unwrap());
        self.child = Some(child);
        // The reader thread keeps draining stderr after the ready line.
        lines.wait_for(60, "sluiced's ready line", |l| {
            l.starts_with("sluiced: ready")
        });
    }

    /// Kills the daemon (SIGKILL: clients must cope with a daemon that vanishes).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            kill_and_reap(&mut c, "sluiced after SIGKILL");
        }
    }

    /// Runs `sluice` against this daemon with tables `columns` wide.
    pub fn sluice_cols(&self, columns: u16, args: &[&str]) -> Output {
        output_within(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(args)
                .env("SLUICE_SOCKET", self.socket())
                .env("COLUMNS", columns.to_string()),
            COMMAND_SECS,
            &format!("sluice {}", args.join(" ")),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c, "sluiced after SIGKILL");
        }
    }
}

/// A child's output read on a thread, so a test can wait for a line with a
/// deadline instead of blocking on the pipe forever.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line received so far (for failure messages).
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `stream` (to its end, so the child never blocks on a full pipe).
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line, `None` at the end of the stream; panics after the deadline.
    pub fn next_before(&mut self, deadline: Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "timed out waiting for {what}; saw:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// The first line matching `pred`; panics after `secs` seconds or when the
    /// stream ends first, saying `what` it waited for and what it saw.
    pub fn wait_for(&mut self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match self.next_before(deadline, what) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "the stream ended before {what}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every further line until the stream ends; panics after `secs` seconds.
    pub fn rest(&mut self, secs: u64, what: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut rest = Vec::new();
        while let Some(line) = self.next_before(deadline, what) {
            rest.push(line);
        }
        rest
    }
}

/// Waits for `child` to exit; after `secs` seconds kills it and panics, saying `what`.
pub fn wait_exit(child: &mut Child, secs: u64, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_and_reap(child, what);
                panic!("timed out after {secs} s waiting for {what} (killed it)");
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// `Command::status` with a deadline: kills the child and panics after `secs`
/// seconds, saying `what` (stdio as `cmd` sets it).
pub fn status_within(cmd: &mut Command, secs: u64, what: &str) -> ExitStatus {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    wait_exit(&mut child, secs, what)
}

/// SIGKILLs `child` and reaps it within 30 s; past that it panics saying
/// `what` (only reports it when already unwinding, as in a `Drop`).
pub fn kill_and_reap(child: &mut Child, what: &str) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let problem = match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => {
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

/// `Command::output` with a deadline: kills the child and panics after `secs` seconds.
pub fn output_within(cmd: &mut Command, secs: u64, what: &str) -> Output {
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
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
