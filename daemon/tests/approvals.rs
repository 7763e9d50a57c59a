//! Approval nodes on the real engine and store: deciding, the two-person rule,
//! expiry with each `on_timeout`, restarts, cancels, and races.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fixture, eventually, next_event, pipeline};
use serde_json::json;
use sluice_daemon::engine::{Decider, EngineError};
use sluice_daemon::store::approvals::ApprovalRecord;
use sluice_shared::event::Event;
use sluice_shared::run::{NodeState, RunId, RunState};

fn who(user: &str) -> Decider {
    Decider {
        user: user.into(),
        groups: Vec::new(),
    }
}

fn gate(extra: &str) -> String {
    format!(
        "inputs:\n  what: {{ type: string, default: v1 }}\nnodes:\n  - id: gate\n    kind: approval\n    message: \"Ship {{{{ inputs.what }}}}?\"\n{extra}  - id: after\n    kind: transform\n    needs: [gate]\n    output: {{ by: \"{{{{ nodes.gate.output.by | join(',') }}}}\" }}\n"
    )
}

/// Waits for the run's approval to be pending and returns it.
async fn pending(f: &Fixture, run: RunId) -> ApprovalRecord {
    eventually(20, "the approval to be requested", || async {
        let list = f.store.approvals(true, 100_000).await.unwrap();
        let a = list.into_iter().find(|a| a.run == run)?;
        let r = f.store.run(run).await.unwrap()?;
        (r.state == RunState::Waiting).then_some(a)
    })
    .await
}

#[tokio::test]
async fn an_approved_run_completes_with_the_decision_as_output() {
    let f = Fixture::new().await;
    let mut events = f.engine.subscribe();
    let p = pipeline("ship", &gate(""));
    let run = f.submit(&p, json!({ "what": "v2" })).await;
    let requested = next_event(
        &mut events,
        20,
        |e| matches!(e, Event::ApprovalRequested { run: r, .. } if r == &run),
    )
    .await;
    let Event::ApprovalRequested { approval, .. } = requested else {
        unreachable!()
    };
    let a = pending(&f, run).await;
    assert_eq!(a.id, approval);
    assert_eq!(a.message.as_deref(), Some("Ship v2?"));
    assert_eq!(a.requested_by.as_deref(), Some("tester"));
    // A waiting run holds no task.
    eventually(10, "the driver to leave", || async {
        (f.engine.active_runs() == 0).then_some(())
    })
    .await;

    let done = f
        .engine
        .decide(a.id, &who("alice"), true, Some("looks good".into()))
        .await
        .unwrap();
    assert!(done.decided);
    assert_eq!(done.approval.state, "approved");
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let nodes = f.store.nodes(run).await.unwrap();
    let out = nodes[0].output.clone().unwrap();
    assert_eq!(out["decision"], "approved");
    assert_eq!(out["by"], json!(["alice"]));
    assert_eq!(out["reason"], "looks good");
    assert!(out["at"].is_string());
    assert_eq!(nodes[1].output.clone().unwrap()["by"], "alice");

    // Deciding again is a clear conflict naming the winner.
    let again = f
        .engine
        .decide(a.id, &who("bob"), false, Some("no".into()))
        .await
        .unwrap_err();
    let msg = again.to_string();
    assert!(
        matches!(again, EngineError::Conflict(_)) && msg.contains("already approved by alice at"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_rejection_needs_a_reason_and_fails_the_run() {
    let f = Fixture::new().await;
    let p = pipeline("ship", &gate(""));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    let err = f
        .engine
        .decide(a.id, &who("alice"), false, Some("  ".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Input(_)), "{err}");
    f.engine
        .decide(a.id, &who("alice"), false, Some("not on a Friday".into()))
        .await
        .unwrap();
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    let error = record.error.unwrap_or_default();
    assert!(
        error.contains("rejected by alice: not on a Friday"),
        "{error}"
    );
    let nodes = f.store.nodes(run).await.unwrap();
    assert_eq!(nodes[0].state, NodeState::Failed);
    assert_eq!(nodes[0].output.clone().unwrap()["decision"], "rejected");
    assert_eq!(nodes[1].state, NodeState::Skipped);
}

#[tokio::test]
async fn only_listed_approvers_decide_and_never_the_requester_unless_allowed() {
    let f = Fixture::new().await;
    let p = pipeline("ship", &gate("    approvers: [bob, \"@ops\"]\n"));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    let err = f
        .engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Denied(_)) && err.to_string().contains("bob, @ops"),
        "{err}"
    );
    let carol = Decider {
        user: "carol".into(),
        groups: vec!["ops".into()],
    };
    f.engine.decide(a.id, &carol, true, None).await.unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );

    // The user who triggered the run ("tester") may not approve it...
    let p = pipeline("ship", &gate(""));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    let err = f
        .engine
        .decide(a.id, &who("tester"), true, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Denied(_)) && err.to_string().contains("allow_self_approval"),
        "{err}"
    );
    // ...but may reject it.
    f.engine
        .decide(a.id, &who("tester"), false, Some("changed my mind".into()))
        .await
        .unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Failed
    );

    // With allow_self_approval they may.
    let p = pipeline("ship", &gate("    allow_self_approval: true\n"));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    f.engine
        .decide(a.id, &who("tester"), true, None)
        .await
        .unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );
}

