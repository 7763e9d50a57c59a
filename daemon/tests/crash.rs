//! kill -9 in the middle of work: the real `sluiced` binary on a temp state
//! directory is SIGKILLed with shell nodes running, delays waiting and runs
//! queued, then started again. Every run must finish exactly once, with every
//! node's attempts recorded, none lost and none duplicated. On the store the
//! suite runs on: SQLite, or PostgreSQL in its PostgreSQL half.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::eventually;
use sluice_daemon::store::Durability;
use sluice_shared::run::{AttemptState, NodeState, RunState};

/// sluiced on `state`, with the `sluiced.toml` next to it (which names the
/// store on PostgreSQL; empty on SQLite).
fn sluiced(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluiced"));
    cmd.arg("--config")
        .arg(state.with_file_name("sluiced.toml"))
        .arg("--state-dir")
        .arg(state)
        .arg("--socket")
        .arg(state.join("sluice.sock"))
        // Any free port: the default 8677 may be taken by another test's daemon.
        .arg("--listen")
        .arg("127.0.0.1:0");
    cmd.env("SLUICE_LOG", "warn");
    cmd
}

/// Starts the daemon and waits for its ready line.
fn start(state: &Path) -> Child {
    let mut child = sluiced(state)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sluiced");
    let stderr = child.stderr.take().expect("stderr");
    // Its reader thread keeps draining stderr so the daemon never blocks on a full pipe.
    common::Lines::new(stderr).wait_for(60, "sluiced's ready line", |l| {
        l.starts_with("sluiced: ready")
    });
    child
}

fn submit(state: &Path, file: &Path, n: u32) {
    let out = common::output_within(
        sluiced(state)
            .arg("submit")
            .arg(file)
            .arg("-i")
            .arg(format!("n={n}")),
        60,
        "sluiced submit",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_finishes_exactly_once_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let backend = common::Backend::new().await;
    std::fs::write(dir.path().join("sluiced.toml"), backend.config()).unwrap();
    let ledger = dir.path().join("ledger");
    let file = dir.path().join("work.yaml");
    let append = |node: &str, pause: &str| {
        format!(
            "echo \\\"{{{{ run.id }}}} {node}\\\" >> {}; sleep {pause}",
            ledger.display()
        )
    };
    std::fs::write(
        &file,
        format!(
            "inputs:\n  n: {{ type: integer }}\nnodes:\n  - id: first\n    kind: shell\n    run: \"{}\"\n  - id: pause\n    kind: delay\n    needs: [first]\n    for: 1s\n  - id: second\n    kind: shell\n    needs: [pause]\n    run: \"{}\"\n  - id: side\n    kind: shell\n    run: \"{}\"\n  - id: done\n    kind: transform\n    needs: [second, side]\n    output: {{ n: \"{{{{ inputs.n }}}}\" }}\n",
            append("first", "0.5"),
            append("second", "0.5"),
            append("side", "1.5"),
        ),
    )
    .unwrap();

    for n in 0..8 {
        submit(&state, &file, n);
    }
    let mut daemon = start(&state);
    let store = backend
        .open(&state.join("sluice.db"), Durability::Full)
        .await;
    // Wait until work is in flight: some node running and some run waiting on its delay.
    eventually(60, "nodes running and delays waiting", || async {
        let runs = store.runs(None, 100).await.unwrap();
        let (mut running, mut waiting) = (0, 0);
        for r in &runs {
            for n in store.nodes(r.id).await.unwrap() {
                match n.state {
                    NodeState::Running => running += 1,
                    NodeState::Waiting => waiting += 1,
                    _ => {}
                }
            }
        }
        (running > 0 && waiting > 0).then_some(())
    })
    .await;
    daemon.kill().expect("SIGKILL");
    common::kill_and_reap(&mut daemon, "sluiced after SIGKILL");

    // More work accepted while the daemon is down.
    for n in 8..11 {
        submit(&state, &file, n);
    }
    let mut daemon = start(&state);
    let runs = eventually(120, "every run to finish", || async {
        let runs = store.runs(None, 100).await.unwrap();
        runs.iter().all(|r| r.state.is_finished()).then_some(runs)
    })
    .await;

    assert_eq!(runs.len(), 11, "no run lost, none duplicated");
    let mut ids: Vec<i64> = runs.iter().map(|r| r.id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 11);
    let ledger = std::fs::read_to_string(&ledger).unwrap();
    let mut interrupted = 0;
    for r in &runs {
        assert_eq!(r.state, RunState::Succeeded, "run {} {:?}", r.id, r.error);
        let nodes = store.nodes(r.id).await.unwrap();
        let attempts = store.attempts(r.id).await.unwrap();
        for n in &nodes {
            assert_eq!(
                n.state,
                NodeState::Succeeded,
                "run {} node {}",
                r.id,
                n.node_id
            );
            let mine: Vec<_> = attempts.iter().filter(|a| a.node_id == n.node_id).collect();
            assert_eq!(
                mine.len() as u32,
                n.attempts,
                "every attempt of {} in run {} is recorded",
                n.node_id,
                r.id
            );
            assert_eq!(mine.last().map(|a| a.state), Some(AttemptState::Succeeded));
            assert!(
                mine.iter().all(|a| a.finished_at.is_some()),
                "no attempt left open"
            );
            interrupted += mine
                .iter()
                .filter(|a| a.state == AttemptState::Interrupted)
                .count();
            if ["first", "second", "side"].contains(&n.node_id.as_str()) {
                let executed = ledger
                    .lines()
                    .filter(|l| *l == format!("{} {}", r.id.0, n.node_id))
                    .count();
                assert!(
                    executed >= 1 && executed <= mine.len(),
                    "{} of run {} executed {executed} times in {} attempts",
                    n.node_id,
                    r.id,
                    mine.len()
                );
            }
        }
    }
    assert!(interrupted > 0, "the kill interrupted at least one attempt");

    // SIGTERM stops it cleanly.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        common::wait_exit(&mut daemon, 90, "sluiced to stop after SIGTERM")
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}
