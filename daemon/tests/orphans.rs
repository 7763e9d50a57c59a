//! A child of an attempt interrupted by kill -9 must not keep running while the
//! attempt is retried: the restarted daemon stops the recorded process group
//! first, so the step's effect happens exactly once.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use daemon::Daemon;
use serde_json::json;

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

/// The recorded process group of the run's running attempt, once recorded.
fn recorded_pgid(d: &Daemon) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        d.path("state/sluice.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    conn.query_row(
        "SELECT pgid FROM attempts WHERE state = 'running' AND pgid IS NOT NULL",
        [],
        |r| r.get(0),
    )
    .ok()
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
    c.call("pipelines.trigger", json!({ "name": "slow" }))
        .await
        .expect("trigger");
    let pgid = common::eventually(30, "the attempt's process group to be recorded", || {
        let pgid = recorded_pgid(&d);
        let begun = lines(&started) == 1;
        async move { pgid.filter(|_| begun) }
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
    let mut c = d.client().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = c
            .call("runs.get", json!({ "id": 1 }))
            .await
            .expect("runs.get");
        if run["state"] == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried attempt did not succeed: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        lines(&started),
        2,
        "one attempt before the crash, one after"
    );
    assert_eq!(lines(&marks), 1, "the interrupted attempt never finished");
}
