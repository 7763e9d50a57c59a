//! The socket API of the real `sluiced`, driven through a real connection.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::time::Duration;

use common::eventually;
use daemon::{Client, Daemon};
use serde_json::{Value, json};
use sluice_shared::method::{self as m, Method as _, notice};
use sluice_shared::protocol::{ErrorCode, ServerMessage};

const HELLO: &str = "nodes:\n  - id: greet\n    kind: shell\n    run: echo hello {{ inputs.who }}\ninputs:\n  who: { type: string, default: world }\n";
const FAILS: &str = "nodes:\n  - id: boom\n    kind: shell\n    run: echo about to fail; exit 2\n";
const SLOW: &str = "nodes:\n  - id: wait\n    kind: shell\n    run: echo waiting; sleep 1000\n";
const CHATTY: &str = "nodes:\n  - id: talk\n    kind: shell\n    run: seq 1 10000\n";

fn me() -> String {
    // SAFETY: no preconditions.
    let uid = unsafe { libc::geteuid() };
    // Same lookup as the daemon, via the passwd file.
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines()
                .find(|l| l.split(':').nth(2) == Some(&uid.to_string()))
                .and_then(|l| l.split(':').next().map(str::to_owned))
        })
        .unwrap_or_else(|| uid.to_string())
}

fn config(role: &str) -> String {
    format!("[access]\n{role} = [\"{}\"]\n", me())
}

fn pipelines() -> Vec<(&'static str, &'static str)> {
    vec![
        ("hello.yaml", HELLO),
        ("fails.yaml", FAILS),
        ("slow.yaml", SLOW),
        ("chatty.yaml", CHATTY),
    ]
}

fn code(e: &sluice_shared::protocol::RpcError) -> i64 {
    e.code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_works_for_an_admin() {
    let d = Daemon::start(&config("admin"), &pipelines());
    let mut c = d.client().await;
    reads(&mut c).await;
    let failed_id = triggers_runs_and_logs(&mut c).await;
    filters_and_paging(&mut c).await;
    cancel_retry_resolve(&mut c, failed_id).await;
    approvals(&mut c).await;
    metrics(&mut c).await;
    config_switches_and_audit(&mut c, &d).await;
}

/// `status` and the pipelines, with a hint for a misspelled name.
async fn reads(c: &mut Client) {
    let status = c.call::<m::Status>(json!({})).await.unwrap();
    assert_eq!(status["pipelines"], 4);
    let list = c.call::<m::PipelinesList>(json!({})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4);
    let get = c
        .call::<m::PipelinesGet>(json!({ "name": "hello" }))
        .await
        .unwrap();
    assert_eq!(get["definition"]["nodes"][0]["id"], "greet");
    let err = c
        .call::<m::PipelinesGet>(json!({ "name": "helo" }))
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::NotFound as i64);
    assert!(
        err.message.contains("did you mean 'hello'?"),
        "{}",
        err.message
    );
}

/// Triggers (waiting for the end), a refused input, a run and its logs;
/// returns the run that failed.
async fn triggers_runs_and_logs(c: &mut Client) -> i64 {
    let done = c
        .call::<m::PipelinesTrigger>(
            json!({ "name": "hello", "inputs": { "who": "api" }, "wait": true }),
        )
        .await
        .unwrap();
    let run = done["run"].as_i64().unwrap();
    assert_eq!(done["detail"]["state"], "succeeded");
    assert_eq!(
        done["detail"]["nodes"][0]["output"]["stdout"],
        "hello api\n"
    );
    let bad = c
        .call::<m::PipelinesTrigger>(json!({ "name": "hello", "inputs": { "whom": 1 } }))
        .await
        .unwrap_err();
    assert_eq!(code(&bad), ErrorCode::InvalidParams as i64);
    let failed = c
        .call::<m::PipelinesTrigger>(json!({ "name": "fails", "wait": true }))
        .await
        .unwrap();
    assert_eq!(failed["detail"]["state"], "failed");
    let failed_id = failed["run"].as_i64().unwrap();

    let got = c.call::<m::RunsGet>(json!({ "id": run })).await.unwrap();
    assert_eq!(got["nodes"][0]["attempts"][0]["state"], "succeeded");
    let logs = c
        .call::<m::LogsGet>(json!({ "run": failed_id }))
        .await
        .unwrap();
    assert_eq!(logs["lines"][0]["line"], "about to fail");
    assert_eq!(logs["finished"], true);
    let more = c
        .call::<m::LogsGet>(json!({ "run": failed_id, "after": logs["next"] }))
        .await
        .unwrap();
    assert!(more["lines"].as_array().unwrap().is_empty());
    failed_id
}

