//! Limits against the real `sluiced` binary: real HTTP to its webhook
//! listener, its socket, its store (SQLite, or PostgreSQL in the suite's
//! PostgreSQL half), restarts with SIGKILL and reloads with SIGHUP.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::eventually;
use daemon::Client;
use serde_json::{Value, json};
use sluice_shared::method::{self as m, notice};
use sluice_shared::protocol::{ErrorCode, ServerMessage};

/// The user running the tests, as the daemon names socket callers.
fn me() -> String {
    // SAFETY: no preconditions.
    let uid = unsafe { libc::geteuid() };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines()
                .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
                .and_then(|l| l.split(':').next().map(str::to_owned))
        })
        .unwrap_or_else(|| uid.to_string())
}

/// A webhook pipeline whose runs belong to `user` and run `script`.
fn hook(user: &str, script: &str) -> String {
    format!(
        "triggers:\n  - webhook: {{ auth: none, user: {user} }}\nnodes:\n  - id: work\n    kind: shell\n    run: \"{script}\"\n"
    )
}

/// `sluiced` with a known HTTP port (the shared fixture listens on port 0).
struct Sluiced {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    port: u16,
    /// Where the store lives (dropped after the process is killed).
    backend: common::Backend,
}

impl Sluiced {
    fn start(limits: &str, pipelines: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("pipelines");
        std::fs::create_dir_all(&pdir).unwrap();
        for (name, text) in pipelines {
            let path = pdir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let socket = dir.path().join("sluice.sock");
        let mut d = Self {
            dir,
            child: None,
            socket,
            port,
            backend: common::Backend::new_blocking(),
        };
        d.write_config(limits);
        d.spawn();
        d
    }

    fn write_config(&self, limits: &str) {
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n\n[access]\nadmin = [\"{}\"]\n\n{limits}\n",
            self.port,
            me()
        );
        let text = self.backend.with_config(&text);
        std::fs::write(self.dir.path().join("sluiced.toml"), text).unwrap();
    }

    fn spawn(&mut self) {
        let p = |rel: &str| self.dir.path().join(rel);
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluiced"))
            .arg("--config")
            .arg(p("sluiced.toml"))
            .arg("--state-dir")
            .arg(p("state"))
            .arg("--pipelines")
            .arg(p("pipelines"))
            .arg("--socket")
            .arg(&self.socket)
            .env("SLUICE_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // Its reader thread keeps draining stderr after the ready line.
        common::Lines::new(stderr).wait_for(60, "sluiced's ready line", |l| {
            l.starts_with("sluiced: ready")
        });
        self.child = Some(child);
    }

    /// SIGKILL: no chance to clean up, slots and all.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::kill_and_reap(&mut c, "sluiced after SIGKILL");
        }
    }

    fn hup(&self) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }

    async fn client(&self) -> Client {
        let mut c = Client::connect(&self.socket).await;
        c.hello().await.unwrap();
        c
    }

    fn url(&self, pipeline: &str) -> String {
        format!("http://127.0.0.1:{}/hooks/{pipeline}", self.port)
    }
}

