//! The store's guarantees, proved on both backends with the same code: a
//! temp SQLite file, and a fresh PostgreSQL database per test (skipped with a
//! notice when PostgreSQL is not reachable, a failure with `CI=true`).

use serde_json::json;
use sluice_daemon::store::approvals::{NewApproval, Vote};
use sluice_daemon::store::audit::NewAudit;
use sluice_daemon::store::audit::RunFilter;
use sluice_daemon::store::testdb::TestDatabase;
use sluice_daemon::store::triggers::{Misfire, ScheduleProgress};
use sluice_daemon::store::usage::{Charged, DailyCharge};
use sluice_daemon::store::{
    Change, Durability, NewNode, NewRun, NodeChange, RunChange, Store, StoreError, StoreOptions,
    VersionId,
};
use sluice_shared::Pipeline;
use sluice_shared::run::{LogLine, NodeState, RunId, RunState, TriggerInfo};

/// A store on one backend, with what keeps it alive.
struct Backend {
    name: &'static str,
    store: Store,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

/// SQLite always; PostgreSQL when it answers.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db"), Durability::Full)
        .await
        .expect("sqlite store");
    let mut all = vec![Backend {
        name: "sqlite",
        store,
        _dir: Some(dir),
        _db: None,
    }];
    if let Some(db) = TestDatabase::create().await {
        let store = Store::connect(&StoreOptions::postgres(db.url()))
            .await
            .expect("postgres store");
        all.push(Backend {
            name: "postgres",
            store,
            _dir: None,
            _db: Some(db),
        });
    }
    all
}

fn pipeline(name: &str, run: &str) -> Pipeline {
    let src = format!(
        "nodes:\n  - id: a\n    kind: shell\n    run: {run}\n  - id: b\n    kind: transform\n    needs: [a]\n    output: {{ ok: true }}\n"
    );
    let f = sluice_shared::load_source(
        std::path::Path::new(&format!("{name}.yaml")),
        &src,
        &Default::default(),
    );
    f.pipeline.expect("valid")
}

fn new_run(version: VersionId, user: &str, inputs: serde_json::Value) -> NewRun {
    NewRun {
        done: None,
        pipeline: "p".into(),
        version_id: version,
        trigger: TriggerInfo::manual(Some(user.into())),
        inputs,
        retry_of: None,
        deadline: None,
        nodes: vec![
            NewNode {
                id: "a".into(),
                reused: None,
            },
            NewNode {
                id: "b".into(),
                reused: Some((RunId(1), json!({"from": "before"}))),
            },
        ],
    }
}

/// Values an attacker controls: quotes, SQL, newlines, NUL, huge, non-ASCII.
fn hostile() -> serde_json::Value {
    json!({
        "quote": "it's \"quoted\" `ticked` $(whoami) ; DROP TABLE runs; --",
        "lines": "a\nb\r\nc\u{2028}",
        "nul": "before\u{0}after",
        "unicode": "żółć 日本 🦀 \u{202e}rtl",
        "huge": "x".repeat(1 << 20),
        "nested": {"deep": [[[[["x"]]]]], "n": 1.5e300, "neg": -9_007_199_254_740_993_i64},
    })
}