/// `runs.list` filters and keyset paging.
async fn filters_and_paging(c: &mut Client) {
    for _ in 0..3 {
        c.call::<m::PipelinesTrigger>(json!({ "name": "hello", "wait": true }))
            .await
            .unwrap();
    }
    let page1 = c
        .call::<m::RunsList>(json!({ "pipeline": "hello", "limit": 2 }))
        .await
        .unwrap();
    assert_eq!(page1["runs"].as_array().unwrap().len(), 2);
    let next = page1["next"].clone();
    let page2 = c
        .call::<m::RunsList>(json!({ "pipeline": "hello", "limit": 2, "before": next }))
        .await
        .unwrap();
    assert_eq!(page2["runs"].as_array().unwrap().len(), 2);
    assert!(page2["next"].is_null(), "4 hello runs in 2 pages");
    assert!(page2["runs"][0]["id"].as_i64() < page1["runs"][1]["id"].as_i64());
    let failed_only = c
        .call::<m::RunsList>(json!({ "states": ["failed"] }))
        .await
        .unwrap();
    assert_eq!(failed_only["runs"].as_array().unwrap().len(), 1);
    let by_trigger = c
        .call::<m::RunsList>(json!({ "trigger": "manual", "user": daemon_user() }))
        .await
        .unwrap();
    assert_eq!(by_trigger["runs"].as_array().unwrap().len(), 5);
    let none = c
        .call::<m::RunsList>(json!({ "since": 4_000_000_000_000i64 }))
        .await
        .unwrap();
    assert!(none["runs"].as_array().unwrap().is_empty());
}

