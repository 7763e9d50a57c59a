//! `sluice demo`: a private daemon with the demo pipelines on a temporary
//! socket and state directory, a few runs started (one waits for an approval,
//! one fails), and the console opened on it. Quitting stops the daemon and
//! removes the directory. `--no-console` prints a live event feed instead,
//! until Ctrl-C or SIGTERM.
//!
//! The directory (`$TMPDIR/sluice-demo-<pid>-<random>`) is created
//! exclusively and private (0700): a predictable name would let another local
//! user plant it, or a database in it, before the demo starts.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use sluice_shared::client::{Client, Notice};
use sluice_shared::event::Event;
use sluice_shared::method as m;
use sluice_shared::protocol::{NoParams, SubscribeParams, TriggerParams};

use crate::exit::Exit;
use crate::output::emit;
use crate::table;
use sluice_tui::console::{self, ConsoleOptions};

/// How the demo introduces itself to its daemon.
const CLIENT: &str = concat!("sluice demo ", env!("CARGO_PKG_VERSION"));

const PIPELINES: &[(&str, &str)] = &[
    (
        "hello.yaml",
        include_str!("../../../config/demo/hello.yaml"),
    ),
    (
        "heartbeat.yaml",
        include_str!("../../../config/demo/heartbeat.yaml"),
    ),
    (
        "flaky.yaml",
        include_str!("../../../config/demo/flaky.yaml"),
    ),
    (
        "nightly-wait.yaml",
        include_str!("../../../config/demo/nightly-wait.yaml"),
    ),
    (
        "deploy.yaml",
        include_str!("../../../config/demo/deploy.yaml"),
    ),
    (
        "backup.yaml",
        include_str!("../../../config/demo/backup.yaml"),
    ),
];

/// Names of demo directories start with this, then the demo's pid and `-`.
const DIR_PREFIX: &str = "sluice-demo-";

/// SIGINT and SIGTERM, listened for from the start: a stream made once keeps
/// a signal that arrives while the feed is busy printing, where a fresh
/// `ctrl_c()` per loop turn would lose it (and the demo would never stop).
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs the demo: the console, or with `no_console` the event feed.
pub async fn run(no_console: bool, console: ConsoleOptions) -> anyhow::Result<Exit> {
    // Before anything exists to clean up, so no signal finds the default
    // action (death, directory left behind). The console reads Ctrl-C as a
    // key and is left as it was.
    let signals = if no_console {
        Some(StopSignals::new()?)
    } else {
        None
    };
    // Removed on drop, after the daemon is stopped.
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        // mkdir's own mode, so the directory is never open to others, even briefly.
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let me = std::fs::metadata(dir.path())
        .context("reading the demo's temporary directory")?
        .uid();
    remove_abandoned(me, dir.path());
    let (daemon, socket) = start(dir.path())?;
    let result = if let Some(signals) = signals {
        feed(dir.path(), &socket, signals).await
    } else {
        start_runs(&socket).await?;
        console::run(ConsoleOptions { socket, ..console })
            .await
            .map(|()| Exit::Success)
    };
    // The daemon stops before its directory goes.
    drop(daemon);
    drop(dir);
    result
}

/// Starts the demo runs: a greeting, a retried step, a durable wait, one
/// waiting for approval and one that fails.
async fn start_runs(socket: &Path) -> anyhow::Result<()> {
    let (mut control, _) = Client::open(socket, CLIENT).await?;
    for (name, who) in [
        ("hello", Some("demo")),
        ("flaky", None),
        ("nightly-wait", None),
        ("deploy", None),
        ("backup", None),
    ] {
        let inputs: Map<String, Value> = who
            .map(|w| ("who".to_owned(), Value::from(w)))
            .into_iter()
            .collect();
        control
            .call::<m::PipelinesTrigger>(TriggerParams {
                name: name.to_owned(),
                inputs,
                wait: false,
            })
            .await?;
    }
    Ok(())
}

/// Removes the directories of demos that were killed before they could
/// clean up: owned by `me` (uid), and their `sluice` (named in the
/// directory) and their `sluiced` (named in the state lock) are both gone.
/// Also removes our flaky-pipeline markers older than a minute. `current`
/// is this demo's own directory.
fn remove_abandoned(me: u32, current: &Path) {
    // Liveness is read from /proc; elsewhere nothing is removed.
    if !Path::new("/proc/self").exists() {
        return;
    }
    // A zombie (dead, not yet reaped by whoever adopted it) counts as gone.
    let alive = |pid: &str| {
        pid.trim().parse::<u32>().is_ok_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                !s.lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
            })
        })
    };
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        // Only our own plain files and directories: never follow a link, never
        // touch another user's files (as root we could).
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.uid() != me || meta.file_type().is_symlink() || e.path() == current {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        // The flaky demo pipeline's marker outlives a demo stopped between the
        // attempts; a live demo's marker lasts one backoff (at most 10 s).
        if name.starts_with("sluice-flaky-") {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60));
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
            continue;
        }
        // `sluice-demo-<pid>-<random>`, or `sluice-demo-<pid>` from older demos.
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let pid = rest.split('-').next().unwrap_or_default();
        let lock = e.path().join("state").join("sluiced.lock");
        let daemon = std::fs::read_to_string(&lock).unwrap_or_default();
        if !alive(pid) && !alive(&daemon) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let _ = self.0.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[cfg(target_os = "linux")]
    #[link_name = "prctl"]
    fn libc_prctl(option: i32, ...) -> i32;
}

