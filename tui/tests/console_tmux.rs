//! End to end: the real `sluice` console in tmux against a real `sluiced`.
//! Each test runs its own tmux server (`tmux -L`) and daemon on a temp
//! directory, drives the console with `send-keys` and polls `capture-pane`
//! until what it waits for appears or a deadline passes.
//!
//! Skipped, loudly, when tmux is not installed (CI's `.ci/run` installs it).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_shared::method::{self as m, Method as _};

fn tmux_missing() -> bool {
    // Not starting at all means not installed; once started it must answer in time.
    let ok = Command::new("tmux")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok_and(|mut c| common::wait_exit(&mut c, 30, "tmux -V").success());
    if !ok {
        eprintln!(
            "\n!!!!! SKIPPING console_tmux: tmux is not installed (apt-get install tmux) !!!!!\n"
        );
    }
    !ok
}

const PIPELINES: &[(&str, &str)] = &[
    (
        "deploy.yaml",
        "nodes:\n  - id: build\n    kind: shell\n    run: echo built\n  - id: gate\n    kind: approval\n    needs: [build]\n    message: Ship it?\n    allow_self_approval: true\n  - id: ship\n    kind: shell\n    needs: [gate]\n    run: echo shipped\n",
    ),
    (
        "fails.yaml",
        "retry: { attempts: 1 }\nnodes:\n  - id: boom\n    kind: shell\n    run: echo about to fail; exit 1\n",
    ),
    (
        "count.yaml",
        "nodes:\n  - id: c\n    kind: shell\n    run: for i in $(seq 1 400); do echo tick $i; sleep 0.1; done\n",
    ),
];

/// `sluice` subcommands against a test daemon.
trait Cli {
    fn cli(&self, args: &[&str]) -> String;
}

impl Cli for common::Daemon {
    fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.sluice_cols(80, args).stdout).into_owned()
    }
}

/// A private tmux server running the console.
struct Console {
    server: String,
}

impl Console {
    fn open(socket: &Path) -> Self {
        let server = format!("sluice-test-{}-{}", std::process::id(), fastrand_name());
        let cmd = format!(
            "exec '{}' --socket '{}'",
            env!("CARGO_BIN_EXE_sluice"),
            socket.display()
        );
        let status = common::status_within(
            Command::new("tmux")
                .args([
                    "-L",
                    &server,
                    "-f",
                    "/dev/null",
                    "new-session",
                    "-d",
                    "-x",
                    "120",
                    "-y",
                    "40",
                    "-s",
                    "c",
                ])
                .arg(cmd)
                .env_remove("TMUX"),
            30,
            "tmux new-session",
        );
        assert!(status.success());
        Self { server }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = common::output_within(
            Command::new("tmux").args(["-L", &self.server]).args(args),
            30,
            &format!("tmux {}", args.join(" ")),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "c"])
    }

    /// The table row drawn in reverse video (the highlighted run), escapes
    /// removed; None when no row is. The active tab is reversed too, so only
    /// rows that start with an id count.
    fn highlighted(&self) -> Option<String> {
        let styled = self.tmux(&["capture-pane", "-p", "-e", "-t", "c"]);
        styled
            .lines()
            .filter(|l| sgr_params(l).iter().any(|p| p == "7"))
            .map(strip_sgr)
            .find(|l| l.trim_start_matches(['│', ' ']).starts_with('#'))
    }

    /// Polls until the highlighted line holds every one of `parts`.
    fn wait_highlight(&self, what: &str, secs: u64, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let h = self.highlighted();
            if let Some(h) = h.as_deref().filter(|h| parts.iter().all(|p| h.contains(p))) {
                return h.to_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; highlighted: {h:?}; screen:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keys by tmux name (`Enter`, `Escape`) or single characters.
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "c", k]);
        }
    }

    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "c", "-l", text]);
    }

    /// Polls the screen until `pred` holds; panics with the screen after `secs`.
    fn wait(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, text: &str, secs: u64) -> String {
        self.wait(text, secs, |s| s.contains(text))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

fn fastrand_name() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Every parameter of every SGR escape (`ESC [ … m`) on `line`.
fn sgr_params(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("\x1b[") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(|c: char| !(c.is_ascii_digit() || c == ';')) else {
            break;
        };
        if rest[end..].starts_with('m') {
            out.extend(rest[..end].split(';').map(str::to_owned));
        }
        rest = &rest[end..];
    }
    out
}

/// `line` without its CSI escapes.
fn strip_sgr(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn line_with<'a>(screen: &'a str, parts: &[&str]) -> Option<&'a str> {
    screen.lines().find(|l| parts.iter().all(|p| l.contains(p)))
}