#[tokio::test]
async fn two_people_must_approve_under_the_two_person_rule() {
    let f = Fixture::new().await;
    let p = pipeline("ship", &gate("    min_approvals: 2\n"));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    let first = f
        .engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap();
    assert!(!first.decided);
    assert_eq!(first.approval.state, "pending");
    assert_eq!(first.approval.votes.len(), 1);
    let twice = f
        .engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("already approved"), "{twice}");
    assert_eq!(
        f.store.run(run).await.unwrap().unwrap().state,
        RunState::Waiting
    );
    let second = f
        .engine
        .decide(a.id, &who("bob"), true, None)
        .await
        .unwrap();
    assert!(second.decided);
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );
    let out = f.store.nodes(run).await.unwrap()[0].output.clone().unwrap();
    assert_eq!(out["by"], json!(["alice", "bob"]));
}

#[tokio::test]
async fn a_timeout_rejects_by_default() {
    let f = Fixture::new().await;
    let mut events = f.engine.subscribe();
    let p = pipeline("ship", &gate("    timeout: 300ms\n"));
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("on_timeout: reject"),
        "{:?}",
        record.error
    );
    next_event(&mut events, 20, |e| {
        matches!(e, Event::ApprovalExpired { run: r, outcome, .. } if r == &run && outcome == "reject")
    })
    .await;
    let a = &f.store.approvals(false, 10).await.unwrap()[0];
    assert_eq!(a.state, "expired");
    assert_eq!(a.decision.as_deref(), Some("rejected"));
    let late = f
        .engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap_err();
    assert!(late.to_string().contains("expired at"), "{late}");
}

