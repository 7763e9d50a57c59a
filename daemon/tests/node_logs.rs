//! What a node's log tells an operator beyond the attempt's own output: an
//! attempt interrupted by a daemon stop, the node's outcome, approval
//! decisions and expiries; and lines of both streams in one order everywhere.
//! All on the real engine and a temp SQLite store.

mod common;

use std::collections::BTreeMap;

use common::{Fixture, eventually, next_event, pipeline};
use serde_json::json;
use sluice_daemon::engine::Decider;
use sluice_shared::event::Event;
use sluice_shared::run::{RunId, RunState};

/// One node's stored lines as `(attempt, stream, line)`, in `seq` order.
async fn node_log(f: &Fixture, run: RunId, node: &str) -> Vec<(u32, String, String)> {
    f.store
        .logs(run, Some(node))
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.attempt, l.stream, l.line))
        .collect()
}

/// Waits until `node`'s log holds a line starting with `last`, then returns the log.
async fn log_with(f: &Fixture, run: RunId, node: &str, last: &str) -> Vec<(u32, String, String)> {
    eventually(20, &format!("'{last}' in {node}'s log"), || async {
        let log = node_log(f, run, node).await;
        log.iter()
            .any(|(_, _, l)| l.starts_with(last))
            .then_some(log)
    })
    .await
}

fn note(attempt: u32, line: &str) -> (u32, String, String) {
    (attempt, "sluice".into(), line.into())
}

fn out(attempt: u32, line: &str) -> (u32, String, String) {
    (attempt, "stdout".into(), line.into())
}

fn who(user: &str) -> Decider {
    Decider {
        user: user.into(),
        groups: Vec::new(),
    }
}

#[tokio::test]
async fn an_attempt_interrupted_by_a_daemon_stop_is_marked_before_the_retry() {
    let mut f = Fixture::new().await;
    let dir = f.dir.path().display().to_string();
    let p = pipeline(
        "tick",
        &format!(
            "nodes:\n  - id: tick\n    kind: shell\n    run: \"echo tick 1; while [ ! -e {dir}/release ]; do sleep 0.05; done; echo done\"\n"
        ),
    );
    let mut events = f.engine.subscribe();
    let run = f.submit(&p, json!({})).await;
    next_event(
        &mut events,
        20,
        |e| matches!(e, Event::Log { run: r, line, .. } if *r == run && line == "tick 1"),
    )
    .await;
    // The engine stops with the attempt running, as in a crash: recovery finds it.
    f.restart().await;
    std::fs::write(f.path("release"), "").unwrap();
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let mut log = log_with(&f, run, "tick", "node succeeded").await;
    let by_seq: Vec<String> = log.iter().map(|(_, _, l)| l.clone()).collect();
    // The fixture's stop is a shutdown with no grace, which notes its kill;
    // a kill -9 cannot (daemon/tests/orphans.rs has that case).
    log.retain(|(_, _, l)| !l.starts_with("cancelled: stopping the process group"));
    assert_eq!(
        log,
        [
            out(1, "tick 1"),
            note(1, "attempt 1 interrupted by a daemon stop; retrying"),
            out(2, "tick 1"),
            out(2, "done"),
            note(2, "node succeeded"),
        ]
    );
    // Read as a client pages it (by insertion), the order is the same.
    let paged: Vec<String> = f
        .store
        .logs_after(run, Some("tick"), None, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l.line)
        .collect();
    assert_eq!(paged, by_seq);
}

#[tokio::test]
async fn every_node_log_ends_with_its_outcome() {
    let f = Fixture::new().await;
    let p = pipeline(
        "mixed",
        "nodes:\n  - id: good\n    kind: shell\n    run: echo fine\n  - id: bad\n    kind: shell\n    retry: { attempts: 2, backoff: 10ms }\n    run: \"echo trying; exit 3\"\n  - id: after_bad\n    kind: transform\n    needs: [bad]\n    output: { x: 1 }\n  - id: never\n    kind: transform\n    when: \"1 == 2\"\n    output: { x: 1 }\n",
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);

    let good = log_with(&f, run, "good", "node succeeded").await;
    assert_eq!(good, [out(1, "fine"), note(1, "node succeeded")]);

    // The last attempt's failure is the node's: its outcome names the error.
    let error = f.store.nodes(run).await.unwrap()[1].error.clone().unwrap();
    let bad = log_with(&f, run, "bad", &format!("node failed: {error}")).await;
    assert_eq!(bad[0], out(1, "trying"));
    assert!(
        bad[1].0 == 1 && bad[1].2.starts_with("attempt 1 failed:") && bad[1].2.contains("retrying"),
        "{bad:#?}"
    );
    assert_eq!(bad[2], out(2, "trying"));
    assert_eq!(bad[3], note(2, &format!("node failed: {error}")));
    assert_eq!(bad.len(), 4, "{bad:#?}");

    let after = log_with(
        &f,
        run,
        "after_bad",
        "node skipped: needs 'bad', which failed",
    )
    .await;
    assert_eq!(after.len(), 1, "{after:#?}");
    let never = log_with(&f, run, "never", "node skipped: `when` was false").await;
    assert_eq!(never.len(), 1, "{never:#?}");
}

