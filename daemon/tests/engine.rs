//! The engine on real pipelines: a temp SQLite store, real shell processes.

mod common;

use std::collections::BTreeMap;

use common::{Fixture, alive, eventually, next_event, pipeline};
use serde_json::json;
use sluice_shared::event::Event;
use sluice_shared::run::{AttemptState, NodeState, Resolution, RetryMode, RunState};

fn sq(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn parallel_branches_really_overlap() {
    let f = Fixture::new().await;
    let dir = sq(f.dir.path());
    // Each branch marks its start, then waits (bounded) for the other's mark: only
    // concurrent execution lets both finish.
    let wait_for = |me: &str, other: &str| {
        format!(
            "touch {dir}/{me}; for i in $(seq 1 200); do [ -e {dir}/{other} ] && exit 0; sleep 0.05; done; exit 1"
        )
    };
    let p = pipeline(
        "par",
        &format!(
            "nodes:\n  - id: a\n    kind: shell\n    run: \"{}\"\n  - id: b\n    kind: shell\n    run: \"{}\"\n  - id: join\n    kind: transform\n    needs: [a, b]\n    output: {{ ok: true }}\n",
            wait_for("a", "b"),
            wait_for("b", "a")
        ),
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let nodes = f.store.nodes(run).await.unwrap();
    assert!(nodes.iter().all(|n| n.state == NodeState::Succeeded));
}

#[tokio::test]
async fn retries_back_off_and_stop() {
    let f = Fixture::new().await;
    let p = pipeline(
        "retry",
        "nodes:\n  - id: flaky\n    kind: shell\n    run: echo trying; exit 3\n    retry: { attempts: 3, backoff: 200ms, max_backoff: 1s, jitter: false }\n",
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("node 'flaky' failed"),
        "{:?}",
        record.error
    );
    let attempts = f.store.attempts(run).await.unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert!(attempts.iter().all(|a| a.state == AttemptState::Failed));
    let gaps: Vec<i64> = attempts
        .windows(2)
        .map(|w| w[1].started_at - w[0].finished_at.unwrap_or(0))
        .collect();
    assert!(
        gaps[0] >= 200 && gaps[1] >= 400,
        "backoff doubles: {gaps:?}"
    );
    let logs = f.store.logs(run, Some("flaky")).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.stream == "sluice" && l.line.contains("retrying in")),
        "{logs:#?}"
    );
    assert_eq!(logs.iter().filter(|l| l.line == "trying").count(), 3);
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let f = Fixture::new().await;
    let pidfile = f.path("child.pid");
    let p = pipeline(
        "timeout",
        &format!(
            "nodes:\n  - id: slow\n    kind: shell\n    timeout: 500ms\n    run: \"sleep 1000 & echo $! > {}; wait\"\n",
            sq(&pidfile)
        ),
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    let nodes = f.store.nodes(run).await.unwrap();
    assert!(
        nodes[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("timed out after"),
        "{:?}",
        nodes[0].error
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(10, "the background child to be gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failed_node_skips_its_dependents_and_fails_the_run() {
    let f = Fixture::new().await;
    let p = pipeline(
        "fail",
        "nodes:\n  - id: a\n    kind: shell\n    run: echo before the failure; exit 1\n  - id: b\n    kind: shell\n    needs: [a]\n    run: echo never\n  - id: c\n    kind: transform\n    needs: [b]\n    output: {}\n  - id: other\n    kind: shell\n    run: echo independent\n",
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    let nodes = f.store.nodes(run).await.unwrap();
    let state = |id: &str| nodes.iter().find(|n| n.node_id == id).unwrap().state;
    assert_eq!(state("a"), NodeState::Failed);
    assert_eq!(state("b"), NodeState::Skipped);
    assert_eq!(state("c"), NodeState::Skipped);
    assert_eq!(state("other"), NodeState::Succeeded);
    let logs = f.store.logs(run, Some("a")).await.unwrap();
    assert!(logs.iter().any(|l| l.line == "before the failure"));
}

#[tokio::test]
async fn cancel_stops_a_run_mid_flight() {
    let f = Fixture::new().await;
    let pidfile = f.path("sleeper.pid");
    let p = pipeline(
        "cancel",
        &format!(
            "nodes:\n  - id: long\n    kind: shell\n    run: \"echo $$ > {}; echo started; sleep 1000\"\n  - id: after\n    kind: shell\n    needs: [long]\n    run: echo never\n",
            sq(&pidfile)
        ),
    );
    let mut events = f.engine.subscribe();
    let run = f.submit(&p, json!({})).await;
    next_event(
        &mut events,
        10,
        |e| matches!(e, Event::Log { line, .. } if line == "started"),
    )
    .await;
    f.engine.cancel(run).await.unwrap();
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Cancelled);
    let nodes = f.store.nodes(run).await.unwrap();
    assert_eq!(nodes[0].state, NodeState::Cancelled);
    assert_eq!(nodes[1].state, NodeState::Cancelled);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(10, "the shell to be killed", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(
        f.engine.cancel(run).await.is_err(),
        "a finished run cannot be cancelled"
    );
}

#[tokio::test]
async fn retry_from_failed_reuses_outputs_and_reruns_the_rest() {
    let f = Fixture::new().await;
    let counter = f.path("count");
    let marker = f.path("fixed");
    let p = pipeline(
        "redo",
        &format!(
            "nodes:\n  - id: expensive\n    kind: shell\n    run: \"echo x >> {c}; echo computed\"\n  - id: fragile\n    kind: shell\n    needs: [expensive]\n    run: \"test -e {m} && echo got {{{{ nodes.expensive.output.stdout | trim }}}}\"\n",
            c = sq(&counter),
            m = sq(&marker)
        ),
    );
    let first = f.submit(&p, json!({})).await;
    assert_eq!(
        common::finished(&f.engine, first).await.state,
        RunState::Failed
    );
    std::fs::write(&marker, "").unwrap();
    let second = f
        .engine
        .retry(first, RetryMode::Failed, None)
        .await
        .unwrap();
    let record = common::finished(&f.engine, second).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    assert_eq!(record.retry_of, Some(first));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1,
        "expensive ran once"
    );
    let nodes = f.store.nodes(second).await.unwrap();
    assert_eq!(nodes[0].reused_from, Some(first));
    assert_eq!(
        nodes[1].output.as_ref().unwrap()["stdout"],
        "got computed\n"
    );
    // Retry all runs everything again.
    let third = f.engine.retry(second, RetryMode::All, None).await.unwrap();
    assert_eq!(
        common::finished(&f.engine, third).await.state,
        RunState::Succeeded
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        2
    );
}

#[tokio::test]
async fn templates_pass_outputs_between_nodes() {
    let f = Fixture::new().await;
    let p = pipeline(
        "tmpl",
        "inputs:\n  who: { type: string, default: world }\nnodes:\n  - id: make\n    kind: transform\n    output: { greeting: \"hello {{ inputs.who }}\", n: \"{{ 20 + 1 }}\" }\n  - id: gate\n    kind: filter\n    needs: [make]\n    condition: nodes.make.output.n == 21\n  - id: say\n    kind: shell\n    needs: [gate]\n    run: echo {{ nodes.make.output.greeting }} {{ run.id }}\n",
    );
    let run = f.submit(&p, json!({"who": "sluice; rm -rf /"})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    let nodes = f.store.nodes(run).await.unwrap();
    assert_eq!(
        nodes[2].output.as_ref().unwrap()["stdout"],
        format!("hello sluice; rm -rf / {}\n", run.0)
    );
}

#[tokio::test]
async fn a_false_filter_ends_the_run_successfully_and_skips_downstream() {
    let f = Fixture::new().await;
    let p = pipeline(
        "filt",
        "nodes:\n  - id: check\n    kind: filter\n    condition: 1 > 2\n  - id: after\n    kind: shell\n    needs: [check]\n    run: echo never\n  - id: maybe\n    kind: shell\n    when: \"false\"\n    run: echo never\n",
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded);
    let nodes = f.store.nodes(run).await.unwrap();
    assert_eq!(nodes[0].output.as_ref().unwrap()["passed"], false);
    assert_eq!(nodes[1].state, NodeState::Skipped);
    assert_eq!(nodes[2].state, NodeState::Skipped);
}

#[tokio::test]
async fn secrets_never_reach_the_store() {
    let secret = "s3cr3t-Value-9f8e7d";
    let f = Fixture::with_secrets(BTreeMap::from([(
        "api_token".to_owned(),
        secret.to_owned(),
    )]))
    .await;
    let p = pipeline(
        "sec",
        "nodes:\n  - id: leak\n    kind: shell\n    env: { TOKEN: \"{{ secrets.api_token }}\" }\n    run: echo token=$TOKEN; echo {{ secrets.api_token }} >&2; exit 1\n  - id: shape\n    kind: transform\n    output: { t: \"{{ secrets.api_token }}\" }\n",
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    let logs = f.store.logs(run, None).await.unwrap();
    assert!(logs.iter().any(|l| l.line == "token=***"), "{logs:#?}");
    f.engine.shutdown().await;
    // Every byte stored: the SQLite file and its WAL, or every PostgreSQL row.
    let bytes = f.stored_bytes().await;
    assert!(!bytes.is_empty(), "the store holds the run");
    let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(!found, "the secret is in the store");
}

#[tokio::test]
async fn on_crash_ask_holds_the_node_for_each_resolution() {
    let mut f = Fixture::new().await;
    let dir = sq(f.dir.path());
    // Each run's node blocks until its release file exists, so the crash lands mid-attempt.
    let p = pipeline(
        "pay",
        &format!(
            "inputs:\n  k: {{ type: string }}\nnodes:\n  - id: charge\n    kind: shell\n    on_crash: ask\n    run: \"echo charging {{{{ inputs.k }}}}; while [ ! -e {dir}/release-{{{{ inputs.k }}}} ]; do sleep 0.05; done; echo charged\"\n  - id: receipt\n    kind: transform\n    needs: [charge]\n    output: {{ paid: \"{{{{ nodes.charge.output.stdout }}}}\" }}\n"
        ),
    );
    let mut events = f.engine.subscribe();
    let mut runs = Vec::new();
    for k in ["retry", "succeed", "fail"] {
        let run = f.submit(&p, json!({ "k": k })).await;
        next_event(&mut events, 10, |e| matches!(e, Event::Log { run: r, line, .. } if *r == run && line.starts_with("charging"))).await;
        runs.push(run);
    }
    // Crash: the daemon stops while the three attempts run.
    f.restart().await;
    for &run in &runs {
        let nodes = f.store.nodes(run).await.unwrap();
        assert_eq!(nodes[0].state, NodeState::NeedsDecision, "{nodes:#?}");
        eventually(10, "the run to wait for a decision", || async {
            (f.store.run(run).await.unwrap().unwrap().state == RunState::Waiting).then_some(())
        })
        .await;
        let attempts = f.store.attempts(run).await.unwrap();
        assert_eq!(attempts[0].state, AttemptState::Interrupted);
    }
    for k in ["retry", "succeed", "fail"] {
        std::fs::write(f.path(&format!("release-{k}")), "").unwrap();
    }
    f.engine
        .resolve(runs[0], "charge", Resolution::Retry)
        .await
        .unwrap();
    f.engine
        .resolve(
            runs[1],
            "charge",
            Resolution::Succeed {
                output: json!({"stdout": "settled by hand"}),
            },
        )
        .await
        .unwrap();
    f.engine
        .resolve(
            runs[2],
            "charge",
            Resolution::Fail {
                reason: Some("refunded".into()),
            },
        )
        .await
        .unwrap();

    let r0 = common::finished(&f.engine, runs[0]).await;
    assert_eq!(r0.state, RunState::Succeeded, "{:?}", r0.error);
    let a0: Vec<_> = f
        .store
        .attempts(runs[0])
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.node_id == "charge")
        .collect();
    assert_eq!(a0.len(), 2, "{a0:#?}");
    assert_eq!(a0[1].state, AttemptState::Succeeded);
    let r1 = common::finished(&f.engine, runs[1]).await;
    assert_eq!(r1.state, RunState::Succeeded);
    let n1 = f.store.nodes(runs[1]).await.unwrap();
    assert_eq!(n1[1].output.as_ref().unwrap()["paid"], "settled by hand");
    let r2 = common::finished(&f.engine, runs[2]).await;
    assert_eq!(r2.state, RunState::Failed);
    assert!(r2.error.unwrap_or_default().contains("refunded"));
    // A resolved node cannot be resolved again.
    assert!(
        f.engine
            .resolve(runs[0], "charge", Resolution::Retry)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn delays_wait_without_a_task_and_survive_a_restart() {
    let mut f = Fixture::new().await;
    let p = pipeline(
        "wait",
        "nodes:\n  - id: pause\n    kind: delay\n    for: 1s\n  - id: after\n    kind: transform\n    needs: [pause]\n    output: { done: true }\n",
    );
    let run = f.submit(&p, json!({})).await;
    eventually(10, "the run to wait", || async {
        let r = f.store.run(run).await.unwrap().unwrap();
        (r.state == RunState::Waiting && f.engine.active_runs() == 0).then_some(())
    })
    .await;
    f.restart().await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded);
    let elapsed = record.finished_at.unwrap() - record.started_at.unwrap();
    assert!(elapsed >= 1000, "waited {elapsed} ms");
}

/// A backlog found queued at start is started at most 256 runs at a time (the
/// rest by the backlog drainer as room frees up) and drains completely. Runs
/// written into the store beside a running engine are not picked up: nothing
/// reads the store for new work while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_backlog_starts_in_bounded_batches_after_a_restart() {
    const BACKLOG: usize = 600;
    const BOUND: usize = 256;
    let mut f = Fixture::new().await;
    // One run at a time: the others' drivers wait for the slot, so the bound shows.
    let p = pipeline(
        "one",
        "concurrency: { max_runs: 1, on_overlap: queue }\nnodes:\n  - id: a\n    kind: transform\n    output: { ok: true }\n",
    );
    let writes: Vec<_> = (0..BACKLOG)
        .map(|_| {
            let (store, p) = (f.store.clone(), p.clone());
            tokio::spawn(async move {
                sluice_daemon::engine::enqueue(
                    &store,
                    &p,
                    None,
                    &serde_json::Map::new(),
                    sluice_shared::run::TriggerInfo::manual(Some("tester".into())),
                )
                .await
                .expect("enqueue")
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writes {
        ids.push(w.await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (queued, _, _) = f.store.state_counts().await.unwrap();
    assert_eq!(
        queued as usize, BACKLOG,
        "runs written beside the running engine stay queued"
    );
    assert_eq!(f.engine.active_runs(), 0);

    f.restart().await;
    let mut most = 0;
    let all_done = async {
        loop {
            most = most.max(f.engine.active_runs());
            let (queued, running, waiting) = f.store.state_counts().await.unwrap();
            if queued + running + waiting == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    common::within(120, "the backlog to drain", all_done).await;
    assert!(most <= BOUND, "{most} drivers at once");
    assert!(
        most >= BOUND / 2,
        "the backlog started in batches ({most} at most)"
    );
    for id in ids {
        assert_eq!(
            f.store.run(id).await.unwrap().unwrap().state,
            RunState::Succeeded
        );
    }
}

#[tokio::test]
async fn inputs_are_checked_before_a_run_is_created() {
    let f = Fixture::new().await;
    let p = pipeline(
        "inp",
        "inputs:\n  n: { type: integer }\nnodes:\n  - id: a\n    kind: transform\n    output: { n: \"{{ inputs.n }}\" }\n",
    );
    let inputs = json!({"m": 1});
    let err = f
        .engine
        .submit(
            &p,
            None,
            inputs.as_object().unwrap(),
            sluice_shared::run::TriggerInfo::manual(None),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown input 'm'") && err.contains("did you mean 'n'?"),
        "{err}"
    );
    let err = f
        .engine
        .submit(
            &p,
            None,
            &serde_json::Map::new(),
            sluice_shared::run::TriggerInfo::manual(None),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("required input 'n' is missing"), "{err}");
    assert!(f.store.runs(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn max_active_nodes_bounds_parallelism_within_a_run() {
    let f = Fixture::new().await;
    let dir = sq(f.dir.path());
    // Each node fails if another node of the run is active at the same time.
    let step = |me: &str| {
        format!(
            "mkdir {dir}/active || exit 9; sleep 0.2; echo {me} >> {dir}/order; rmdir {dir}/active"
        )
    };
    let p = pipeline(
        "narrow",
        &format!(
            "max_active_nodes: 1\nnodes:\n  - id: a\n    kind: shell\n    run: \"{}\"\n  - id: b\n    kind: shell\n    run: \"{}\"\n  - id: c\n    kind: shell\n    run: \"{}\"\n",
            step("a"),
            step("b"),
            step("c")
        ),
    );
    let run = f.submit(&p, json!({})).await;
    let record = common::finished(&f.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    assert_eq!(
        std::fs::read_to_string(f.path("order"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[tokio::test]
async fn long_logs_are_capped_with_a_visible_marker() {
    let f = Fixture::new().await;
    let p = pipeline(
        "chatty",
        "nodes:\n  - id: talk\n    kind: shell\n    run: seq 1 10050\n",
    );
    let run = f.submit(&p, json!({})).await;
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );
    f.store.flush().await.unwrap();
    let logs = eventually(10, "the log to be stored", || async {
        let logs = f.store.logs(run, Some("talk")).await.unwrap();
        logs.iter()
            .any(|l| l.line.starts_with("[log truncated"))
            .then_some(logs)
    })
    .await;
    assert_eq!(logs.iter().filter(|l| l.stream == "stdout").count(), 10_000);
    let marker = logs
        .iter()
        .find(|l| l.line.starts_with("[log truncated"))
        .unwrap();
    assert!(marker.line.contains("50 more line(s)"), "{}", marker.line);
}

#[tokio::test]
async fn retention_prunes_old_and_excess_finished_runs_only() {
    use sluice_daemon::config::Retention;
    use sluice_daemon::store::{Change, RunChange};
    let f = Fixture::new().await;
    let p = pipeline(
        "keep",
        "nodes:\n  - id: a\n    kind: transform\n    output: {}\n",
    );
    let mut runs = Vec::new();
    for _ in 0..4 {
        let run = f.submit(&p, json!({})).await;
        common::finished(&f.engine, run).await;
        runs.push(run);
    }
    let waiting = pipeline("long", "nodes:\n  - id: w\n    kind: delay\n    for: 1h\n");
    let unfinished = f.submit(&waiting, json!({})).await;
    // The oldest run finished 40 days ago.
    let old = jiff::Timestamp::now().as_millisecond() - 40 * 24 * 3600 * 1000;
    f.store
        .apply(vec![Change::Run(
            runs[0],
            RunChange {
                finished_at: Some(old),
                ..Default::default()
            },
        )])
        .await
        .unwrap();
    let policy = Retention {
        max_age: "30d".parse().unwrap(),
        max_runs_per_pipeline: 2,
    };
    let deleted = sluice_daemon::retention::prune_once(&f.store, &policy)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "one by age, one by count");
    let left: Vec<_> = f
        .store
        .runs(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![unfinished, runs[3], runs[2]]);
    assert!(
        f.store.nodes(runs[0]).await.unwrap().is_empty(),
        "nodes go with their run"
    );
}

#[tokio::test]
async fn a_cancel_racing_a_run_going_to_sleep_is_never_lost() {
    let f = Fixture::new().await;
    let p = pipeline(
        "nap",
        "nodes:\n  - id: pause\n    kind: delay\n    for: 1h\n",
    );
    for _ in 0..40 {
        let run = f.submit(&p, json!({})).await;
        f.engine.cancel(run).await.unwrap();
        let record = common::finished(&f.engine, run).await;
        assert_eq!(record.state, RunState::Cancelled);
    }
}

#[tokio::test]
async fn a_node_without_a_free_worker_stays_pending_until_one_frees() {
    let f = Fixture::with_workers(1).await;
    let gate = f.path("go");
    let p = pipeline(
        "one",
        &format!(
            "nodes:\n  - id: hold\n    kind: shell\n    run: \"echo holding; while [ ! -e {} ]; do sleep 0.05; done\"\n",
            sq(&gate)
        ),
    );
    let mut events = f.engine.subscribe();
    let first = f.submit(&p, json!({})).await;
    next_event(
        &mut events,
        10,
        |e| matches!(e, Event::Log { run, line, .. } if *run == first && line == "holding"),
    )
    .await;
    let second = f.submit(&p, json!({})).await;
    // The second run's driver is up, but its node is not recorded as started
    // while the only worker is busy (a crash now must not count an attempt).
    eventually(10, "the second run's driver", || async {
        (f.engine.active_runs() == 2).then_some(())
    })
    .await;
    // Admitted (it holds its concurrency slot), but nothing of it has started.
    eventually(10, "the second run to be admitted", || async {
        (f.store.run(second).await.unwrap().unwrap().state == RunState::Running).then_some(())
    })
    .await;
    f.store.flush().await.unwrap();
    let nodes = f.store.nodes(second).await.unwrap();
    assert_eq!(nodes[0].state, NodeState::Pending);
    assert_eq!(nodes[0].attempts, 0);
    std::fs::write(&gate, "").unwrap();
    assert_eq!(
        common::finished(&f.engine, first).await.state,
        RunState::Succeeded
    );
    assert_eq!(
        common::finished(&f.engine, second).await.state,
        RunState::Succeeded
    );
}

/// A run that waits for a worker still does what needs none: a delay that
/// ends and the transform after it complete while the shell node waits.
#[tokio::test]
async fn nodes_that_need_no_worker_go_on_while_the_run_waits_for_one() {
    let f = Fixture::with_workers(1).await;
    let gate = f.path("go");
    let hog = pipeline(
        "hog",
        &format!(
            "nodes:\n  - id: hold\n    kind: shell\n    run: \"echo holding; while [ ! -e {} ]; do sleep 0.05; done\"\n",
            sq(&gate)
        ),
    );
    // `a` comes first in the file, so it is the first ready node to find no worker.
    let mixed = pipeline(
        "mixed",
        "nodes:\n  - id: a\n    kind: shell\n    run: \"true\"\n  - id: d\n    kind: delay\n    for: 300ms\n  - id: t\n    kind: transform\n    needs: [d]\n    output: { ok: true }\n",
    );
    let mut events = f.engine.subscribe();
    let first = f.submit(&hog, json!({})).await;
    next_event(
        &mut events,
        10,
        |e| matches!(e, Event::Log { run, line, .. } if *run == first && line == "holding"),
    )
    .await;
    let second = f.submit(&mixed, json!({})).await;
    let nodes = eventually(
        10,
        "the delay and the transform after it to finish",
        || async {
            f.store.flush().await.ok()?;
            let nodes = f.store.nodes(second).await.ok()?;
            nodes
                .iter()
                .any(|n| n.node_id == "t" && n.state == NodeState::Succeeded)
                .then_some(nodes)
        },
    )
    .await;
    let a = nodes.iter().find(|n| n.node_id == "a").expect("node a");
    assert_eq!(a.state, NodeState::Pending, "the shell node had no worker");
    std::fs::write(&gate, "").unwrap();
    assert_eq!(
        common::finished(&f.engine, second).await.state,
        RunState::Succeeded
    );
}

#[tokio::test]
async fn retrying_the_failed_part_of_a_run_that_succeeded_is_refused() {
    let f = Fixture::new().await;
    let p = pipeline(
        "fine",
        "nodes:\n  - id: a\n    kind: transform\n    output: { ok: true }\n",
    );
    let run = f.submit(&p, json!({})).await;
    assert_eq!(
        common::finished(&f.engine, run).await.state,
        RunState::Succeeded
    );
    let err = f
        .engine
        .retry(run, RetryMode::Failed, None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("nothing failed to retry") && err.to_string().contains("--all"),
        "{err}"
    );
    let again = f.engine.retry(run, RetryMode::All, None).await.unwrap();
    assert_eq!(
        common::finished(&f.engine, again).await.state,
        RunState::Succeeded
    );
}