#[tokio::test]
async fn a_timeout_can_approve() {
    let f = Fixture::new().await;
    let p = pipeline(
        "ship",
        &gate("    timeout: 300ms\n    on_timeout: approve\n"),
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let out = f.store.nodes(run).await.unwrap()[0].output.clone().unwrap();
    assert_eq!(out["decision"], "approved");
    assert_eq!(out["by"], json!([]));
}

#[tokio::test]
async fn a_timeout_can_fail_the_node_and_its_retry_asks_again() {
    let f = Fixture::new().await;
    let p = pipeline(
        "ship",
        &gate("    timeout: 200ms\n    on_timeout: fail\n    retry: { attempts: 2 }\n"),
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out"),
        "{:?}",
        record.error
    );
    let all = f.store.approvals(false, 10).await.unwrap();
    assert_eq!(all.len(), 2, "one request per attempt: {all:#?}");
    assert!(
        all.iter()
            .all(|a| a.state == "expired" && a.decision.is_none())
    );
    let nodes = f.store.nodes(run).await.unwrap();
    assert_eq!(nodes[0].attempts, 2);
}

#[tokio::test]
async fn a_restart_keeps_the_approval_and_its_deadline() {
    let mut f = Fixture::new().await;
    let p = pipeline("ship", &gate("    timeout: 1h\n"));
    let run = f.submit(&p, json!({})).await;
    let before = pending(&f, run).await;
    assert!(before.deadline.is_some());
    f.restart().await;
    let after = pending(&f, run).await;
    assert_eq!(after.id, before.id);
    assert_eq!(after.deadline, before.deadline);
    let run_rec = f.store.run(run).await.unwrap().unwrap();
    assert_eq!(
        run_rec.wake_at, before.deadline,
        "the deadline wakes the run"
    );
    f.engine
        .decide(after.id, &who("alice"), true, None)
        .await
        .unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );
}

#[tokio::test]
async fn cancelling_the_run_cancels_its_approval() {
    let f = Fixture::new().await;
    let p = pipeline("ship", &gate(""));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    f.engine.cancel(run).await.unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Cancelled
    );
    let a = f.store.approval(a.id).await.unwrap().unwrap();
    assert_eq!(a.state, "cancelled");
    let err = f
        .engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    let nodes = f.store.nodes(run).await.unwrap();
    assert_eq!(nodes[0].state, NodeState::Cancelled);
}

/// Every approval raced by an approve, a reject and its own expiry ends with
/// exactly one decision and a run outcome that matches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_and_expiry_decide_each_approval_exactly_once() {
    let count: usize = std::env::var("SLUICE_APPROVAL_RACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let f = Arc::new(Fixture::with_workers(16).await);
    let mut events = f.engine.subscribe();
    // Deadlines 300 ms after each request; decisions land 0–600 ms after it, so
    // about half are decided, half expire, and many meet at the deadline.
    let p = pipeline("race", &gate("    timeout: 300ms\n"));
    let submitter = {
        let f = Arc::clone(&f);
        tokio::spawn(async move {
            for _ in 0..count {
                f.submit(&p, json!({})).await;
            }
        })
    };
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut deciders = tokio::task::JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    let race = |approval: i64| {
        let f = Arc::clone(&f);
        let outcomes = Arc::clone(&outcomes);
        let delay = Duration::from_millis(fastrand::u64(0..600));
        async move {
            tokio::time::sleep(delay).await;
            let (alice, bob) = (who("alice"), who("bob"));
            let (yes, no) = tokio::join!(
                f.engine.decide(approval, &alice, true, None),
                f.engine.decide(approval, &bob, false, Some("no".into())),
            );
            outcomes
                .lock()
                .unwrap()
                .push((approval, yes.is_ok(), no.is_ok()));
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while seen.len() < count {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("every approval is requested in time");
        match e {
            Ok(Event::ApprovalRequested { approval, .. }) => {
                if seen.insert(approval) {
                    deciders.spawn(race(approval));
                }
            }
            Ok(_) => {}
            // Fell behind the bus: pick up the requests from the store instead.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                for a in f.store.approvals(false, 1_000_000).await.unwrap() {
                    if seen.insert(a.id) {
                        deciders.spawn(race(a.id));
                    }
                }
            }
            Err(e) => panic!("event bus: {e}"),
        }
    }
    submitter.await.unwrap();
    while deciders.join_next().await.is_some() {}
    eventually(600, "every run to finish", || async {
        let (q, r, w) = f.store.state_counts().await.unwrap();
        (q + r + w == 0).then_some(())
    })
    .await;

    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), count);
    let all = f.store.approvals(false, 1_000_000).await.unwrap();
    assert_eq!(all.len(), count, "one approval per run");
    let by_id: std::collections::HashMap<i64, &ApprovalRecord> =
        all.iter().map(|a| (a.id, a)).collect();
    let (mut approved, mut rejected, mut expired) = (0, 0, 0);
    for (id, yes, no) in outcomes {
        let a = by_id[&id];
        let record = f.store.run(a.run).await.unwrap().unwrap();
        match a.state.as_str() {
            "approved" => {
                approved += 1;
                assert!(yes && !no, "#{id}: approved, so only the approve won");
                assert_eq!(a.decided_by.as_deref(), Some("alice"));
                assert_eq!(record.state, RunState::Succeeded, "#{id}");
            }
            "rejected" => {
                rejected += 1;
                assert!(no && !yes, "#{id}: rejected, so only the reject won");
                assert_eq!(a.decided_by.as_deref(), Some("bob"));
                assert_eq!(record.state, RunState::Failed, "#{id}");
            }
            "expired" => {
                expired += 1;
                assert!(!yes && !no, "#{id}: expired, so no decision won");
                assert_eq!(record.state, RunState::Failed, "#{id}");
            }
            other => panic!("approval #{id} ended {other}"),
        }
    }
    eprintln!("{approved} approved, {rejected} rejected, {expired} expired");
    assert!(
        approved + rejected > 0 && expired > 0,
        "the race covered both sides"
    );
}