/// Cancel, retry and resolve (of a run with nothing to resolve).
async fn cancel_retry_resolve(c: &mut Client, failed_id: i64) {
    let slow = c
        .call::<m::PipelinesTrigger>(json!({ "name": "slow" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let cancelled = c
        .call::<m::RunsCancel>(json!({ "id": slow }))
        .await
        .unwrap();
    assert_eq!(cancelled["cancelled"], true);
    let retried = c
        .call::<m::RunsRetry>(json!({ "id": failed_id, "mode": "all" }))
        .await
        .unwrap();
    assert_eq!(retried["retry_of"], failed_id);
    let unfinished = c
        .call::<m::RunsRetry>(json!({ "id": 999_999 }))
        .await
        .unwrap_err();
    assert_eq!(code(&unfinished), ErrorCode::NotFound as i64);
    let resolve = c
        .call::<m::RunsResolve>(
            json!({ "id": failed_id, "node": "boom", "resolution": { "action": "retry" } }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&resolve), ErrorCode::Conflict as i64);
}

/// Approvals, none of which exist yet.
async fn approvals(c: &mut Client) {
    assert_eq!(
        c.call::<m::ApprovalsList>(json!({})).await.unwrap(),
        json!([])
    );
    let decide = c
        .call::<m::ApprovalsDecide>(json!({ "id": 1, "approve": false }))
        .await
        .unwrap_err();
    assert_eq!(
        code(&decide),
        ErrorCode::InvalidParams as i64,
        "a rejection needs a reason"
    );
    let decide = c
        .call::<m::ApprovalsDecide>(json!({ "id": 1, "approve": true }))
        .await
        .unwrap_err();
    assert_eq!(code(&decide), ErrorCode::NotFound as i64);
}

/// Metrics of the runs so far: per-minute counts and exact percentiles.
async fn metrics(c: &mut Client) {
    // Metrics follow the event stream: the finished runs are counted shortly after they finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = c.call::<m::Metrics>(json!({})).await.unwrap();
        let finished: u64 = metrics["finished_per_minute"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        if finished >= 6 {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never counted the 6 finished runs: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(metrics["started_per_minute"].as_array().unwrap().len(), 60);
    // Percentiles are the stored durations' own (nearest rank), not observation times.
    let hello = metrics["durations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pipeline"] == "hello")
        .cloned()
        .unwrap_or_else(|| panic!("no durations of hello: {metrics}"));
    let page = c
        .call::<m::RunsList>(json!({ "pipeline": "hello", "limit": 100 }))
        .await
        .unwrap();
    let mut took: Vec<i64> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some(r["finished_at"].as_i64()? - r["started_at"].as_i64()?))
        .collect();
    took.sort_unstable();
    assert_eq!(hello["count"], took.len(), "{hello}");
    let rank = |pct: usize| took[(pct * took.len()).div_ceil(100).max(1) - 1];
    assert_eq!(hello["p50_ms"], rank(50), "{hello} vs {took:?}");
    assert_eq!(hello["p99_ms"], rank(99), "{hello} vs {took:?}");
}

/// Config errors and reload, disable and enable, and the audit of it all.
async fn config_switches_and_audit(c: &mut Client, d: &Daemon) {
    assert_eq!(
        c.call::<m::ConfigErrorsList>(json!({})).await.unwrap()["diagnostics"],
        json!([])
    );
    std::fs::write(
        d.path("pipelines/broken.yaml"),
        "nodes:\n  - id: x\n    kind: nope\n",
    )
    .unwrap();
    let reload = c.call::<m::ConfigReload>(json!({})).await.unwrap();
    assert_eq!(reload["rejected"].as_array().unwrap().len(), 1);
    let errors = c.call::<m::ConfigErrorsList>(json!({})).await.unwrap();
    assert!(
        errors["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown node kind 'nope'")
    );
    c.call::<m::PipelinesDisable>(json!({ "name": "hello" }))
        .await
        .unwrap();
    let refused = c
        .call::<m::PipelinesTrigger>(json!({ "name": "hello" }))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::Conflict as i64);
    c.call::<m::PipelinesEnable>(json!({ "name": "hello" }))
        .await
        .unwrap();

    let audit = c
        .call::<m::AuditList>(json!({ "limit": 100 }))
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for wanted in [
        m::PipelinesTrigger::NAME,
        m::RunsCancel::NAME,
        m::RunsRetry::NAME,
        m::ConfigReload::NAME,
        m::PipelinesDisable::NAME,
        m::PipelinesEnable::NAME,
    ] {
        assert!(actions.contains(&wanted), "{wanted} audited: {actions:?}");
    }
    assert!(!actions.contains(&m::Status::NAME), "reads are not audited");
    assert_eq!(
        c.call::<m::AuditVerify>(json!({})).await.unwrap()["ok"],
        true
    );
    let unknown = c.call_unknown("runs.explode").await.unwrap_err();
    assert_eq!(code(&unknown), ErrorCode::MethodNotFound as i64);
}

fn daemon_user() -> String {
    me()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_caller_may_do() {
    let viewer = Daemon::start(&config("viewer"), &pipelines());
    let mut c = viewer.client().await;
    assert!(c.call::<m::Status>(json!({})).await.is_ok());
    assert!(c.call::<m::RunsList>(json!({})).await.is_ok());
    let e = c
        .call::<m::PipelinesTrigger>(json!({ "name": "hello" }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::PermissionDenied as i64);
    assert!(
        e.message.contains("needs the operator role"),
        "{}",
        e.message
    );
    assert_eq!(
        code(
            &c.call::<m::RunsCancel>(json!({ "id": 1 }))
                .await
                .unwrap_err()
        ),
        ErrorCode::PermissionDenied as i64
    );
    // Refused, so nothing ran, and audited: the refusals are counted in an
    // `access.denied` row (written every few seconds, in aggregate).
    let runs = c.call::<m::RunsList>(json!({})).await.unwrap();
    assert_eq!(runs["runs"], json!([]), "{runs}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let row = loop {
        let audit = c.call::<m::AuditList>(json!({})).await.unwrap();
        if let Some(row) = audit
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "access.denied")
        {
            break row.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusals did not reach the audit trail: {audit:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(row["user"], "sluiced", "{row}");
    assert_eq!(
        row["detail"],
        json!({
            "total": 2,
            "denials": [
                { "user": me(), "method": m::PipelinesTrigger::NAME, "target": "pipeline hello", "count": 1 },
                { "user": me(), "method": m::RunsCancel::NAME, "target": "run #1", "count": 1 },
            ],
        }),
        "{row}"
    );
    let verified = c.call::<m::AuditVerify>(json!({})).await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");

    let operator = Daemon::start(&config("operator"), &pipelines());
    let mut c = operator.client().await;
    assert!(
        c.call::<m::PipelinesTrigger>(json!({ "name": "hello", "wait": true }))
            .await
            .is_ok()
    );
    let e = c
        .call::<m::PipelinesDisable>(json!({ "name": "hello" }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::PermissionDenied as i64);
    assert_eq!(
        code(&c.call::<m::ConfigReload>(json!({})).await.unwrap_err()),
        ErrorCode::PermissionDenied as i64
    );

    let nobody = Daemon::start("[access]\nadmin = [\"somebody-else\"]\n", &pipelines());
    let mut c = Client::connect(&nobody.socket).await;
    let e = c.hello().await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::PermissionDenied as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_connection_survives() {
    let d = Daemon::start(&config("admin"), &pipelines());
    let mut c = Client::connect(&d.socket).await;
    // Before hello.
    let e = c.call::<m::Status>(json!({})).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::Handshake as i64);
    c.hello().await.unwrap();
    c.send_raw(b"{this is not json\n").await;
    match c.read().await {
        ServerMessage::Response(r) => {
            assert_eq!(r.error.unwrap().code, ErrorCode::ParseError as i64)
        }
        other => panic!("{other:?}"),
    }
    c.send_raw(b"{\"id\": 7, \"params\": {}}\n").await;
    match c.read().await {
        ServerMessage::Response(r) => {
            assert_eq!(r.id, json!(7));
            assert_eq!(r.error.unwrap().code, ErrorCode::InvalidRequest as i64);
        }
        other => panic!("{other:?}"),
    }
    let mut big = vec![b'x'; 2 * 1024 * 1024];
    big.push(b'\n');
    c.send_raw(&big).await;
    match c.read().await {
        ServerMessage::Response(r) => {
            assert_eq!(r.error.unwrap().code, ErrorCode::FrameTooLarge as i64)
        }
        other => panic!("{other:?}"),
    }
    assert!(
        c.call::<m::Status>(json!({})).await.is_ok(),
        "the connection still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_protocol_major_is_refused_clearly() {
    let d = Daemon::start(&config("admin"), &pipelines());
    let mut c = Client::connect(&d.socket).await;
    let e = c
        .call::<m::Hello>(json!({ "protocol": "2.0", "client": "future" }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::Handshake as i64);
    assert!(
        e.message.contains(&format!(
            "speaks protocol {}, not 2.0",
            sluice_shared::protocol::protocol_version()
        )),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_stream_events_and_a_reader_that_stops_cannot_stall_the_daemon() {
    let d = Daemon::start(&config("admin"), &pipelines());
    // A subscriber that never reads again.
    let mut stuck = d.client().await;
    stuck.call::<m::Subscribe>(json!({})).await.unwrap();
    // A subscriber of one run that does read.
    let mut c = d.client().await;
    let run = c
        .call::<m::PipelinesTrigger>(json!({ "name": "chatty" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let sub = c.call::<m::Subscribe>(json!({ "run": run })).await.unwrap();
    assert!(sub["subscription"].as_u64().is_some());
    // 10,000 log events flow; the daemon keeps answering another client quickly.
    let mut other = d.client().await;
    let started = std::time::Instant::now();
    loop {
        let s = other.call::<m::Status>(json!({})).await.unwrap();
        let detail = other
            .call::<m::RunsGet>(json!({ "id": run }))
            .await
            .unwrap();
        if detail["state"] == "succeeded" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run did not finish: {s}"
        );
    }
    // The reading subscriber sees the run finish (or is told it lagged).
    let mut finished = false;
    let mut lagged = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !finished && !lagged && std::time::Instant::now() < deadline {
        let n = c.notification().await;
        match n.method.as_str() {
            notice::LAGGED => lagged = true,
            notice::EVENT => {
                if n.params["event"]["type"] == "run_state"
                    && n.params["event"]["state"] == "succeeded"
                {
                    finished = true;
                }
            }
            other => panic!("unexpected notification {other}"),
        }
    }
    assert!(
        finished || lagged,
        "the subscriber saw the end or was told to resynchronise"
    );
    assert!(
        c.call::<m::Unsubscribe>(json!({ "subscription": sub["subscription"] }))
            .await
            .unwrap()
            .as_bool()
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_a_restart_and_stale_sockets_are_replaced() {
    let mut d = Daemon::start(&config("admin"), &pipelines());
    let mut c = d.client().await;
    c.call::<m::PipelinesTrigger>(json!({ "name": "hello", "wait": true }))
        .await
        .unwrap();
    d.kill();
    assert!(d.socket.exists(), "SIGKILL leaves the socket file behind");
    d.spawn();
    let mut c = d.client().await;
    let runs = c.call::<m::RunsList>(json!({})).await.unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    // A live socket is never taken over: a second daemon on it refuses to start.
    let out = common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluiced"))
            .arg("--state-dir")
            .arg(d.path("other-state"))
            .arg("--socket")
            .arg(&d.socket)
            .arg("--pipelines")
            .arg(d.path("pipelines")),
        60,
        "a second sluiced on a live socket",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already listening"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.call::<m::Status>(json!({})).await.is_ok());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_triggers_follow_the_overlap_policy_and_schedules_can_be_paused() {
    let single = "concurrency: { max_runs: 1, on_overlap: skip }\nnodes:\n  - id: wait\n    kind: shell\n    run: sleep 1000\n";
    let nightly = "triggers:\n  - cron: \"0 3 * * *\"\n    timezone: Europe/Berlin\nnodes:\n  - id: a\n    kind: shell\n    run: echo\n";
    let d = Daemon::start(
        &config("admin"),
        &[("single.yaml", single), ("nightly.yaml", nightly)],
    );
    let mut c = d.client().await;
    let first = c
        .call::<m::PipelinesTrigger>(json!({ "name": "single" }))
        .await
        .unwrap();
    let second = c
        .call::<m::PipelinesTrigger>(json!({ "name": "single" }))
        .await
        .unwrap_err();
    assert_eq!(code(&second), ErrorCode::Conflict as i64);
    assert!(
        second.message.contains("on_overlap: skip"),
        "{}",
        second.message
    );
    c.call::<m::RunsCancel>(json!({ "id": first["run"] }))
        .await
        .unwrap();

    let list = c.call::<m::SchedulesList>(json!({})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["pipeline"], "nightly");
    assert_eq!(list[0]["paused"], false);
    assert!(
        list[0]["next"]
            .as_str()
            .unwrap()
            .contains("T03:00:00+01:00")
            || list[0]["next"]
                .as_str()
                .unwrap()
                .contains("T03:00:00+02:00")
    );
    let paused = c
        .call::<m::SchedulesPause>(json!({ "pipeline": "nightly" }))
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    let list = c.call::<m::SchedulesList>(json!({})).await.unwrap();
    assert_eq!(list[0]["paused"], true);
    c.call::<m::SchedulesResume>(json!({ "pipeline": "nightly" }))
        .await
        .unwrap();
    assert_eq!(
        c.call::<m::SchedulesList>(json!({})).await.unwrap()[0]["paused"],
        false
    );
    let none = c
        .call::<m::SchedulesPause>(json!({ "pipeline": "single" }))
        .await
        .unwrap_err();
    assert_eq!(code(&none), ErrorCode::NotFound as i64);
    assert!(
        c.call::<m::MisfiresList>(json!({}))
            .await
            .unwrap()
            .as_array()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_calls_name_their_target_and_unknown_pipelines() {
    let nightly =
        "triggers:\n  - cron: \"0 3 * * *\"\nnodes:\n  - id: a\n    kind: shell\n    run: echo\n";
    let d = Daemon::start(&config("admin"), &[("nightly.yaml", nightly)]);
    let mut c = d.client().await;
    let e = c
        .call::<m::SchedulesPause>(json!({ "pipeline": "nightlly" }))
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::NotFound as i64);
    assert!(
        e.message.contains("did you mean 'nightly'?"),
        "{}",
        e.message
    );
    c.call::<m::SchedulesPause>(json!({ "pipeline": "nightly" }))
        .await
        .unwrap();
    let list = c.call::<m::PipelinesList>(json!({})).await.unwrap();
    assert!(
        list[0]["next_fire"].is_null(),
        "a paused schedule has no next fire: {list}"
    );
    let audit = c.call::<m::AuditList>(json!({ "limit": 1 })).await.unwrap();
    assert_eq!(audit[0]["action"], m::SchedulesPause::NAME);
    assert_eq!(audit[0]["target"], "pipeline nightly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_over_the_socket_and_audited() {
    const GATED: &str = "nodes:\n  - id: gate\n    kind: approval\n    message: Go?\n    allow_self_approval: true\n  - id: after\n    kind: shell\n    needs: [gate]\n    run: echo approved\n";
    const STRICT: &str =
        "nodes:\n  - id: gate\n    kind: approval\n    approvers: [somebody-else, \"@nobody\"]\n";
    let d = Daemon::start(
        &config("operator"),
        &[("gated.yaml", GATED), ("strict.yaml", STRICT)],
    );
    let mut c = d.client().await;
    let run = c
        .call::<m::PipelinesTrigger>(json!({ "name": "gated" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let approval = eventually(20, "the approval to be listed", || async {
        let mut c = d.client().await;
        let list = c.call::<m::ApprovalsList>(json!({})).await.unwrap();
        list.as_array()
            .and_then(|l| l.iter().find(|a| a["run"] == run).cloned())
    })
    .await;
    assert_eq!(approval["state"], "pending");
    assert_eq!(approval["message"], "Go?");
    assert_eq!(approval["requested_by"], me());
    let id = approval["id"].as_i64().unwrap();

    let decided = c
        .call::<m::ApprovalsDecide>(json!({ "id": id, "approve": true, "reason": "ship it" }))
        .await
        .unwrap();
    assert_eq!(decided["decided"], true);
    assert_eq!(decided["approval"]["decided_by"], me());
    eventually(20, "the approved run to succeed", || async {
        let mut c = d.client().await;
        let r = c.call::<m::RunsGet>(json!({ "id": run })).await.unwrap();
        (r["state"] == "succeeded").then_some(())
    })
    .await;
    let again = c
        .call::<m::ApprovalsDecide>(json!({ "id": id, "approve": true }))
        .await
        .unwrap_err();
    assert_eq!(code(&again), ErrorCode::Conflict as i64);
    assert!(
        again.message.contains("already approved by"),
        "{}",
        again.message
    );
    let audit = c
        .call::<m::AuditList>(json!({ "limit": 10 }))
        .await
        .unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == m::ApprovalsDecide::NAME
                && a["target"] == format!("approval #{id}")
                && a["user"] == me()),
        "{audit:#}"
    );

    // Not on the approvers list: refused with the list named.
    let strict = c
        .call::<m::PipelinesTrigger>(json!({ "name": "strict" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let approval = eventually(20, "the strict approval to be listed", || async {
        let mut c = d.client().await;
        let list = c.call::<m::ApprovalsList>(json!({})).await.unwrap();
        list.as_array()
            .and_then(|l| l.iter().find(|a| a["run"] == strict).cloned())
    })
    .await;
    let refused = c
        .call::<m::ApprovalsDecide>(
            json!({ "id": approval["id"], "approve": false, "reason": "no" }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::PermissionDenied as i64);
    assert!(
        refused.message.contains("somebody-else, @nobody"),
        "{}",
        refused.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_an_idempotency_key_is_applied_once() {
    let d = Daemon::start(&config("operator"), &pipelines());
    let mut c = d.client().await;
    let params = json!({ "name": "hello", "idempotency_key": "console-1-7" });
    let first = c.call::<m::PipelinesTrigger>(params.clone()).await.unwrap();
    // A resend after a lost reply, from another connection.
    let mut other = d.client().await;
    let again = other.call::<m::PipelinesTrigger>(params).await.unwrap();
    assert_eq!(first["run"], again["run"]);
    let runs = c
        .call::<m::RunsList>(json!({ "pipeline": "hello" }))
        .await
        .unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs:#}");
    // Another key is another call; a bad key is refused.
    let second = c
        .call::<m::PipelinesTrigger>(json!({ "name": "hello", "idempotency_key": "console-1-8" }))
        .await
        .unwrap();
    assert_ne!(second["run"], first["run"]);
    let bad = c
        .call::<m::PipelinesTrigger>(json!({ "name": "hello", "idempotency_key": "" }))
        .await
        .unwrap_err();
    assert_eq!(code(&bad), ErrorCode::InvalidParams as i64);
    // The same key for another request is refused, not answered with the first reply.
    let reused = c
        .call::<m::PipelinesTrigger>(
            json!({ "name": "hello", "inputs": { "x": 1 }, "idempotency_key": "console-1-7" }),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&reused), ErrorCode::InvalidParams as i64);
    let audit = c
        .call::<m::AuditList>(json!({ "limit": 100 }))
        .await
        .unwrap();
    let triggers = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == m::PipelinesTrigger::NAME)
        .count();
    assert_eq!(triggers, 2, "one audit row per applied call");
}
