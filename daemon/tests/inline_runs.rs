//! Runs of instant nodes (transforms, filters) executed before they are
//! written and stored finished in one write: through the real webhook
//! listener on 127.0.0.1, a real engine and the suite's store. What must hold:
//! the reply comes after the finished run is durable, events and logs carry
//! the committed id, templates reading `run.id` see it, hostile values stay
//! data, and the concurrency caps still hold under a burst.

mod common;
mod triggers_env;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_daemon::triggers::webhook::{WebhookOptions, WebhookState, serve};
use sluice_shared::event::Event;
use sluice_shared::run::{AttemptState, NodeState, RunId, RunState};
use tokio_util::sync::CancellationToken;
use triggers_env::Env;

const SPLIT: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: pick
    kind: transform
    output: { repo: "{{ trigger.body.repository.full_name }}", sha: "{{ trigger.body.after }}", text: "{{ trigger.body.text }}" }
  - id: gate
    kind: filter
    needs: [pick]
    condition: "nodes.pick.output.repo == 'acme/web'"
  - id: after
    kind: transform
    needs: [gate]
    output: { ok: true }
"#;

const WITH_ID: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: a
    kind: transform
    output: { id: "{{ run.id }}", user: "{{ run.user }}" }
"#;

const BROKEN: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: a
    kind: transform
    output: { v: "{{ trigger.body.missing.deeper }}" }
  - id: b
    kind: transform
    needs: [a]
    output: { never: true }
"#;

const FAST: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: a
    kind: transform
    output: { n: "{{ trigger.body.n }}" }
"#;

const SLOW: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: hold
    kind: shell
    run: sleep 1
"#;

struct Hook {
    env: Env,
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(limits: &str) -> Hook {
    let env = Env::with_limits(
        &[
            ("split.yaml", SPLIT),
            ("with-id.yaml", WITH_ID),
            ("broken.yaml", BROKEN),
            ("fast.yaml", FAST),
            ("slow.yaml", SLOW),
        ],
        BTreeMap::new(),
        toml::from_str(limits).expect("limits"),
    )
    .await;
    assert!(
        env.registry.errors().is_empty(),
        "{:#?}",
        env.registry.errors()
    );
    let stop = CancellationToken::new();
    let state = WebhookState::new(
        env.triggers.clone(),
        env.secrets.clone(),
        WebhookOptions::default(),
        stop.clone(),
    );
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state, stop.clone()));
    Hook {
        env,
        base: format!("http://{addr}"),
        client: common::http_client(),
        stop,
    }
}

impl Hook {
    /// Posts `body` to `pipeline`'s hook; the run id of the 202.
    async fn post(&self, pipeline: &str, body: &Value) -> RunId {
        let resp = self
            .client
            .post(format!("{}/hooks/{pipeline}", self.base))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let reply: Value = resp.json().await.expect("json reply");
        assert_eq!(status, 202, "{reply}");
        RunId(reply["run"].as_i64().expect("run id"))
    }

