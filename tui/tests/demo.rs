//! `sluice demo` starts a private daemon, runs the demo pipelines and stops cleanly on Ctrl-C.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn ensure_sluiced() {
    common::sluiced();
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn demo_runs_pipelines_live_and_stops_on_ctrl_c() {
    ensure_sluiced();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["demo", "--no-console"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut hello_done = false;
    let mut flaky_done = false;
    // The demo prints events as they happen; the daemon retries `flaky` after a backoff.
    while !(hello_done && flaky_done) {
        let Some(Ok(line)) = lines.next() else {
            panic!("demo ended early:\n{}", seen.join("\n"))
        };
        hello_done |=
            line.contains("hello") && line.ends_with("succeeded") && !line.contains("attempt");
        flaky_done |=
            line.contains("flaky") && line.ends_with("succeeded") && !line.contains("attempt");
        seen.push(line);
        assert!(
            seen.len() < 500,
            "no success in sight:\n{}",
            seen.join("\n")
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("retrying in")),
        "the flaky step was retried:\n{}",
        seen.join("\n")
    );
    // SAFETY: signalling our own child.
    unsafe { kill(child.id() as i32, 2) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("stopping the demo daemon")),
        "{rest:?}"
    );
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_killed_demo_takes_its_daemon_along_and_the_next_demo_clears_its_files() {
    ensure_sluiced();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["demo", "--no-console"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", first.id()));
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
    first.kill().unwrap();
    first.wait().unwrap();
    eventually("the daemon to stop with its demo", || !running(daemon));
    assert!(
        dir.exists(),
        "a SIGKILLed demo cannot clean up after itself"
    );

    // Flaky-pipeline markers: one left by a demo stopped between attempts long
    // ago, one of a demo retrying right now.
    let marker = |age: u64| {
        let path =
            std::env::temp_dir().join(format!("sluice-flaky-test-{}-{age}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(age))
            .unwrap();
        path
    };
    let (stale, fresh) = (marker(120), marker(0));

    let mut second = spawn();
    let mut lines = BufReader::new(second.stdout.take().unwrap()).lines();
    // Running (its Ctrl-C handler in place) once it reports a run.
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("hello") && l.ends_with("succeeded")),
        "the second demo runs"
    );
    assert!(!dir.exists(), "the abandoned directory is removed");
    assert!(!stale.exists(), "an old flaky marker is removed");
    assert!(fresh.exists(), "a marker in use is kept");
    std::fs::remove_file(&fresh).unwrap();
    // SAFETY: signalling our own child.
    unsafe { kill(second.id() as i32, 2) };
    let _: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(second.wait().unwrap().success());
}