#[test]
fn approve_with_a_reason_and_see_the_run_complete() {
    if tmux_missing() {
        return;
    }
    let d = common::Daemon::started(PIPELINES, "");
    d.cli(&["trigger", "deploy"]);
    let c = Console::open(&d.socket());
    c.wait_for("● connected", 20);
    c.keys(&["3"]);
    c.wait("the pending approval", 20, |s| {
        line_with(s, &["#1", "gate"]).is_some()
    });
    c.keys(&["a"]);
    c.wait_for("reason (optional)", 5);
    c.type_text("tested on staging");
    // Enter moves to [ Approve ], Enter there approves (`y` would be typing).
    c.keys(&["Enter", "Enter"]);
    c.wait_for("approve approval #1: done", 10);
    c.keys(&["1"]);
    c.wait("the run to succeed", 20, |s| {
        line_with(s, &["#1", "deploy", "succeeded"]).is_some()
    });
    let audit = d.cli(&["audit"]);
    assert!(audit.contains(m::ApprovalsDecide::NAME), "{audit}");
}

#[test]
fn retry_a_failed_run_and_land_on_the_new_run() {
    if tmux_missing() {
        return;
    }
    let d = common::Daemon::started(PIPELINES, "");
    d.cli(&["trigger", "fails", "--wait"]);
    let c = Console::open(&d.socket());
    c.wait("the failed run", 20, |s| {
        line_with(s, &["#1", "fails", "failed"]).is_some()
    });
    c.keys(&["Enter"]);
    c.wait_for("about to fail", 10);
    c.keys(&["r"]);
    c.wait_for("Retry run #1?", 5);
    // The dialog opens on Cancel: Enter alone must not retry.
    c.keys(&["Enter"]);
    c.wait("the dialog to close", 5, |s| !s.contains("Retry run #1?"));
    assert!(!d.cli(&["runs"]).contains("#2"), "Enter on Cancel retried");
    c.keys(&["r"]);
    c.wait_for("Retry run #1?", 5);
    c.keys(&["y"]);
    c.wait("the new run", 20, |s| {
        s.contains("› run #2") && s.contains("retry of #1")
    });
}