#[tokio::test]
async fn a_cancelled_node_says_so_last() {
    let f = Fixture::new().await;
    let p = pipeline(
        "long",
        "nodes:\n  - id: wait\n    kind: shell\n    run: \"echo started; sleep 30\"\n  - id: later\n    kind: transform\n    needs: [wait]\n    output: { x: 1 }\n",
    );
    let mut events = f.engine.subscribe();
    let run = f.submit(&p, json!({})).await;
    next_event(
        &mut events,
        20,
        |e| matches!(e, Event::Log { run: r, line, .. } if *r == run && line == "started"),
    )
    .await;
    f.engine.cancel(run).await.unwrap();
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Cancelled);
    let wait = log_with(&f, run, "wait", "node cancelled").await;
    assert_eq!(wait.first(), Some(&out(1, "started")));
    assert_eq!(wait.last(), Some(&note(1, "node cancelled")));
    let later = log_with(&f, run, "later", "node cancelled").await;
    assert_eq!(later.len(), 1, "{later:#?}");
}

fn gate(extra: &str) -> String {
    format!(
        "nodes:\n  - id: gate\n    kind: approval\n{extra}  - id: after\n    kind: transform\n    needs: [gate]\n    output: {{ ok: true }}\n"
    )
}

/// Waits for the run's pending approval and returns its id.
async fn pending(f: &Fixture, run: RunId) -> i64 {
    eventually(20, "the approval to be requested", || async {
        let list = f.store.approvals(true, 1000).await.unwrap();
        list.into_iter().find(|a| a.run == run).map(|a| a.id)
    })
    .await
}

#[tokio::test]
async fn approval_decisions_are_in_the_nodes_log_with_reasons_masked() {
    let mut secrets = BTreeMap::new();
    secrets.insert("token".to_owned(), "s3cr3t-value".to_owned());
    let f = Fixture::with_secrets(secrets).await;

    // Two approvers, each with a reason.
    let p = pipeline("ship", &gate("    min_approvals: 2\n"));
    let run = f.submit(&p, json!({})).await;
    let id = pending(&f, run).await;
    f.engine
        .decide(id, &who("alice"), true, Some("diff checked".into()))
        .await
        .unwrap();
    f.engine.decide(id, &who("bob"), true, None).await.unwrap();
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let log = log_with(&f, run, "gate", "node succeeded").await;
    let tail: Vec<&str> = log.iter().skip(1).map(|(_, _, l)| l.as_str()).collect();
    assert!(
        log[0].2.starts_with(&format!("waiting for approval #{id}")),
        "{log:#?}"
    );
    assert_eq!(
        tail,
        [
            format!("approval #{id} approved by alice (diff checked), bob").as_str(),
            "node succeeded"
        ]
    );

    // A rejection names who and why; a secret in the reason stays masked.
    let run = f.submit(&p, json!({})).await;
    let id = pending(&f, run).await;
    f.engine
        .decide(id, &who("carol"), false, Some("leaks s3cr3t-value".into()))
        .await
        .unwrap();
    common::finished(&f.engine, run).await;
    let log = log_with(&f, run, "gate", "node failed: rejected by carol: leaks ***").await;
    let lines: Vec<&str> = log.iter().map(|(_, _, l)| l.as_str()).collect();
    assert!(
        lines.contains(&format!("approval #{id} rejected by carol: leaks ***").as_str()),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("s3cr3t")), "{lines:#?}");
}

#[tokio::test]
async fn an_expiry_is_in_the_nodes_log() {
    let f = Fixture::new().await;
    let p = pipeline("ship", &gate("    timeout: 300ms\n"));
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    let id = f.store.approvals(false, 10).await.unwrap()[0].id;
    let expired = format!("approval #{id} expired with no decision; on_timeout: reject");
    let log = log_with(&f, run, "gate", "node failed:").await;
    let lines: Vec<&str> = log.iter().map(|(_, _, l)| l.as_str()).collect();
    // The request, then the expiry, then the outcome: nothing lost to a shared seq.
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(lines[1], expired);
    assert!(lines[2].starts_with("node failed:"), "{lines:#?}");
}

#[tokio::test]
async fn lines_of_both_streams_keep_one_order_when_stored_paged_and_announced() {
    let f = Fixture::new().await;
    // Hundreds of lines within a few milliseconds, alternating streams.
    let p = pipeline(
        "chatty",
        "nodes:\n  - id: talk\n    kind: shell\n    run: \"for i in $(seq 1 300); do echo out $i; echo err $i >&2; done\"\n",
    );
    let mut events = f.engine.subscribe();
    let run = f.submit(&p, json!({})).await;
    let mut announced = Vec::new();
    let collect = async {
        loop {
            match events.recv().await {
                Ok(Event::Log { run: r, seq, .. }) if r == run => announced.push(seq),
                Ok(Event::RunState { run: r, state, .. }) if r == run && state.is_finished() => {
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    };
    common::within(60, "the run to finish", collect).await;
    let log = log_with(&f, run, "talk", "node succeeded").await;
    assert_eq!(log.len(), 601, "every line kept");
    // Each stream in its own order.
    for stream in ["stdout", "stderr"] {
        let n: Vec<u32> = log
            .iter()
            .filter(|(_, s, _)| s == stream)
            .map(|(_, _, l)| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(n, (1..=300).collect::<Vec<_>>(), "{stream}");
    }
    // Insertion order (what logs.get pages) is seq order (what followers
    // dedupe by), and events come in that order too: a reader skipping a seq
    // it has passed loses nothing.
    let stored = f.store.logs(run, Some("talk")).await.unwrap();
    let paged = f
        .store
        .logs_after(run, Some("talk"), None, 0, 10_000)
        .await
        .unwrap();
    let seqs: Vec<u32> = stored.iter().map(|l| l.seq).collect();
    let paged_seqs: Vec<u32> = paged.iter().map(|(_, l)| l.seq).collect();
    assert_eq!(paged_seqs, seqs);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(announced, seqs);
}