#[tokio::test]
async fn versions_runs_nodes_attempts_and_logs_round_trip_hostile_values() {
    for b in backends().await {
        let s = &b.store;
        let v1 = s
            .save_version(&pipeline("p", "echo 1"), None)
            .await
            .unwrap();
        assert_eq!(
            s.save_version(&pipeline("p", "echo 1"), None)
                .await
                .unwrap(),
            v1,
            "{}: same content, same version",
            b.name
        );
        let v2 = s
            .save_version(&pipeline("p", "echo 2"), None)
            .await
            .unwrap();
        assert_ne!(v1, v2);
        assert_eq!(s.version(v2).await.unwrap().1, 2, "{}", b.name);
        assert_eq!(s.latest_version_number("p").await.unwrap(), Some(2));

        let user = "o'brien\"; --";
        let run = s.create_run(new_run(v1, user, hostile())).await.unwrap();
        let r = s.run(run).await.unwrap().expect("stored");
        assert_eq!(r.inputs, hostile(), "{}: inputs lossless", b.name);
        assert_eq!(r.user.as_deref(), Some(user), "{}", b.name);
        assert_eq!(r.state, RunState::Queued);
        let nodes = s.nodes(run).await.unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].state, NodeState::Succeeded, "{}: reused", b.name);
        assert_eq!(nodes[1].output, Some(json!({"from": "before"})));

        s.apply(vec![
            Change::Run(
                run,
                RunChange {
                    state: Some(RunState::Running),
                    started_at: Some(5),
                    ..Default::default()
                },
            ),
            Change::AttemptStart(run, "a".into(), 1),
            Change::AttemptProcess(run, "a".into(), 1, 4242, 77),
            Change::Node(
                run,
                "a".into(),
                NodeChange {
                    state: Some(NodeState::Failed),
                    attempts: Some(1),
                    output: Some(Some(hostile())),
                    error: Some(Some("bad\u{0}byte and 'quotes'".into())),
                    ..Default::default()
                },
            ),
            Change::AttemptEnd(
                run,
                "a".into(),
                1,
                sluice_shared::run::AttemptState::Failed,
                Some("exit 1\u{0}".into()),
            ),
        ])
        .await
        .unwrap();
        let lines: Vec<LogLine> = (1..=300)
            .map(|seq| LogLine {
                run,
                node: "a".into(),
                attempt: 1,
                seq,
                at_ms: i64::from(seq),
                stream: "stdout".into(),
                line: format!("line {seq} '\"\\ \u{0} 🦀"),
            })
            .collect();
        s.append_logs(lines.clone()).await.unwrap();
        // A redelivered line (same attempt and seq) is kept once.
        s.append_logs(lines[..10].to_vec()).await.unwrap();
        s.flush().await.unwrap();

        let nodes = s.nodes(run).await.unwrap();
        assert_eq!(
            nodes[0].output,
            Some(hostile()),
            "{}: output lossless",
            b.name
        );
        let error = nodes[0].error.clone().unwrap_or_default();
        assert!(
            error.starts_with("bad") && error.ends_with("byte and 'quotes'"),
            "{}: {error:?}",
            b.name
        );
        let attempts = s.attempts(run).await.unwrap();
        assert_eq!(attempts[0].pgid, Some(4242), "{}", b.name);
        assert_eq!(attempts[0].pstart, Some(77));
        let logs = s.logs(run, Some("a")).await.unwrap();
        assert_eq!(logs.len(), 300, "{}: no duplicates", b.name);
        assert!(logs[0].line.starts_with("line 1 '\"\\ "), "{}", b.name);
        let page = s.logs_after(run, None, Some(1), 0, 50).await.unwrap();
        assert_eq!(page.len(), 50);
        let after = s
            .logs_after(run, Some("a"), None, page[49].0, 1000)
            .await
            .unwrap();
        assert_eq!(after.len(), 250, "{}", b.name);
        assert_eq!(s.unfinished_runs().await.unwrap().len(), 1);
        assert_eq!(s.state_counts().await.unwrap(), (0, 1, 0), "{}", b.name);
    }
}

