//! kill -9 in the middle of work: the real `sluiced` binary on a temp state
//! directory is SIGKILLed with shell nodes running, delays waiting and runs
//! queued (all triggered through its socket), then started again. Every run
//! must finish exactly once, with every node's attempts recorded, none lost
//! and none duplicated. On the store the suite runs on: SQLite, or
//! PostgreSQL in its PostgreSQL half.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use common::eventually;
use daemon::Daemon;
use serde_json::json;
use sluice_shared::method as m;
use sluice_shared::run::{AttemptState, NodeState, RunState};

/// Runs triggered through the socket before the kill.
const RUNS: usize = 11;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_finishes_exactly_once_after_sigkill() {
    let mut d = Daemon::prepare("", &[]);
    let ledger = d.path("ledger");
    let append = |node: &str, pause: &str| {
        format!(
            "echo \\\"{{{{ run.id }}}} {node}\\\" >> {}; sleep {pause}",
            ledger.display()
        )
    };
    // Two runs at a time, the rest queued behind them: the kill finds runs
    // in every state.
    std::fs::write(
        d.path("pipelines/work.yaml"),
        format!(
            "concurrency: {{ max_runs: 2, on_overlap: queue }}\ninputs:\n  n: {{ type: integer }}\nnodes:\n  - id: first\n    kind: shell\n    run: \"{}\"\n  - id: pause\n    kind: delay\n    needs: [first]\n    for: 1s\n  - id: second\n    kind: shell\n    needs: [pause]\n    run: \"{}\"\n  - id: side\n    kind: shell\n    run: \"{}\"\n  - id: done\n    kind: transform\n    needs: [second, side]\n    output: {{ n: \"{{{{ inputs.n }}}}\" }}\n",
            append("first", "0.5"),
            append("second", "0.5"),
            append("side", "1.5"),
        ),
    )
    .unwrap();
    d.spawn();
    let mut c = d.client().await;
    for n in 0..RUNS {
        c.call::<m::PipelinesTrigger>(json!({ "name": "work", "inputs": { "n": n } }))
            .await
            .expect("triggered through the socket");
    }
    // The store the suite runs on: SQLite, or PostgreSQL in its PostgreSQL half.
    let store = d.store().await;
    // Wait until work is in flight: some node running, some run waiting on its
    // delay and some run still queued.
    eventually(
        60,
        "nodes running, delays waiting and runs queued",
        || async {
            let runs = store.runs(None, 100).await.unwrap();
            let queued = runs.iter().filter(|r| r.state == RunState::Queued).count();
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
            (running > 0 && waiting > 0 && queued > 0).then_some(())
        },
    )
    .await;
    d.kill();

    d.spawn();
    let runs = eventually(120, "every run to finish", || async {
        let runs = store.runs(None, 100).await.unwrap();
        runs.iter().all(|r| r.state.is_finished()).then_some(runs)
    })
    .await;

    assert_eq!(runs.len(), RUNS, "no run lost, none duplicated");
    let mut ids: Vec<i64> = runs.iter().map(|r| r.id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), RUNS);
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
    d.signal(libc::SIGTERM);
    let mut child = d.child.take().expect("the restarted sluiced");
    let status = tokio::task::spawn_blocking(move || {
        common::wait_exit(&mut child, 90, "sluiced to stop after SIGTERM")
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}