    /// The run once finished, polled until `within` has passed.
    async fn finished(&self, run: RunId, within: Duration) -> sluice_daemon::store::RunRecord {
        let deadline = Instant::now() + within;
        loop {
            let r = self.env.store.run(run).await.unwrap().expect("run exists");
            if r.state.is_finished() {
                return r;
            }
            assert!(Instant::now() < deadline, "run {run} still {:?}", r.state);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_run_is_durable_and_finished_when_accepted_and_announced_with_its_id() {
    let h = start("").await;
    let mut events = h.env.engine.subscribe();
    let run = h
        .post(
            "split",
            &json!({ "repository": { "full_name": "acme/web" }, "after": "abc123", "text": "hi" }),
        )
        .await;
    // No wait: the 202 comes after the finished run's commit.
    let r = h.env.store.run(run).await.unwrap().expect("run exists");
    assert_eq!(r.state, RunState::Succeeded);
    let started = r.started_at.expect("started_at");
    let finished = r.finished_at.expect("finished_at");
    assert!(r.created_at <= started && started <= finished, "{r:?}");
    let nodes = h.env.store.nodes(run).await.unwrap();
    let by_id = |id: &str| nodes.iter().find(|n| n.node_id == id).expect("node");
    assert_eq!(
        by_id("pick").output,
        Some(json!({ "repo": "acme/web", "sha": "abc123", "text": "hi" }))
    );
    for id in ["pick", "gate", "after"] {
        assert_eq!(by_id(id).state, NodeState::Succeeded, "{id}");
        assert_eq!(by_id(id).attempts, 1, "{id}");
    }
    let attempts = h.env.store.attempts(run).await.unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(attempts.iter().all(|a| a.state == AttemptState::Succeeded));
    // Each node's outcome note is stored with the run, in the same write.
    let logs = h.env.store.logs(run, None).await.unwrap();
    for id in ["pick", "gate", "after"] {
        assert!(
            logs.iter()
                .any(|l| l.run == run && l.node == id && l.line == "node succeeded"),
            "{id}: {logs:?}"
        );
    }
    // The trigger is stored whole: its details were shared by the nodes, not lost.
    assert_eq!(r.trigger.details["body"]["after"], json!("abc123"));
    assert_eq!(
        r.trigger.details["body"]["repository"]["full_name"],
        json!("acme/web")
    );
    // Announced in order, every event with the committed id.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(seen.last(), Some(Event::RunState { state, .. }) if state.is_finished()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(
                e @ (Event::RunCreated { .. }
                | Event::RunState { .. }
                | Event::NodeState { .. }
                | Event::Log { .. }),
            )) => seen.push(e),
            Ok(Ok(_)) => {}
            other => panic!("no end of run {run} announced: {other:?}; saw {seen:?}"),
        }
    }
    assert!(
        matches!(&seen[0], Event::RunCreated { run: r, pipeline } if *r == run && pipeline == "split")
    );
    for e in &seen {
        let id = match e {
            Event::RunCreated { run, .. }
            | Event::RunState { run, .. }
            | Event::NodeState { run, .. }
            | Event::Log { run, .. } => *run,
            _ => unreachable!(),
        };
        assert_eq!(id, run, "{e:?}");
    }
    assert!(matches!(
        seen.last(),
        Some(Event::RunState {
            state: RunState::Succeeded,
            ..
        })
    ));
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(
                e,
                Event::NodeState {
                    state: NodeState::Succeeded,
                    ..
                }
            ))
            .count(),
        3
    );
    // Each node's outcome note is announced, before the run's end.
    let notes: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Log { node, line, .. } if line == "node succeeded" => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 3, "{seen:?}");
    for id in ["pick", "gate", "after"] {
        assert!(notes.contains(&id), "{id}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_filter_skips_what_follows_and_hostile_values_stay_data() {
    let h = start("").await;
    let hostile = format!(
        "\"; rm -rf / #'\n{{{{ secrets }}}}{{% raw %}}$(id)`id`\u{0}{}",
        "x".repeat(100_000)
    );
    let run = h
        .post(
            "split",
            &json!({ "repository": { "full_name": "evil/\"repo'\n" }, "after": "{{ 7 * 7 }}", "text": hostile }),
        )
        .await;
    let r = h.finished(run, Duration::from_secs(10)).await;
    assert_eq!(r.state, RunState::Succeeded);
    let nodes = h.env.store.nodes(run).await.unwrap();
    let by_id = |id: &str| nodes.iter().find(|n| n.node_id == id).expect("node");
    let out = by_id("pick").output.clone().expect("output");
    // Values are rendered once, never evaluated again as templates or code.
    assert_eq!(out["repo"], json!("evil/\"repo'\n"));
    assert_eq!(out["sha"], json!("{{ 7 * 7 }}"));
    assert_eq!(out["text"], json!(hostile));
    assert_eq!(by_id("gate").output, Some(json!({ "passed": false })));
    assert_eq!(by_id("after").state, NodeState::Skipped);
    assert_eq!(by_id("after").attempts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transform_fails_its_run_and_skips_the_rest() {
    let h = start("").await;
    let run = h.post("broken", &json!({ "x": 1 })).await;
    let r = h.finished(run, Duration::from_secs(10)).await;
    assert_eq!(r.state, RunState::Failed);
    let error = r.error.expect("error");
    assert!(error.contains("node 'a' failed"), "{error}");
    let nodes = h.env.store.nodes(run).await.unwrap();
    let by_id = |id: &str| nodes.iter().find(|n| n.node_id == id).expect("node");
    assert_eq!(by_id("a").state, NodeState::Failed);
    assert!(
        by_id("a")
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cannot render `output`"))
    );
    assert_eq!(by_id("b").state, NodeState::Skipped);
    let attempts = h.env.store.attempts(run).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].state, AttemptState::Failed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = h.env.store.logs(run, Some("a")).await.unwrap();
        if logs.iter().any(|l| l.line.starts_with("node failed")) {
            break;
        }
        assert!(Instant::now() < deadline, "no failure note: {logs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_reading_the_run_id_sees_the_committed_id() {
    let h = start("").await;
    for _ in 0..3 {
        let run = h.post("with-id", &json!({})).await;
        let r = h.finished(run, Duration::from_secs(10)).await;
        assert_eq!(r.state, RunState::Succeeded);
        let nodes = h.env.store.nodes(run).await.unwrap();
        assert_eq!(nodes[0].output, Some(json!({ "id": run.0, "user": null })));
    }
}

/// 200 instant runs posted at once while a shell run holds the only slot:
/// every one is accepted and succeeds, none starts before the slot is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_global_cap_waits_for_the_slot_and_loses_nothing() {
    let h = start("[global]\nmax_concurrent = 1\n[default]\nrate = \"100000/s\"\nburst = 100000\n")
        .await;
    let slow = h.post("slow", &json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.env.store.run(slow).await.unwrap().expect("slow").state != RunState::Running {
        assert!(Instant::now() < deadline, "the shell run never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let posts = (0..200).map(|n| {
        let h = &h;
        async move { (n, h.post("fast", &json!({ "n": n })).await) }
    });
    let runs = futures_util::future::join_all(posts).await;
    let slow = h.finished(slow, Duration::from_secs(30)).await;
    assert_eq!(slow.state, RunState::Succeeded);
    let slow_end = slow.finished_at.expect("finished_at");
    let mut ids = std::collections::BTreeSet::new();
    for (n, run) in runs {
        assert!(ids.insert(run), "run {run} given twice");
        let r = h.finished(run, Duration::from_secs(60)).await;
        assert_eq!(r.state, RunState::Succeeded, "run {run}");
        let started = r.started_at.expect("started_at");
        if r.created_at < slow_end {
            assert!(
                started >= slow_end,
                "run {run} started at {started}, while the only slot was held until {slow_end}"
            );
        }
        let nodes = h.env.store.nodes(run).await.unwrap();
        assert_eq!(nodes[0].output, Some(json!({ "n": n })), "run {run}");
    }
    assert_eq!(
        h.env.store.runs(Some("fast"), 10_000).await.unwrap().len(),
        200
    );
}
