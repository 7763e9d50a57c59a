//! A child of an attempt interrupted by kill -9 must not keep running while the
//! attempt is retried: the restarted daemon stops the recorded process group
//! first, so the step's effect happens exactly once.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use daemon::Daemon;
use serde_json::json;
use sluice_daemon::store::Store;
use sluice_shared::method::{self as m, Method as _};
use sluice_shared::run::AttemptState;

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Whether `pid` is a live process (a zombie is not: the container's first
/// process may reap orphans late).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next().map(|s| s != "Z"))
            .unwrap_or(false)
    })
}

/// The recorded process groups of the attempts still marked running.
async fn recorded_pgids(store: &Store) -> Vec<i64> {
    let runs = store.runs(None, 1000).await.expect("runs");
    let mut pgids = Vec::new();
    for run in runs {
        let attempts = store.attempts(run.id).await.expect("attempts");
        pgids.extend(
            attempts
                .iter()
                .filter(|a| a.state == AttemptState::Running)
                .filter_map(|a| a.pgid.map(i64::from)),
        );
    }
    pgids
}

/// The recorded process group of the run's running attempt, once recorded.
async fn recorded_pgid(store: &Store) -> Option<i64> {
    recorded_pgids(store).await.first().copied()
}

/// Attempts still marked running in the store.
async fn running_attempts(store: &Store) -> usize {
    let mut n = 0;
    for run in store.runs(None, 1000).await.expect("runs") {
        n += store
            .attempts(run.id)
            .await
            .expect("attempts")
            .iter()
            .filter(|a| a.state == AttemptState::Running)
            .count();
    }
    n
}

/// Waits (60 s at most) for run 1, retried after the restart, to succeed;
/// returns the client it asked with.
async fn first_run_succeeds(d: &Daemon) -> daemon::Client {
    let mut c = d.client().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = c
            .call::<m::RunsGet>(json!({ "id": 1 }))
            .await
            .expect(m::RunsGet::NAME);
        if run["state"] == "succeeded" {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried attempt did not succeed: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attempts_child_is_stopped_before_the_retry() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let marks = out_dir.path().join("marks");
    let started = out_dir.path().join("started");
    // `started` gets a line per attempt as it begins; `marks` one per attempt
    // that got to its end. The pause is long enough that the interrupted
    // attempt, if left alive, would write its mark before the retry ends.
    let pipeline = format!(
        "nodes:\n  - id: slow\n    kind: shell\n    run: \"echo x >> {started}; sleep 6; echo x >> {marks}\"\n",
        started = started.display(),
        marks = marks.display()
    );
    let mut d = Daemon::start("", &[("slow.yaml", &pipeline)]);
    let mut c = d.client().await;
    let store = d.store().await;
    c.call::<m::PipelinesTrigger>(json!({ "name": "slow" }))
        .await
        .expect("trigger");
    let pgid = common::eventually(30, "the attempt's process group to be recorded", || async {
        let pgid = recorded_pgid(&store).await;
        let begun = lines(&started) == 1;
        pgid.filter(|_| begun)
    })
    .await;
    let pgid = i32::try_from(pgid).expect("pgid fits");
    drop(c);
    d.kill();
    assert!(running(pgid), "the orphaned shell outlives the daemon");

    d.spawn();
    common::eventually(30, "the old process group to be stopped", || async move {
        (!running(pgid)).then_some(())
    })
    .await;
    let mut c = first_run_succeeds(&d).await;
    assert_eq!(
        lines(&started),
        2,
        "one attempt before the crash, one after"
    );
    assert_eq!(lines(&marks), 1, "the interrupted attempt never finished");
    // The node's log says where the crash fell, and ends with the outcome.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let notes = loop {
        let page = c
            .call::<m::LogsGet>(json!({ "run": 1, "node": "slow" }))
            .await
            .expect(m::LogsGet::NAME);
        let notes: Vec<(u64, String)> = page["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter(|l| l["stream"] == "sluice")
            .map(|l| {
                let attempt = l["attempt"].as_u64().unwrap_or(0);
                (attempt, l["line"].as_str().unwrap_or("").to_owned())
            })
            .collect();
        if notes.iter().any(|(_, l)| l == "node succeeded") {
            break notes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no outcome in the log: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        notes,
        [
            (
                1,
                "attempt 1 interrupted by a daemon stop; retrying".to_owned()
            ),
            (2, "node succeeded".to_owned()),
        ]
    );
}

/// Cancels sent the moment the restarted daemon answers race the background
/// recovery: whichever reaches a run first repairs it, so no run is cancelled
/// with its interrupted attempt still marked running and its processes alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_recovery_still_stop_what_interrupted_attempts_left() {
    const RUNS: usize = 40;
    let pipeline = "nodes:\n  - id: slow\n    kind: shell\n    run: sleep 300\n";
    let mut d = Daemon::start("[engine]\nworkers = 64\n", &[("slow.yaml", pipeline)]);
    let mut c = d.client().await;
    let store = d.store().await;
    for _ in 0..RUNS {
        c.call::<m::PipelinesTrigger>(json!({ "name": "slow" }))
            .await
            .expect("trigger");
    }
    let pgids = common::eventually(
        60,
        "every attempt's process group to be recorded",
        || async {
            let pgids = recorded_pgids(&store).await;
            (pgids.len() == RUNS).then_some(pgids)
        },
    )
    .await;
    drop(c);
    d.kill();

    d.spawn();
    let mut c = d.client().await;
    for id in 1..=RUNS {
        c.call::<m::RunsCancel>(json!({ "id": id }))
            .await
            .expect("cancel");
    }
    for pgid in pgids {
        let pgid = i32::try_from(pgid).expect("pgid fits");
        common::eventually(
            30,
            "a leftover process group to be stopped",
            || async move { (!running(pgid)).then_some(()) },
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let runs = c
            .call::<m::RunsList>(json!({ "limit": 100 }))
            .await
            .expect(m::RunsList::NAME);
        let rows = runs["runs"].as_array().cloned().unwrap_or_default();
        let cancelled = rows.iter().filter(|r| r["state"] == "cancelled").count();
        if cancelled == RUNS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{cancelled} of {RUNS} runs cancelled: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        running_attempts(&store).await,
        0,
        "an interrupted attempt was left marked running"
    );
}

/// A child that left the attempt's process group (setsid, as a daemonising
/// tool does) is still found after kill -9, by the attempt marker in its
/// environment, and stopped before the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_left_its_process_group_is_still_stopped() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let first = out_dir.path().join("first");
    let pidfile = out_dir.path().join("pid");
    let pipeline = format!(
        "nodes:\n  - id: escape\n    kind: shell\n    run: \"if [ ! -e {first} ]; then touch {first}; setsid sleep 300 & echo $! > {pid}; sleep 300; fi\"\n",
        first = first.display(),
        pid = pidfile.display(),
    );
    let mut d = Daemon::start("", &[("escape.yaml", &pipeline)]);
    let mut c = d.client().await;
    let store = d.store().await;
    c.call::<m::PipelinesTrigger>(json!({ "name": "escape" }))
        .await
        .expect("trigger");
    let pid = common::eventually(30, "the escaped child to start", || async {
        let pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        let recorded = recorded_pgid(&store).await.is_some();
        pid.filter(|_| recorded)
    })
    .await;
    drop(c);
    d.kill();
    assert!(running(pid), "the escaped child outlives the daemon");

    d.spawn();
    common::eventually(30, "the escaped child to be stopped", || async move {
        (!running(pid)).then_some(())
    })
    .await;
    first_run_succeeds(&d).await;
}