/// A webhook receiver on 127.0.0.1 that hands every body to the test.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next_body(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a notification in time")
        .expect("receiver open")
}

#[tokio::test]
async fn requests_reminders_and_expiry_are_announced() {
    let f = Fixture::new().await;
    let (url, mut bodies) = receiver().await;
    let p = pipeline(
        "ship",
        &gate(&format!(
            "    timeout: 3500ms\n    remind_every: 1s\n    notify: {{ webhook: \"{url}\" }}\n"
        )),
    );
    let run = f.submit(&p, json!({ "what": "v3" })).await;
    let first = next_body(&mut bodies).await;
    assert_eq!(first["event"], "requested", "{first:#}");
    assert_eq!(first["run"], run.0);
    assert_eq!(first["pipeline"], "ship");
    assert!(
        first["text"].as_str().unwrap().starts_with("Ship v3?"),
        "{first:#}"
    );
    let id = first["approval"].as_i64().unwrap();
    let mut reminders = 0;
    loop {
        let b = next_body(&mut bodies).await;
        assert_eq!(b["approval"], id);
        match b["event"].as_str().unwrap() {
            "reminder" => reminders += 1,
            "expired" => break,
            other => panic!("unexpected notification {other}: {b:#}"),
        }
    }
    // At 1 s, 2 s and 3 s; a loaded machine may wake too late for the last one.
    assert!((2..=3).contains(&reminders), "{reminders} reminders");
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Failed
    );
}

#[tokio::test]
async fn a_failed_notification_never_blocks_the_approval() {
    let f = Fixture::new().await;
    // A port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = pipeline(
        "ship",
        &gate(&format!(
            "    notify: {{ webhook: \"http://127.0.0.1:{port}/hook\" }}\n"
        )),
    );
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    eventually(20, "the failed delivery to be logged", || async {
        let logs = f.store.logs(run, Some("gate")).await.unwrap();
        logs.iter()
            .any(|l| l.stream == "sluice" && l.line.starts_with("notify webhook"))
            .then_some(())
    })
    .await;
    f.engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );
}

#[tokio::test]
async fn an_approver_may_still_reject_after_approving() {
    let f = Fixture::new().await;
    let p = pipeline("ship", &gate("    min_approvals: 2\n"));
    let run = f.submit(&p, json!({})).await;
    let a = pending(&f, run).await;
    f.engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap();
    let no = f
        .engine
        .decide(a.id, &who("alice"), false, Some("found a bug".into()))
        .await
        .unwrap();
    assert!(no.decided);
    assert_eq!(no.approval.state, "rejected");
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Failed
    );
    let out = f.store.nodes(run).await.unwrap()[0].output.clone().unwrap();
    assert_eq!(
        out["by"],
        json!(["alice"]),
        "the rejecter, not the earlier votes"
    );
}

