//! `sluice demo` starts a private daemon, runs the demo pipelines and stops cleanly on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn ensure_sluiced() {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluiced");
    if !path.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "sluice-daemon", "--bin", "sluiced"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
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