impl Drop for Sluiced {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn post(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn run_state(c: &mut Client, run: i64) -> (String, Option<i64>) {
    let r = c.call::<m::RunsGet>(json!({ "id": run })).await.unwrap();
    (
        r["state"].as_str().unwrap_or_default().to_owned(),
        r["started_at"].as_i64(),
    )
}

async fn usage(c: &mut Client) -> Value {
    c.call::<m::LimitsUsage>(json!({})).await.unwrap()
}

fn user_usage<'a>(u: &'a Value, user: &str) -> &'a Value {
    u["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["user"] == user)
        .unwrap_or_else(|| panic!("no usage for {user}: {u}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_the_rate_gets_exactly_the_allowed_runs_and_429s_with_retry_after() {
    let d = Sluiced::start(
        "[limits.default]\nrate = \"10/min\"\nburst = 5\n",
        &[("p.yaml", hook("alice", "true"))],
    );
    let mut watcher = d.client().await;
    watcher.call::<m::Subscribe>(json!({})).await.unwrap();
    let http = common::http_client();
    let url = d.url("p");
    let replies = futures_util::future::join_all((0..12).map(|_| post(&http, &url))).await;
    let accepted: Vec<_> = replies.iter().filter(|r| r.status() == 202).collect();
    let refused: Vec<_> = replies.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(accepted.len(), 5, "exactly the burst is accepted");
    assert_eq!(refused.len(), 7, "the rest are refused");
    for r in &refused {
        // 10/min: one trigger comes back every 6 s; Retry-After is that, rounded up.
        let secs: u64 = header(r, "retry-after").unwrap().parse().unwrap();
        assert!((1..=6).contains(&secs), "Retry-After {secs}");
        assert_eq!(header(r, "ratelimit-policy").unwrap(), "\"rate\";q=10;w=60");
        assert_eq!(
            header(r, "ratelimit").unwrap(),
            format!("\"rate\";r=0;t={secs}")
        );
    }
    for r in &accepted {
        assert_eq!(header(r, "ratelimit-policy").unwrap(), "\"rate\";q=10;w=60");
        assert!(header(r, "ratelimit").unwrap().starts_with("\"rate\";r="));
    }
    let last = post(&http, &url).await;
    assert_eq!(last.status(), 429);
    let text: Value = last.json().await.unwrap();
    assert_eq!(text["limit"], "rate");
    assert!(text["error"].as_str().unwrap().contains("10/min"), "{text}");

    // Subscribers hear about the flood in aggregate (a flush may fall between refusals).
    let mut heard = 0;
    while heard < 8 {
        let n = watcher.notification().await;
        let e = &n.params["event"];
        if e["what"] == "limit_hit" {
            assert_eq!(e["details"]["user"], "alice");
            assert_eq!(e["details"]["limit"], "rate");
            heard += e["details"]["count"].as_i64().unwrap();
        }
    }
    assert_eq!(heard, 8);

    // Every refusal is counted (metrics) and written down in aggregate (audit, ledger).
    let mut c = d.client().await;
    let m = c.call::<m::Metrics>(json!({})).await.unwrap();
    assert_eq!(m["limit_refusals"], 8);
    let u = usage(&mut c).await;
    assert_eq!(u["global"]["refusals"]["rate"], 8);
    // Written down in aggregate: a few audit rows with counts, not one per request.
    let rows = c.call::<m::AuditList>(json!({})).await.unwrap();
    let refused: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "limits.refused")
        .collect();
    assert!(!refused.is_empty() && refused.len() <= 2, "{refused:?}");
    let total: i64 = refused
        .iter()
        .map(|r| {
            let detail = match &r["detail"] {
                Value::String(s) => serde_json::from_str(s).unwrap(),
                other => other.clone(),
            };
            detail["total"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(total, 8);
    let u = eventually(10, "refusals in the ledger", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            let u = c.call::<m::LimitsUsage>(json!({})).await.ok()?;
            (user_usage(&u, "alice")["refused_24h"]["rate"] == 8).then_some(u)
        }
    })
    .await;
    assert_eq!(user_usage(&u, "alice")["daily_runs"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_at_its_limit_leaves_another_unaffected() {
    let me = me();
    let d = Sluiced::start(
        &format!(
            "[limits.users.alice]\nrate = \"1/min\"\nburst = 1\n\n[limits.users.\"{me}\"]\nrate = \"1/h\"\nburst = 1\n"
        ),
        &[
            ("a.yaml", hook("alice", "true")),
            ("b.yaml", hook("bob", "true")),
        ],
    );
    let http = common::http_client();
    assert_eq!(post(&http, &d.url("a")).await.status(), 202);
    for _ in 0..3 {
        assert_eq!(post(&http, &d.url("a")).await.status(), 429);
    }
    // Bob has no rate limit at all: alice's flood does not touch him.
    for _ in 0..10 {
        assert_eq!(post(&http, &d.url("b")).await.status(), 202);
    }

    // A manual trigger over the caller's rate gets a socket error naming the limit.
    let mut c = d.client().await;
    c.call::<m::PipelinesTrigger>(json!({ "name": "b" }))
        .await
        .unwrap();
    let e = c
        .call::<m::PipelinesTrigger>(json!({ "name": "b" }))
        .await
        .unwrap_err();
    assert!(e.is(ErrorCode::Refused), "{e:?}");
    let data = e.data.clone().unwrap();
    assert_eq!(data["limit"], "rate");
    assert_eq!(data["user"], me);
    let ms = data["retry_after_ms"].as_u64().unwrap();
    assert!(ms > 3_500_000 && ms <= 3_600_000, "retry in {ms} ms");
    assert!(
        e.message.contains("1/h") && e.message.contains("retry in"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_caps_hold_under_200_concurrent_webhooks() {
    let d = Sluiced::start(
        "[limits.global]\nmax_concurrent = 3\n\n[limits.default]\nmax_concurrent = 2\n",
        &[
            ("pa.yaml", hook("alice", "sleep 0.05")),
            ("pb.yaml", hook("bob", "sleep 0.05")),
        ],
    );
    // Watch every run start and finish, in the order the daemon announces them.
    let mut watcher = d.client().await;
    watcher.call::<m::Subscribe>(json!({})).await.unwrap();
    let watch = tokio::spawn(async move {
        let mut pipeline_of: HashMap<i64, String> = HashMap::new();
        let mut running: BTreeMap<i64, String> = BTreeMap::new();
        let (mut max_total, mut max_user) = (0usize, 0usize);
        let mut finished = 0usize;
        while finished < 200 {
            let ServerMessage::Notification(n) = watcher.read().await else {
                continue;
            };
            assert_ne!(n.method, notice::LAGGED, "the watcher fell behind");
            let e = &n.params["event"];
            let run = e["run"].as_i64().unwrap_or(0);
            match (e["type"].as_str(), e["state"].as_str()) {
                (Some("run_created"), _) => {
                    pipeline_of.insert(run, e["pipeline"].as_str().unwrap().to_owned());
                }
                (Some("run_state"), Some("running")) => {
                    running.insert(run, pipeline_of.get(&run).cloned().unwrap_or_default());
                    max_total = max_total.max(running.len());
                    for p in ["pa", "pb"] {
                        max_user = max_user.max(running.values().filter(|v| *v == p).count());
                    }
                }
                (Some("run_state"), Some("succeeded" | "failed" | "cancelled")) => {
                    running.remove(&run);
                    finished += 1;
                }
                _ => {}
            }
        }
        (max_total, max_user)
    });

    let http = common::http_client();
    let posts = (0..200).map(|i| {
        let (http, url) = (http.clone(), d.url(if i % 2 == 0 { "pa" } else { "pb" }));
        async move { post(&http, &url).await }
    });
    let replies = futures_util::future::join_all(posts).await;
    let mut runs = Vec::new();
    for r in replies {
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        runs.push(v["run"].as_i64().unwrap());
    }
    runs.sort_unstable();
    runs.dedup();
    assert_eq!(runs.len(), 200, "every delivery made its own run");

    let (max_total, max_user) = tokio::time::timeout(Duration::from_secs(120), watch)
        .await
        .expect("all 200 runs finished")
        .unwrap();
    assert!(
        max_total <= 3,
        "{max_total} runs ran at once (global cap 3)"
    );
    assert!(
        max_user <= 2,
        "{max_user} runs of one user ran at once (cap 2)"
    );
    assert!(max_total >= 2, "the caps were actually exercised");
    // None lost: every accepted trigger ran to the end.
    let mut c = d.client().await;
    for run in runs {
        assert_eq!(run_state(&mut c, run).await.0, "succeeded", "run {run}");
    }
    let u = usage(&mut c).await;
    assert_eq!(u["global"]["held"], 0);
    assert_eq!(u["global"]["running"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_start_in_a_fair_order_across_users() {
    // The gate holds the only slot until the file appears (the workload polls, not the test).
    let scratch = tempfile::tempdir().unwrap();
    let go = scratch.path().join("go");
    let gate = hook(
        "ops",
        &format!("while [ ! -f {} ]; do sleep 0.02; done", go.display()),
    );
    let d = Sluiced::start(
        "[limits.global]\nmax_concurrent = 1\n",
        &[
            ("gate.yaml", gate),
            ("pa.yaml", hook("alice", "true")),
            ("pb.yaml", hook("bob", "true")),
        ],
    );
    let mut c = d.client().await;
    let http = common::http_client();
    let gate: Value = post(&http, &d.url("gate")).await.json().await.unwrap();
    let gate = gate["run"].as_i64().unwrap();
    eventually(10, "the gate running", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            (run_state(&mut c, gate).await.0 == "running").then_some(())
        }
    })
    .await;
    // Alice bursts first, then bob: bob must not wait behind all of alice's runs.
    let mut alice = Vec::new();
    let mut bob = Vec::new();
    for _ in 0..4 {
        let v: Value = post(&http, &d.url("pa")).await.json().await.unwrap();
        alice.push(v["run"].as_i64().unwrap());
    }
    for _ in 0..4 {
        let v: Value = post(&http, &d.url("pb")).await.json().await.unwrap();
        bob.push(v["run"].as_i64().unwrap());
    }
    // Why is bob's second run waiting? The global cap, and three runs go before it.
    let why = eventually(10, "bob's run parked in admission", || {
        let socket = d.socket.clone();
        let run = bob[1];
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            let e = c
                .call::<m::LimitsExplain>(json!({ "run": run }))
                .await
                .ok()?;
            (e["cap"] == "global").then_some(e)
        }
    })
    .await;
    assert_eq!(why["ahead"], 3, "{why}");
    assert_eq!(why["ahead_same_user"], 1, "{why}");
    assert!(
        why["reason"].as_str().unwrap().contains("max_concurrent 1"),
        "{why}"
    );

    std::fs::write(&go, "").unwrap();
    let all: Vec<i64> = alice.iter().chain(&bob).copied().collect();
    eventually(30, "every run finished", || {
        let socket = d.socket.clone();
        let all = all.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            for r in all {
                if run_state(&mut c, r).await.0 != "succeeded" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let mut started = Vec::new();
    for r in &all {
        started.push((run_state(&mut c, *r).await.1.unwrap(), *r));
    }
    started.sort_unstable();
    let order: Vec<i64> = started.into_iter().map(|(_, r)| r).collect();
    let expected = vec![
        alice[0], bob[0], alice[1], bob[1], alice[2], bob[2], alice[3], bob[3],
    ];
    assert_eq!(
        order, expected,
        "round-robin between users, oldest first within one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_caps_survive_a_daemon_restart() {
    let mut d = Sluiced::start(
        "[limits.users.alice]\ndaily_runs = 3\nday_starts = \"00:00 Europe/Berlin\"\n",
        &[("p.yaml", hook("alice", "true"))],
    );
    let http = common::http_client();
    let keyed = || {
        http.post(d.url("p"))
            .header("content-type", "application/json")
            .header("idempotency-key", "delivery-1")
            .body("{}")
            .send()
    };
    assert_eq!(keyed().await.unwrap().status(), 202);
    for _ in 0..2 {
        assert_eq!(post(&http, &d.url("p")).await.status(), 202);
    }
    let refused = post(&http, &d.url("p")).await;
    assert_eq!(refused.status(), 429);
    let secs: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!(
        secs > 0 && secs <= 25 * 3600,
        "until the next Berlin midnight: {secs}"
    );
    assert_eq!(
        header(&refused, "ratelimit-policy").unwrap(),
        "\"daily_runs\";q=3;w=86400"
    );
    // A redelivery of an accepted trigger still finds its run, cap or not.
    let again: Value = keyed().await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");

    d.kill9();
    d.spawn();
    let again = post(&http, &d.url("p")).await;
    assert_eq!(again.status(), 429, "the count was kept across kill -9");
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["limit"], "daily_runs");
    assert!(body["error"].as_str().unwrap().contains("3 of 3"), "{body}");
    let mut c = d.client().await;
    let u = usage(&mut c).await;
    let alice = user_usage(&u, "alice");
    assert_eq!(alice["daily_runs"], 3);
    assert_eq!(alice["daily_runs_max"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_kill_9_held_slots_equal_running_runs_and_the_queue_moves_on() {
    let mut d = Sluiced::start(
        "[limits.global]\nmax_concurrent = 1\n",
        &[
            ("slow.yaml", hook("alice", "sleep 60")),
            ("quick.yaml", hook("bob", "true")),
        ],
    );
    let http = common::http_client();
    let slow: Value = post(&http, &d.url("slow")).await.json().await.unwrap();
    let slow = slow["run"].as_i64().unwrap();
    let c = d.client().await;
    eventually(10, "the slow run holding the slot", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            (run_state(&mut c, slow).await.0 == "running").then_some(())
        }
    })
    .await;
    let mut quick = Vec::new();
    for _ in 0..2 {
        let v: Value = post(&http, &d.url("quick")).await.json().await.unwrap();
        quick.push(v["run"].as_i64().unwrap());
    }
    // Accepted runs park in admission as soon as their drivers have loaded them.
    eventually(10, "both quick runs parked", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            let u = c.call::<m::LimitsUsage>(json!({})).await.ok()?;
            (u["global"]["held"] == 1 && u["global"]["queued"] == 2).then_some(())
        }
    })
    .await;
    drop(c);

    d.kill9();
    d.spawn();
    let u = eventually(10, "slots rebuilt from running runs", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            let u = c.call::<m::LimitsUsage>(json!({})).await.ok()?;
            (u["global"]["held"] == 1 && u["global"]["queued"] == 2).then_some(u)
        }
    })
    .await;
    assert_eq!(u["global"]["held"], u["global"]["running"], "{u}");
    let mut c = d.client().await;
    let why = c
        .call::<m::LimitsExplain>(json!({ "run": quick[0] }))
        .await
        .unwrap();
    assert_eq!(why["cap"], "global", "{why}");

    // The run holding the slot ends: the queue moves on and every queued run runs.
    c.call::<m::RunsCancel>(json!({ "id": slow }))
        .await
        .unwrap();
    eventually(20, "the queued runs ran", || {
        let socket = d.socket.clone();
        let quick = quick.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            for r in quick {
                if run_state(&mut c, r).await.0 != "succeeded" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let u = usage(&mut c).await;
    assert_eq!(u["global"]["held"], 0);
    assert_eq!(u["global"]["running"], 0);
    assert_eq!(u["global"]["queued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_changes_a_limit_without_resetting_usage() {
    let d = Sluiced::start(
        "[limits.users.alice]\ndaily_runs = 2\n",
        &[("p.yaml", hook("alice", "true"))],
    );
    let http = common::http_client();
    for _ in 0..2 {
        assert_eq!(post(&http, &d.url("p")).await.status(), 202);
    }
    assert_eq!(post(&http, &d.url("p")).await.status(), 429);

    d.write_config("[limits.users.alice]\ndaily_runs = 3\n");
    d.hup();
    let u = eventually(10, "the new cap in force", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.ok()?;
            let u = c
                .call::<m::LimitsUsage>(json!({ "user": "alice" }))
                .await
                .ok()?;
            (user_usage(&u, "alice")["daily_runs_max"] == 3).then_some(u)
        }
    })
    .await;
    assert_eq!(
        user_usage(&u, "alice")["daily_runs"],
        2,
        "usage kept over the reload"
    );
    assert_eq!(post(&http, &d.url("p")).await.status(), 202);
    assert_eq!(post(&http, &d.url("p")).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_tokens_authenticate_webhooks_as_their_user_until_revoked() {
    // The pipelines' own webhooks are open; the token decides whose trigger it is.
    let bearer = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: a\n    kind: transform\n    output: { ok: true }\n";
    let d = Sluiced::start(
        "[limits.users.carol]\ndaily_runs = 1\n",
        &[("p.yaml", bearer.to_owned()), ("q.yaml", bearer.to_owned())],
    );
    let mut c = d.client().await;
    let created = c
        .call::<m::TokensCreate>(json!({ "user": "carol", "pipeline": "p" }))
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("slk_"));
    let list = c.call::<m::TokensList>(json!({})).await.unwrap();
    assert!(!list.to_string().contains(&token), "only the hash is kept");

    let http = common::http_client();
    let send = |pipeline: &str, token: &str| {
        http.post(d.url(pipeline))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body("{}")
            .send()
    };
    let ok = send("p", &token).await.unwrap();
    assert_eq!(ok.status(), 202);
    let run = ok.json::<Value>().await.unwrap()["run"].as_i64().unwrap();
    let detail = c.call::<m::RunsGet>(json!({ "id": run })).await.unwrap();
    assert_eq!(detail["trigger"]["user"], "carol");
    // Carol's limits apply to her token's triggers.
    assert_eq!(send("p", &token).await.unwrap().status(), 429);
    assert_eq!(
        send("q", &token).await.unwrap().status(),
        403,
        "scoped to p"
    );

    let id = created["id"].as_i64().unwrap();
    c.call::<m::TokensRevoke>(json!({ "id": id }))
        .await
        .unwrap();
    assert_eq!(send("p", &token).await.unwrap().status(), 403);
    let list = c.call::<m::TokensList>(json!({})).await.unwrap();
    assert!(list[0]["revoked_at"].is_i64(), "{list}");
}

/// Cron fires over the owner's daily cap are recorded as refused, in-process
/// with a manual clock (the real daemon's scheduler is the same code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_fires_over_a_cap_are_recorded_as_refused() {
    use sluice_daemon::engine::{Engine, EngineOptions};
    use sluice_daemon::limits::{Limits, LimitsConfig};
    use sluice_daemon::registry::Registry;
    use sluice_daemon::secrets::Secrets;
    use sluice_daemon::store::Durability;
    use sluice_daemon::triggers::Triggers;
    use sluice_daemon::triggers::cron::{Clock, ManualClock, Scheduler};
    use sluice_shared::validate::ValidateOptions;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("pipelines");
    std::fs::create_dir_all(&pdir).unwrap();
    let text = "owner: alice\ntriggers:\n  - cron: \"0 * * * *\"\n    timezone: UTC\nnodes:\n  - id: a\n    kind: transform\n    output: { ok: true }\n";
    std::fs::write(pdir.join("hourly.yaml"), text).unwrap();
    std::fs::set_permissions(
        pdir.join("hourly.yaml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let backend = common::Backend::new().await;
    let store = backend
        .open(&dir.path().join("s.db"), Durability::Normal)
        .await;
    let config: LimitsConfig = toml::from_str("[users.alice]\ndaily_runs = 2\n").unwrap();
    let engine = Engine::start(
        store.clone(),
        &Secrets::default(),
        EngineOptions {
            plugins_dir: dir.path().join("plugins"),
            limits: Arc::new(Limits::new(config)),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let registry = Arc::new(Registry::new(store.clone(), engine.events()).await.unwrap());
    registry
        .reload(&pdir, &ValidateOptions::default())
        .await
        .unwrap();
    let triggers = Triggers::new(engine.clone(), registry);
    let start: jiff::Timestamp = "2026-11-22T00:30:00Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let stop = tokio_util::sync::CancellationToken::new();
    let sched = Scheduler::spawn(triggers, Arc::clone(&clock) as Arc<dyn Clock>, stop.clone());
    sched.reload().await.unwrap();
    // Four hourly fires; the owner may start two runs a day.
    let until: jiff::Timestamp = "2026-11-22T04:30:00Z".parse().unwrap();
    loop {
        let tick = sched.settled(clock.now()).await.unwrap();
        if clock.now() >= until {
            break;
        }
        let to = tick.next.map_or(until, |n| n.min(until));
        clock.set(to.max(clock.now()));
    }
    let runs = store.runs(Some("hourly"), 100).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r.trigger.user.as_deref() == Some("alice"))
    );
    let ledger = store.misfires(Some("hourly"), 10).await.unwrap();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    for m in ledger {
        assert_eq!(m.misfire.action, "refused (limits)");
        assert!(
            m.misfire.reason.contains("2 of 2 runs"),
            "{}",
            m.misfire.reason
        );
    }
    assert_eq!(engine.limits().refusals_total(), 2);
    stop.cancel();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_gets_its_run_without_spending_the_rate() {
    let d = Sluiced::start(
        "[limits.default]\nrate = \"1/min\"\nburst = 1\n",
        &[("p.yaml", hook("alice", "true"))],
    );
    let http = common::http_client();
    let url = d.url("p");
    let keyed = |k: &'static str| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", k)
            .body("{}")
            .send()
    };
    let first = keyed("delivery-1").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // The rate is spent, but a redelivery is not a new trigger.
    let again = keyed("delivery-1").await.unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["run"], first["run"]);
    assert_eq!(again["duplicate"], true, "{again}");
    let other = keyed("delivery-2").await.unwrap();
    assert_eq!(other.status(), 429, "a new delivery is over the rate");
}