#[tokio::test]
async fn an_approval_opens_while_the_active_node_cap_is_full() {
    let f = Fixture::new().await;
    let p = pipeline(
        "ship",
        "max_active_nodes: 1\nnodes:\n  - id: slow\n    kind: shell\n    run: sleep 30\n  - id: gate\n    kind: approval\n",
    );
    let run = f.submit(&p, json!({})).await;
    // The approval is written by its own step; the node's start commits with
    // the driver's next flush: wait for both.
    let a = eventually(20, "the approval beside the running node", || async {
        let nodes = f.store.nodes(run).await.unwrap();
        if nodes[0].state != NodeState::Running {
            return None;
        }
        f.store
            .approvals(true, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.run == run)
    })
    .await;
    f.engine
        .decide(a.id, &who("alice"), true, None)
        .await
        .unwrap();
    eventually(20, "the gate to pass while the other node runs", || async {
        let nodes = f.store.nodes(run).await.unwrap();
        (nodes[1].state == NodeState::Succeeded).then_some(())
    })
    .await;
    f.engine.cancel(run).await.unwrap();
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Cancelled
    );
}

/// A crash after the request was recorded but before the node was marked
/// waiting: the next driver keeps the recorded request and its deadline.
#[tokio::test]
async fn a_request_recorded_before_a_crash_keeps_its_deadline() {
    use sluice_daemon::store::approvals::NewApproval;
    let f = Fixture::new().await;
    let mut events = f.engine.subscribe();
    let p = pipeline("ship", &gate("    timeout: 1h\n"));
    let run = sluice_daemon::engine::enqueue(
        &f.store,
        &p,
        None,
        &serde_json::Map::new(),
        sluice_shared::run::TriggerInfo::manual(Some("tester".into())),
    )
    .await
    .unwrap();
    let long_ago = jiff::Timestamp::now().as_millisecond() - 2 * 3_600_000;
    let id = f
        .store
        .open_approval(NewApproval {
            run,
            node: "gate".into(),
            attempt: 1,
            pipeline: "ship".into(),
            message: Some("Ship v1?".into()),
            approvers: Vec::new(),
            min_approvals: 1,
            requested_by: Some("tester".into()),
            allow_self: false,
            on_timeout: "reject".into(),
            remind_every: None,
            requested_at: long_ago,
            deadline: Some(long_ago + 3_600_000),
        })
        .await
        .unwrap();
    f.engine.start_committed(run, "ship").unwrap();
    let record = common::finished(&f.engine, run).await;
    assert_eq!(
        record.state,
        RunState::Failed,
        "the recorded deadline passed an hour ago"
    );
    let a = f.store.approval(id).await.unwrap().unwrap();
    assert_eq!(a.state, "expired");
    assert_eq!(f.store.approvals(false, 10).await.unwrap().len(), 1);
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::ApprovalRequested { .. }),
            "no second request is announced: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_waiting_approval_holds_no_concurrency_slot() {
    let f = Fixture::new().await;
    let p = pipeline(
        "ship",
        &format!(
            "concurrency: {{ max_runs: 1, on_overlap: queue }}\n{}",
            gate("")
        ),
    );
    let first = f.submit(&p, json!({})).await;
    let a1 = pending(&f, first).await;
    // The first run waits on a person; the second is not queued behind it.
    let second = f.submit(&p, json!({})).await;
    let a2 = pending(&f, second).await;
    for a in [a1, a2] {
        f.engine
            .decide(a.id, &who("alice"), true, None)
            .await
            .unwrap();
    }
    for run in [first, second] {
        assert_eq!(
            common::finished(&f.engine, run).await.state,
            RunState::Succeeded
        );
    }
}
