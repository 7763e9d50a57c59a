//! The state directory against the real `sluiced`: private modes, refusal of
//! a directory or database someone else could have written, the state lock
//! (never kept by a child, a live holder reported at once) and the raised
//! file descriptor limit. On PostgreSQL (the suite's PostgreSQL half) the
//! directory holds no database: what is about the SQLite file is skipped there.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Lines, wait_exit};
use sluice_daemon::statedir::StateLock;
use sluice_shared::method as m;

struct Paths {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// Where the store lives (named by `sluiced.toml`).
    _backend: common::Backend,
}

impl Paths {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        std::fs::create_dir(root.join("pipelines")).unwrap();
        let backend = common::Backend::new_blocking();
        std::fs::write(root.join("sluiced.toml"), backend.config()).unwrap();
        Self {
            _tmp: tmp,
            root,
            _backend: backend,
        }
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// sluiced on this directory, its stderr read on a thread.
    fn sluiced(&self, socket: &str, tweak: impl FnOnce(&mut Command)) -> (Child, Lines) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluiced"));
        cmd.arg("--config")
            .arg(self.root.join("sluiced.toml"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("--pipelines")
            .arg(self.root.join("pipelines"))
            .arg("--socket")
            .arg(self.root.join(socket))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SLUICE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("spawn sluiced");
        let lines = Lines::new(child.stderr.take().unwrap());
        (child, lines)
    }

    /// Starts sluiced and waits for its ready line.
    fn ready(&self, socket: &str, tweak: impl FnOnce(&mut Command)) -> Running {
        let (child, mut lines) = self.sluiced(socket, tweak);
        let mut running = Running(child);
        lines.wait_for(60, "sluiced's ready line", |l| {
            l.starts_with("sluiced: ready")
        });
        running.0.try_wait().unwrap();
        running
    }

    /// Starts sluiced, expecting it to refuse: its error output.
    fn refused(&self, socket: &str) -> String {
        let (mut child, mut lines) = self.sluiced(socket, |_| {});
        let status = wait_exit(&mut child, 30, "sluiced to refuse the state directory");
        assert!(!status.success(), "sluiced started: {:?}", lines.seen);
        lines.rest(10, "sluiced's error output").join("\n")
    }
}

/// A daemon killed (SIGKILL) and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        common::kill_and_reap(&mut self.0, "sluiced after SIGKILL");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_private_the_socket_0660_and_scripts_keep_the_callers_umask() {
    let p = Paths::new();
    let out = p.root.join("umask.txt");
    std::fs::write(
        p.root.join("pipelines/hello.yaml"),
        format!(
            "nodes:\n  - id: a\n    kind: shell\n    run: umask > {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        p.root.join("pipelines/hello.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _d = p.ready("s.sock", |cmd| {
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o027);
                Ok(())
            });
        }
    });
    let state = p.state();
    assert_eq!(mode(&state), 0o700, "the state directory");
    assert_eq!(mode(&state.join("sluiced.lock")), 0o600, "the lock");
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        if common::on_postgres() {
            // The store is elsewhere: no database file is made on the side.
            assert!(!state.join(name).exists(), "{name} on PostgreSQL");
        } else {
            assert_eq!(mode(&state.join(name)), 0o600, "{name}");
        }
    }
    assert_eq!(mode(&p.root.join("s.sock")) & 0o777, 0o660, "the socket");

    // A script creates files with the umask sluiced was started with, not 077.
    let mut c = daemon::Client::connect(&p.root.join("s.sock")).await;
    c.hello().await.unwrap();
    c.call::<m::PipelinesTrigger>(serde_json::json!({ "name": "hello" }))
        .await
        .unwrap();
    let text = common::eventually(30, "the script to write its umask", || async {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .await;
    assert_eq!(text.trim(), "0027");
}

/// The descriptors a node's process starts with, when sluiced was started
/// with `umask`: a script lists them (`ls` adds its own directory, 3).
async fn child_descriptors(umask: libc::mode_t) -> Vec<String> {
    let p = Paths::new();
    let out = p.root.join("fds.txt");
    let file = p.root.join("pipelines/fds.yaml");
    std::fs::write(
        &file,
        format!(
            "nodes:\n  - id: a\n    kind: shell\n    run: ls /proc/self/fd > {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _d = p.ready("s.sock", |cmd| {
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
    });
    let mut c = daemon::Client::connect(&p.root.join("s.sock")).await;
    c.hello().await.unwrap();
    // The daemon has its database, WAL, lock, log, socket, listener and
    // inotify descriptors open while the node starts.
    c.call::<m::PipelinesTrigger>(serde_json::json!({ "name": "fds" }))
        .await
        .unwrap();
    let text = common::eventually(30, "the script to list its descriptors", || async {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .await;
    text.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_processes_start_with_only_stdio_however_they_are_spawned() {
    // 077 is the daemon's own umask: children inherit it and are started by
    // posix_spawn. 022 differs: set between fork and exec, with the fd sweep.
    for umask in [0o077, 0o022] {
        assert_eq!(
            child_descriptors(umask).await,
            ["0", "1", "2", "3"],
            "descriptors of a node process when sluiced runs under umask {umask:03o}"
        );
    }
}

#[test]
fn a_database_owned_by_another_user_is_refused_naming_path_owner_and_mode() {
    if common::sqlite_file_only("a database file owned by another user") {
        return;
    }
    let p = Paths::new();
    let state = p.state();
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = state.join("sluice.db");
    std::fs::write(&db, b"planted").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();

    let err = p.refused("s.sock");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains("mode 0600"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"planted",
        "the planted file is left alone"
    );
    assert!(!p.root.join("s.sock").exists(), "nothing was served");

    // The directory itself, too.
    std::fs::remove_file(&db).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), None).unwrap();
    let err = p.refused("s.sock");
    assert!(err.contains("state directory"), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(err.contains("mode 0700"), "{err}");
}

#[test]
fn a_group_writable_state_directory_is_refused_and_a_readable_one_tightened() {
    let p = Paths::new();
    let state = p.state();
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
    let err = p.refused("s.sock");
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(err.contains("mode 0770"), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(!state.join("sluice.db").exists(), "nothing was created");
    assert_eq!(
        mode(&state),
        0o770,
        "refused, not changed behind the operator's back"
    );

    // Readable by others (as an older sluiced left it): made private, then used.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _d = p.ready("s.sock", |_| {});
    assert_eq!(mode(&state), 0o700);
    if !common::sqlite_file_only("the database file's mode") {
        assert_eq!(mode(&state.join("sluice.db")), 0o600);
    }
}

#[test]
fn a_child_between_fork_and_exec_does_not_keep_the_state_lock() {
    let p = Paths::new();
    sluice_daemon::statedir::prepare(&p.state()).unwrap();
    // This process plays the daemon: it holds the lock and starts a child
    // that stops between fork and exec (where a shell child was caught
    // holding a flock'd descriptor), then "dies" by letting the lock go.
    let lock = StateLock::acquire(&p.state()).unwrap();
    let (parent_end, child_end) = std::os::unix::net::UnixStream::pair().unwrap();
    parent_end
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&child_end);
    let spawner = std::thread::spawn(move || {
        let mut cmd = Command::new("true");
        // SAFETY: write and read are async-signal-safe; the buffer is on the stack.
        unsafe {
            cmd.pre_exec(move || {
                let mut byte = [b'f'];
                libc::write(fd, byte.as_ptr().cast(), 1);
                // Parked until the test says go (a byte, or EOF if it panicked).
                libc::read(fd, byte.as_mut_ptr().cast(), 1);
                Ok(())
            });
        }
        // spawn returns once the child has exec'd.
        cmd.spawn().and_then(|mut c| c.wait())
    });
    let mut byte = [0u8];
    std::io::Read::read_exact(&mut (&parent_end), &mut byte)
        .expect("the child to stop between fork and exec");
    drop(lock);

    let d = p.ready("s.sock", |_| {});
    let recorded = std::fs::read_to_string(p.state().join("sluiced.lock")).unwrap();
    assert_eq!(
        recorded,
        d.0.id().to_string(),
        "the new daemon holds the lock"
    );

    std::io::Write::write_all(&mut (&parent_end), b"g").unwrap();
    drop(child_end);
    let status = join_within(spawner, 30).expect("the parked child ran");
    assert!(status.success());
}

/// Joins `handle`, panicking after `secs` seconds.
fn join_within<T: Send + 'static>(handle: std::thread::JoinHandle<T>, secs: u64) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !handle.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for a thread"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    handle.join().expect("the thread panicked")
}

#[test]
fn a_live_holder_is_reported_at_once() {
    let p = Paths::new();
    let first = p.ready("first.sock", |_| {});
    let started = std::time::Instant::now();
    let err = p.refused("second.sock");
    assert!(
        err.contains(&format!("in use by another sluiced (pid {})", first.0.id()))
            && err.contains("sluice trigger"),
        "{err}"
    );
    assert!(
        started.elapsed() < sluice_daemon::statedir::DEAD_HOLDER_WAIT,
        "a live holder is not waited for ({:?})",
        started.elapsed()
    );
}

/// `sluiced submit` wrote runs into the state directory behind the daemon's
/// back, past its roles, limits, audit trail and idempotency keys. It is gone:
/// it refuses, naming `sluice trigger`, and writes nothing, whether a daemon
/// serves the directory or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluiced_submit_is_refused_and_writes_nothing() {
    let p = Paths::new();
    let file = p.root.join("pipelines/hello.yaml");
    std::fs::write(
        &file,
        "inputs:\n  who: { type: string }\nnodes:\n  - id: a\n    kind: transform\n    output: { who: \"{{ inputs.who }}\" }\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let submit = || {
        common::output_within(
            Command::new(env!("CARGO_BIN_EXE_sluiced"))
                .arg("--state-dir")
                .arg(p.state())
                .arg("submit")
                .arg(&file)
                .arg("-i")
                .arg("who=x"),
            30,
            "sluiced submit",
        )
    };
    let refused = |out: &std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("`sluiced submit` was removed")
                && err.contains("`sluice trigger hello -i NAME=VALUE`"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    };

    // No daemon: not even the state directory is created.
    refused(&submit());
    assert!(
        !p.state().exists(),
        "sluiced submit created the state directory"
    );

    // A daemon serving the directory: its store gains no run; the socket's does.
    let _d = p.ready("s.sock", |_| {});
    refused(&submit());
    let mut c = daemon::Client::connect(&p.root.join("s.sock")).await;
    c.hello().await.unwrap();
    c.call::<m::PipelinesTrigger>(
        serde_json::json!({ "name": "hello", "inputs": { "who": "y" }, "wait": true }),
    )
    .await
    .unwrap();
    let page = c.call::<m::RunsList>(serde_json::json!({})).await.unwrap();
    let runs = page["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "only the socket's run: {page}");
    assert_eq!(runs[0]["state"], "succeeded", "{page}");
}

#[test]
fn the_descriptor_limit_is_raised_to_the_hard_limit() {
    let p = Paths::new();
    let d = p.ready("s.sock", |cmd| {
        // SAFETY: setrlimit is async-signal-safe; the struct is on the stack.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 2048,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.0.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["2048", "2048"], "{line}");
}