#[test]
fn follow_a_live_log() {
    if tmux_missing() {
        return;
    }
    let d = common::Daemon::started(PIPELINES, "");
    d.cli(&["trigger", "count"]);
    let c = Console::open(&d.socket());
    c.wait("the running run", 20, |s| {
        line_with(s, &["#1", "count", "running"]).is_some()
    });
    c.keys(&["Enter"]);
    c.wait_for("following", 10);
    let first = c.wait("log lines", 20, |s| s.contains("tick 3"));
    let n = |s: &str| {
        s.lines()
            .filter_map(|l| l.split("tick ").nth(1))
            .filter_map(|t| t.split_whitespace().next()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    };
    let seen = n(&first);
    // New lines arrive on screen without a key press.
    c.wait("newer log lines", 20, |s| n(s) >= seen + 10);
    // Paused, the title counts what arrived meanwhile.
    c.keys(&["f"]);
    c.wait("the new-lines counter", 20, |s| s.contains("new lines"));
}

#[test]
fn reconnects_after_the_daemon_restarts() {
    if tmux_missing() {
        return;
    }
    // The console starts while the daemon is down and says so.
    let mut d = common::Daemon::new(PIPELINES, "");
    let c = Console::open(&d.socket());
    c.wait_for("DISCONNECTED", 10);
    d.start();
    c.wait_for("● connected", 30);
    d.cli(&["trigger", "fails", "--wait"]);
    c.wait("the run", 20, |s| line_with(s, &["#1", "fails"]).is_some());
    // Killed under it: the data stays on screen, marked stale, keys disabled.
    d.stop();
    let s = c.wait_for("DISCONNECTED", 20);
    assert!(s.contains("stale"), "{s}");
    assert!(line_with(&s, &["#1", "fails"]).is_some(), "{s}");
    c.keys(&["r"]);
    c.wait_for("not connected", 5);
    d.start();
    let s = c.wait("reconnection", 30, |s| {
        s.contains("● connected") && !s.contains("stale")
    });
    assert!(line_with(&s, &["#1", "fails"]).is_some(), "{s}");
}

#[test]
fn a_conflicting_keys_file_is_refused_before_the_screen_changes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("console.toml");
    std::fs::write(&keys, "[approvals]\napprove = \"x\"\n").unwrap();
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--keys")
            .arg(&keys)
            .arg("--socket")
            .arg(dir.path().join("none.sock")),
        common::COMMAND_SECS,
        "sluice --keys with a conflicting keys file",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key 'x' is bound to both 'approve' and 'reject' in approvals"),
        "{err}"
    );
    // Nothing was drawn: the refusal comes before raw mode and the alternate screen.
    assert!(
        out.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn actions_target_the_highlighted_run_after_a_reconnect() {
    if tmux_missing() {
        return;
    }
    let mut d = common::Daemon::started(PIPELINES, "");
    // #1-#3 wait for approval (cancellable), #4 and #5 failed (retryable).
    for _ in 0..3 {
        d.cli(&["trigger", "deploy"]);
    }
    d.cli(&["trigger", "fails", "--wait"]);
    d.cli(&["trigger", "fails", "--wait"]);
    let c = Console::open(&d.socket());
    c.wait("the five runs", 30, |s| {
        s.contains("Runs 5") && line_with(s, &["#5", "fails"]).is_some()
    });
    // The daemon is killed and started again on the same socket and state,
    // and a run is added while the console is still reconnecting.
    d.stop();
    c.wait_for("DISCONNECTED", 20);
    d.start();
    d.cli(&["trigger", "deploy"]);
    let s = c.wait("the reconnection with every run", 30, |s| {
        s.contains("● connected")
            && !s.contains("stale")
            && s.contains("Runs 6")
            && line_with(s, &["#6", "deploy"]).is_some()
    });
    for id in ["#1", "#2", "#3", "#4", "#5", "#6"] {
        assert!(line_with(&s, &[id]).is_some(), "{id} missing:\n{s}");
    }
    // Walk down to #3: newest first, so #6 #5 #4 #3.
    c.keys(&["g"]);
    c.wait_highlight("#6 highlighted", 10, &["#6", "deploy"]);
    for id in ["#5", "#4", "#3"] {
        c.keys(&["Down"]);
        c.wait_highlight(&format!("{id} highlighted"), 10, &[id]);
    }
    c.keys(&["c"]);
    let s = c.wait_for("Cancel run #3?", 10);
    assert_eq!(s.matches("Cancel run #").count(), 1, "{s}");
    c.keys(&["y"]);
    c.wait("run #3 cancelled", 20, |s| {
        line_with(s, &["#3", "cancelled"]).is_some()
    });
    // Only the highlighted run was cancelled.
    let runs = d.cli(&["runs"]);
    for id in ["#1", "#2", "#6"] {
        let row = runs.lines().find(|l| l.contains(id)).unwrap_or_default();
        assert!(row.contains("waiting"), "{id} should still wait:\n{runs}");
    }
    // Retry acts on the highlighted failed run too.
    c.keys(&["Up", "Up"]);
    c.wait_highlight("#5 highlighted", 10, &["#5", "fails"]);
    c.keys(&["r"]);
    let s = c.wait_for("Retry run #5?", 10);
    assert_eq!(s.matches("Retry run #").count(), 1, "{s}");
    c.keys(&["Escape"]);
    c.wait("the dialog to close", 5, |s| !s.contains("Retry run #5?"));
}

/// The `#N` run id and the `HH:MM:SS` times on a row.
fn run_and_times(row: &str) -> (Option<String>, Vec<String>) {
    let tokens: Vec<&str> = row
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|t| !t.is_empty())
        .collect();
    let run = tokens
        .iter()
        .find(|t| t.starts_with('#') && t[1..].chars().all(|c| c.is_ascii_digit()))
        .map(|t| (*t).to_owned());
    let times = tokens
        .iter()
        .filter(|t| {
            t.len() == 8
                && t.char_indices().all(|(i, c)| {
                    if i == 2 || i == 5 {
                        c == ':'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        })
        .map(|t| (*t).to_owned())
        .collect();
    (run, times)
}

#[test]
fn the_pipelines_view_follows_real_cron_fires_without_a_key() {
    if tmux_missing() {
        return;
    }
    let d = common::Daemon::started(
        &[(
            "tick.yaml",
            "description: fires every second\ntriggers:\n  - cron: \"* * * * * *\"\n    seconds: true\nnodes:\n  - id: t\n    kind: shell\n    run: echo tick\n",
        )],
        "",
    );
    let c = Console::open(&d.socket());
    c.wait_for("● connected", 20);
    c.keys(&["2"]);
    // A first fire has happened: the row shows a run and the next fire.
    let s = c.wait("the first fire on the row", 30, |s| {
        line_with(s, &["tick", "#"]).is_some_and(|row| {
            let (run, times) = run_and_times(row);
            run.is_some() && !times.is_empty()
        })
    });
    let row = line_with(&s, &["tick", "#"]).unwrap_or_default().to_owned();
    let (first_run, first_times) = run_and_times(&row);
    // No key from here on: later fires must reach the screen by themselves.
    c.wait("a later fire's run and next fire time", 30, |s| {
        line_with(s, &["tick", "#"]).is_some_and(|row| {
            let (run, times) = run_and_times(row);
            run.is_some() && run != first_run && !times.is_empty() && times != first_times
        })
    });
}
