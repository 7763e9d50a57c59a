//! `sluice demo` starts a private daemon, runs the demo pipelines and stops
//! cleanly on Ctrl-C or SIGTERM. Every wait on the demo has a deadline.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lines, wait_exit};

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// A demo, killed (SIGKILL) and reaped if the test fails midway.
struct Demo {
    child: Child,
    lines: Lines,
}

impl Demo {
    fn start() -> Self {
        common::sluiced();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["demo", "--no-console"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice demo");
        let lines = Lines::new(child.stdout.take().expect("stdout"));
        Self { child, lines }
    }

    /// The demo's temporary directory, from the state path it prints.
    fn dir(&mut self) -> PathBuf {
        let line = self.lines.wait_for(60, "the demo's state directory", |l| {
            l.trim_start().starts_with("state ")
        });
        let state = PathBuf::from(line.trim_start().trim_start_matches("state").trim());
        state.parent().expect("state has a parent").to_owned()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        common::kill_and_reap(&mut self.child, "the demo after SIGKILL");
    }
}

#[test]
fn demo_runs_pipelines_live_and_stops_on_ctrl_c() {
    let mut demo = Demo::start();
    let dir = demo.dir();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!("sluice-demo-{}-", demo.child.id());
    assert!(
        name.starts_with(&prefix) && name.len() > prefix.len(),
        "a random name after the pid: {name}"
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().mode() & 0o777,
        0o700,
        "the demo directory is private"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut hello_done, mut flaky_done) = (false, false);
    // The demo prints events as they happen; the daemon retries `flaky` after a backoff.
    while !(hello_done && flaky_done) {
        let Some(line) = demo
            .lines
            .next_before(deadline, "hello and flaky to succeed")
        else {
            panic!("demo ended early:\n{}", demo.lines.seen.join("\n"))
        };
        hello_done |=
            line.contains("hello") && line.ends_with("succeeded") && !line.contains("attempt");
        flaky_done |=
            line.contains("flaky") && line.ends_with("succeeded") && !line.contains("attempt");
    }
    assert!(
        demo.lines.seen.iter().any(|l| l.contains("retrying in")),
        "the flaky step was retried:\n{}",
        demo.lines.seen.join("\n")
    );
    demo.signal(SIGINT);
    let rest = demo.lines.rest(60, "the demo to stop after SIGINT");
    let status = wait_exit(&mut demo.child, 60, "the demo to exit after SIGINT");
    assert!(status.success(), "{status:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("stopping the demo daemon")),
        "{rest:?}"
    );
    assert!(!dir.exists(), "the demo removes its directory");
}

#[test]
fn sigterm_stops_the_demo_and_removes_its_directory() {
    let mut demo = Demo::start();
    let dir = demo.dir();
    // Signalled while the feed is busy printing the first events.
    demo.lines
        .wait_for(60, "a first event", |l| l.contains("accepted"));
    demo.signal(SIGTERM);
    let status = wait_exit(&mut demo.child, 60, "the demo to exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!dir.exists(), "the demo removes its directory on SIGTERM");
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// Polls `check` for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_demo_takes_its_daemon_along_and_the_next_demo_clears_its_files() {
    let mut first = Demo::start();
    let dir = first.dir();
    let lock = dir.join("state").join("sluiced.lock");
    let mut daemon = 0;
    eventually("the demo daemon to take its state lock", || {
        daemon = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        daemon != 0
    });
    assert!(running(daemon));
    first.child.kill().unwrap();
    wait_exit(&mut first.child, 30, "the SIGKILLed demo");
    eventually("the daemon to stop with its demo", || !running(daemon));
    assert!(
        dir.exists(),
        "a SIGKILLed demo cannot clean up after itself"
    );

    // Not ours to remove: a look-alike owned by another user, and a dead
    // demo's name that is only a symbolic link.
    let tmp = std::env::temp_dir();
    let foreign = tmp.join(format!(
        "sluice-demo-999999999-foreign{}",
        std::process::id()
    ));
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let target = tempfile::tempdir().unwrap();
    let link = tmp.join(format!("sluice-demo-999999998-link{}", std::process::id()));
    std::os::unix::fs::symlink(target.path(), &link).unwrap();

    // Flaky-pipeline markers: one left by a demo stopped between attempts long
    // ago, one of a demo retrying right now.
    let marker = |age: u64| {
        let path = tmp.join(format!("sluice-flaky-test-{}-{age}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(age))
            .unwrap();
        path
    };
    let (stale, fresh) = (marker(120), marker(0));

    let mut second = Demo::start();
    // Running (its signal handlers in place) once it reports a run.
    second
        .lines
        .wait_for(60, "the second demo to run hello", |l| {
            l.contains("hello") && l.ends_with("succeeded")
        });
    let kept = (foreign.exists(), link.exists(), target.path().exists());
    let _ = std::fs::remove_dir(&foreign);
    let _ = std::fs::remove_file(&link);
    assert!(!dir.exists(), "the abandoned directory is removed");
    assert!(!stale.exists(), "an old flaky marker is removed");
    assert!(fresh.exists(), "a marker in use is kept");
    assert_eq!(
        kept,
        (true, true, true),
        "another user's directory and a link are left alone"
    );
    std::fs::remove_file(&fresh).unwrap();
    second.signal(SIGINT);
    second.lines.rest(60, "the second demo to stop");
    assert!(wait_exit(&mut second.child, 60, "the second demo to exit").success());
}