#[tokio::test]
async fn a_failing_write_fails_alone_and_missing_rows_are_not_found() {
    for b in backends().await {
        let s = &b.store;
        let v = s.save_version(&pipeline("p", "echo"), None).await.unwrap();
        let bad = s.apply(vec![Change::Node(
            RunId(999_999),
            "a".into(),
            NodeChange {
                state: Some(NodeState::Running),
                ..Default::default()
            },
        )]);
        let good = s.create_run(new_run(v, "u", json!({})));
        let (bad, good) = tokio::join!(bad, good);
        assert!(
            matches!(bad, Err(StoreError::NotFound(_))),
            "{}: {bad:?}",
            b.name
        );
        let good = good.expect("the neighbour commits");
        assert!(s.run(good).await.unwrap().is_some(), "{}", b.name);
        assert!(s.run(RunId(424_242)).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn concurrent_redeliveries_of_one_key_make_one_run() {
    for b in backends().await {
        let s = &b.store;
        let v = s.save_version(&pipeline("p", "echo"), None).await.unwrap();
        let tries =
            (0..64).map(|_| s.create_run_once(new_run(v, "u", json!({})), "delivery-1", 60_000));
        let results = futures_util::future::join_all(tries).await;
        let ids: std::collections::BTreeSet<RunId> = results
            .iter()
            .map(|r| r.as_ref().expect("created").0)
            .collect();
        assert_eq!(ids.len(), 1, "{}: one run for one key", b.name);
        assert_eq!(
            results
                .iter()
                .filter(|r| r.as_ref().is_ok_and(|x| x.1))
                .count(),
            1,
            "{}: exactly one creation",
            b.name
        );
        assert_eq!(
            s.run_for_key("p", "delivery-1").await.unwrap(),
            ids.first().copied()
        );
        assert_eq!(
            s.prune_trigger_keys(i64::MAX).await.unwrap(),
            1,
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn a_daily_cap_is_never_overshot_by_a_burst() {
    for b in backends().await {
        let s = &b.store;
        let v = s.save_version(&pipeline("p", "echo"), None).await.unwrap();
        let charge = DailyCharge {
            user: "alice".into(),
            day: "2026-12-03".into(),
            cap: 5,
        };
        let tries = (0..40).map(|i| {
            let key = format!("k{}", i % 20);
            let charge = charge.clone();
            async move {
                s.create_run_charged(
                    new_run(v, "alice", json!({})),
                    Some((&key, 60_000)),
                    &charge,
                )
                .await
            }
        });
        let results = futures_util::future::join_all(tries).await;
        let created = results
            .iter()
            .filter(|r| matches!(r, Ok(Charged::Created(_))))
            .count();
        assert_eq!(created, 5, "{}: {results:?}", b.name);
        assert!(
            results.iter().all(|r| matches!(
                r,
                Ok(Charged::Created(_) | Charged::Existing(_) | Charged::OverCap(5))
            )),
            "{}: {results:?}",
            b.name
        );
        assert_eq!(
            s.usage("alice", "2026-12-03").await.unwrap().runs,
            5,
            "{}",
            b.name
        );
        assert_eq!(s.usage_since("2026-12-01").await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn approvals_count_distinct_votes_and_the_first_decision_wins() {
    for b in backends().await {
        let s = &b.store;
        let v = s.save_version(&pipeline("p", "echo"), None).await.unwrap();
        let run = s.create_run(new_run(v, "u", json!({}))).await.unwrap();
        let ask = NewApproval {
            run,
            node: "a".into(),
            attempt: 1,
            pipeline: "p".into(),
            message: Some("ship it? 'yes' \"no\"".into()),
            approvers: vec!["alice".into(), "bob".into()],
            min_approvals: 2,
            requested_by: Some("carol".into()),
            allow_self: false,
            on_timeout: "reject".into(),
            remind_every: None,
            requested_at: 1,
            deadline: Some(1_000),
        };
        let id = s.open_approval(ask.clone()).await.unwrap();
        assert_eq!(
            s.open_approval(ask).await.unwrap(),
            id,
            "{}: repeat returns the same",
            b.name
        );
        let vote = |user: &str, approve: bool, at: i64| Vote {
            id,
            user: user.into(),
            approve,
            reason: Some(format!("{user} says 'ok'\u{0}")),
            at,
        };
        assert_eq!(
            s.vote(vote("alice", true, 10)).await.unwrap().as_deref(),
            Some("pending"),
            "{}",
            b.name
        );
        assert_eq!(
            s.vote(vote("alice", true, 11)).await.unwrap(),
            None,
            "{}: one vote per user",
            b.name
        );
        // A vote and a rejection at once: exactly one decides.
        let (yes, no) = tokio::join!(
            s.vote(vote("bob", true, 12)),
            s.vote(vote("dave", false, 12))
        );
        let decided: Vec<_> = [yes.unwrap(), no.unwrap()].into_iter().flatten().collect();
        assert_eq!(decided.len(), 1, "{}: {decided:?}", b.name);
        let a = s.approval(id).await.unwrap().expect("stored");
        assert!(a.state == "approved" || a.state == "rejected", "{}", b.name);
        assert!(
            !s.expire_approval(id, Some("rejected"), 5_000)
                .await
                .unwrap(),
            "{}: decided first",
            b.name
        );
        assert_eq!(s.pending_approvals().await.unwrap(), 0);
        let (info, timeout) = s
            .approval_of(run, "a", 1)
            .await
            .unwrap()
            .expect("by attempt");
        assert_eq!(info.id, id);
        assert_eq!(timeout.on_timeout, "reject");
        assert_eq!(s.approvals(false, 10).await.unwrap().len(), 1, "{}", b.name);
    }
}

#[tokio::test]
async fn audit_schedules_tokens_refusals_and_llm_usage_read_back() {
    for b in backends().await {
        let s = &b.store;
        let first = s
            .append_audit(NewAudit {
                at: 1,
                user: "root".into(),
                action: "pipeline.disable".into(),
                target: Some("p".into()),
                detail: r#"{"why":"it's \"late\""}"#.into(),
                prev_hash: "0".into(),
                hash: "h1".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            s.last_audit().await.unwrap(),
            Some((first, "h1".into())),
            "{}",
            b.name
        );
        assert_eq!(s.audit_hash(first).await.unwrap().as_deref(), Some("h1"));
        assert_eq!(
            s.audit_page(None, 10).await.unwrap()[0].detail["why"],
            "it's \"late\""
        );

        s.schedule_progress(
            "p",
            "*/5 * * * *",
            ScheduleProgress {
                handled_until: 100,
                fired: Some((90, RunId(3))),
                misfires: vec![Misfire {
                    pipeline: "p".into(),
                    schedule: "*/5 * * * *".into(),
                    due_first: 10,
                    due_last: 20,
                    missed: 2,
                    reason: "downtime".into(),
                    action: "skipped".into(),
                    run: None,
                }],
            },
        )
        .await
        .unwrap();
        // Progress never moves back.
        s.schedule_progress(
            "p",
            "*/5 * * * *",
            ScheduleProgress {
                handled_until: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        s.set_schedule_paused("p", "*/5 * * * *", Some(true), Some("bob"))
            .await
            .unwrap();
        let rows = s.schedule_rows().await.unwrap();
        assert_eq!(rows[0].handled_until, Some(100), "{}", b.name);
        assert_eq!(rows[0].last_run, Some(RunId(3)));
        assert_eq!(rows[0].paused, Some(true));
        assert_eq!(
            s.misfires(Some("p"), 10).await.unwrap().len(),
            1,
            "{}",
            b.name
        );

        let token = s
            .create_token("alice", Some("p"), "hash1", "sk_ab", "root")
            .await
            .unwrap();
        assert_eq!(
            s.token_by_hash("hash1").await.unwrap().map(|t| t.user),
            Some("alice".into())
        );
        assert!(s.revoke_token(token).await.unwrap(), "{}", b.name);
        assert!(!s.revoke_token(token).await.unwrap(), "{}: once", b.name);
        assert!(s.token_by_hash("hash1").await.unwrap().is_none());

        s.record_refusals(vec![
            ("alice".into(), "rate".into(), 7, "p".into(), 3),
            ("alice".into(), "rate".into(), 7, "p".into(), 4),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.refusals_since(0).await.unwrap(),
            vec![("alice".into(), "rate".into(), 7)],
            "{}",
            b.name
        );

        let charge = |tokens_in: u64| sluice_daemon::store::llm_usage::LlmCharge {
            user: "alice".into(),
            day: "2026-12-03".into(),
            pipeline: "p".into(),
            tokens_in,
            tokens_out: 1,
            estimated: false,
        };
        s.add_llm_usage(charge(10)).await.unwrap();
        s.add_llm_usage(charge(u64::MAX)).await.unwrap();
        let rows = s.llm_usage_since("2026-12-01").await.unwrap();
        assert_eq!(rows[0].requests, 2, "{}", b.name);
        assert_eq!(
            rows[0].tokens_in,
            10 + sluice_daemon::store::llm_usage::MAX_CHARGED as i64,
            "{}: bounded",
            b.name
        );

        s.set_pipeline_enabled("p", false, Some("bob"))
            .await
            .unwrap();
        assert!(
            s.disabled_pipelines().await.unwrap().contains("p"),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn pages_filters_and_retention() {
    for b in backends().await {
        let s = &b.store;
        let v = s.save_version(&pipeline("p", "echo"), None).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..30 {
            let user = if i % 2 == 0 { "even" } else { "odd" };
            ids.push(
                s.create_run(new_run(v, user, json!({"i": i})))
                    .await
                    .unwrap(),
            );
        }
        let finished: Vec<Change> = ids[..20]
            .iter()
            .map(|&id| {
                Change::Run(
                    id,
                    RunChange {
                        state: Some(RunState::Succeeded),
                        finished_at: Some(10),
                        ..Default::default()
                    },
                )
            })
            .collect();
        s.apply(finished).await.unwrap();
        let page = s
            .runs_page(&RunFilter {
                user: Some("even".into()),
                states: vec!["succeeded".into()],
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 10, "{}", b.name);
        assert!(page.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        assert_eq!(s.runs(Some("p"), 5).await.unwrap().len(), 5);
        // Retention: keep the newest 25 of the pipeline; only finished runs go.
        let mut pruned = 0;
        loop {
            let n = s.prune(0, 25).await.unwrap();
            if n == 0 {
                break;
            }
            pruned += n;
        }
        assert_eq!(pruned, 5, "{}", b.name);
        assert!(s.run(ids[0]).await.unwrap().is_none());
        assert!(
            s.nodes(ids[0]).await.unwrap().is_empty(),
            "{}: cascade",
            b.name
        );
        assert_eq!(s.prune(11, 1_000).await.unwrap(), 15, "{}: by age", b.name);
        assert_eq!(s.unfinished_runs().await.unwrap().len(), 10);
    }
}

#[tokio::test]
async fn writes_of_one_run_apply_in_the_order_they_were_queued() {
    for b in backends().await {
        let s = &b.store;
        let v = s.save_version(&pipeline("p", "echo"), None).await.unwrap();
        let run = s.create_run(new_run(v, "u", json!({}))).await.unwrap();
        // Each write is polled once, in order, so it is queued before the
        // next; they then commit in several batches. The last queued must
        // be the one that stays.
        let mut writes: Vec<_> = (1..=200u32)
            .map(|attempt| {
                // MaybeDone: a write may already be committed by its first poll.
                Box::pin(futures_util::future::maybe_done(s.apply(vec![
                    Change::Node(
                        run,
                        "a".into(),
                        NodeChange {
                            attempts: Some(attempt),
                            ..Default::default()
                        },
                    ),
                ])))
            })
            .collect();
        for w in &mut writes {
            let _ = futures_util::poll!(w.as_mut());
        }
        for mut w in writes {
            w.as_mut().await;
            w.as_mut().take_output().expect("done").unwrap();
        }
        assert_eq!(s.nodes(run).await.unwrap()[0].attempts, 200, "{}", b.name);
    }
}

#[tokio::test]
async fn killed_postgres_connections_delay_writes_but_lose_and_duplicate_none() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store = Store::connect(&StoreOptions::postgres(db.url()))
        .await
        .expect("postgres store");
    let v = store
        .save_version(&pipeline("p", "echo"), None)
        .await
        .unwrap();
    let url = db.url().to_owned();
    let name = db.name().to_owned();
    // Cut every connection of the store's database, as a server restart or a
    // failover would, a few times while deliveries come in.
    let killer = tokio::spawn(async move {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("admin connection");
        let mut killed = 0u64;
        for _ in 0..5 {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("terminate");
            killed += u64::try_from(n).unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        killed
    });
    // Each delivery is retried until acknowledged, as a webhook sender does.
    let deliveries = (0..200).map(|i| {
        let store = store.clone();
        async move {
            let key = format!("delivery-{i}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match store
                    .create_run_once(new_run(v, "u", json!({"i": i})), &key, 600_000)
                    .await
                {
                    Ok((run, _)) => return (key, run),
                    Err(e) => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "{key} never acknowledged: {e}"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
        }
    });
    let acknowledged = futures_util::future::join_all(deliveries).await;
    let killed = killer.await.expect("killer");
    assert!(killed > 0, "no connection was cut: the test proved nothing");
    let mut runs = std::collections::BTreeSet::new();
    for (key, run) in &acknowledged {
        assert!(
            runs.insert(*run),
            "{key} shares run {run} with another delivery"
        );
        assert_eq!(
            store.run_for_key("p", key).await.unwrap(),
            Some(*run),
            "{key}"
        );
    }
    let stored = store.runs(Some("p"), 1_000).await.unwrap();
    assert_eq!(
        stored.len(),
        200,
        "one run per acknowledged delivery, none extra"
    );
}