/// Makes the demo daemon get SIGTERM when this process dies, however it dies
/// (a SIGKILLed console must not leave a daemon running its cron triggers).
fn stop_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        const PR_SET_PDEATHSIG: i32 = 1;
        const SIGTERM: std::ffi::c_ulong = 15;
        // SAFETY: prctl is async-signal-safe and only changes the child's own
        // death signal; no memory is shared or allocated between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc_prctl(PR_SET_PDEATHSIG, SIGTERM) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

fn sluiced_path() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding the sluice binary")?;
    let path = me.with_file_name("sluiced");
    if !path.exists() {
        bail!(
            "sluiced is not next to sluice ({}); build both with `cargo build --release`",
            path.display()
        );
    }
    Ok(path)
}

fn start(dir: &Path) -> anyhow::Result<(Daemon, PathBuf)> {
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines)
        .with_context(|| format!("creating {}", pipelines.display()))?;
    for (name, text) in PIPELINES {
        let path = pipelines.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    let socket = dir.join("sluice.sock");
    let mut cmd = Command::new(sluiced_path()?);
    stop_with_parent(&mut cmd);
    let mut child = cmd
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--pipelines")
        .arg(&pipelines)
        .arg("--socket")
        .arg(&socket)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("SLUICE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sluiced")?;
    let stderr = child.stderr.take().context("sluiced's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let daemon = Daemon(child);
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("sluiced: ready") => break,
            Some(Ok(line)) => seen.push(line),
            _ => bail!("sluiced stopped before it was ready:\n{}", seen.join("\n")),
        }
    }
    // The daemon's later messages go to a log file in the demo directory.
    let log = dir.join("sluiced.log");
    std::thread::spawn(move || {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(log);
        if let Ok(mut f) = file {
            for line in lines.map_while(Result::ok) {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    Ok((daemon, socket))
}

fn clock() -> String {
    jiff::Zoned::now().strftime("%H:%M:%S").to_string()
}

/// Prints the demo's events until Ctrl-C or SIGTERM.
async fn feed(dir: &Path, socket: &Path, mut signals: StopSignals) -> anyhow::Result<Exit> {
    let socket = socket.to_path_buf();
    let (mut client, _) = Client::open(&socket, CLIENT).await?;
    let pipelines = client.call::<m::PipelinesList>(NoParams).await?;
    let rows: Vec<Vec<String>> = pipelines
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.triggers.join(", "),
                p.next_fire.clone().unwrap_or_else(|| "-".into()),
                p.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    emit(&format!(
        "sluice demo: a private sluiced is running\n  state   {}\n  socket  {}\n\n{}\n",
        dir.join("state").display(),
        socket.display(),
        table::render(
            &["PIPELINE", "TRIGGERS", "NEXT FIRE", "DESCRIPTION"],
            &rows,
            100
        )
    ))?;
    emit(&format!(
        "In another terminal:\n  export SLUICE_SOCKET={}\n  sluice runs\n  sluice trigger hello -i who=you --wait\n  sluice logs <run> -f\n\nLive events (Ctrl-C stops the demo and the daemon):\n",
        socket.display()
    ))?;
    client
        .call::<m::Subscribe>(SubscribeParams::default())
        .await?;
    start_runs(&socket).await?;
    let mut names = std::collections::HashMap::new();
    loop {
        let n = tokio::select! {
            n = client.notification() => n?,
            () = signals.recv() => break,
        };
        let notice = match Notice::read(n) {
            Notice::Event(e) => e,
            Notice::Lagged(_) => {
                emit(&format!("{} (some events skipped)\n", clock()))?;
                continue;
            }
            Notice::Other(_) => continue,
        };
        let line = match notice.event {
            Event::RunCreated { run, pipeline } => {
                names.insert(run, pipeline.clone());
                Some(format!("{:<6} {pipeline:<14} accepted", run.to_string()))
            }
            Event::RunState { run, state, error } => Some(format!(
                "{:<6} {:<14} {state}{}",
                run.to_string(),
                names.get(&run).cloned().unwrap_or_default(),
                error.map_or(String::new(), |e| format!(": {e}"))
            )),
            Event::NodeState {
                run,
                node,
                state,
                attempt,
                error,
            } => Some(format!(
                "{:<6}   {node:<12} {state} (attempt {attempt}){}",
                run.to_string(),
                error.map_or(String::new(), |e| format!(": {e}"))
            )),
            Event::Log {
                run,
                node,
                line,
                stream,
                ..
            } => Some(format!(
                "{:<6}   {node:<12} {stream} | {line}",
                run.to_string()
            )),
            Event::PipelineChanged { name, change, .. } => {
                Some(format!("pipeline {name} {change}"))
            }
            Event::ConfigError { file, .. } => {
                Some(format!("rejected {file} (see `sluice` validate)"))
            }
            Event::ApprovalRequested { run, node, .. } => Some(format!(
                "{:<6}   {node:<12} waits for approval (sluice approvals)",
                run.to_string()
            )),
            _ => None,
        };
        if let Some(line) = line {
            emit(&format!("{} {line}\n", clock()))?;
        }
    }
    emit(&format!(
        "\nstopping the demo daemon and removing {}\n",
        dir.display()
    ))?;
    Ok(Exit::Success)
}
