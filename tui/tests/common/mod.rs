//! What the `sluice` tests share: the real `sluiced` on a temp directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The daemon binary next to ours (built on demand: the console never links the daemon).
pub fn sluiced() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluiced");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "sluice-daemon", "--bin", "sluiced"])
            .status()
            .expect("cargo build sluiced");
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
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().starts_with("sluiced: ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// Kills the daemon (SIGKILL: clients must cope with a daemon that vanishes).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Runs `sluice` against this daemon with tables `columns` wide.
    pub fn sluice_cols(&self, columns: u16, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_SOCKET", self.socket())
            .env("COLUMNS", columns.to_string())
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
