//! The webhook listener with a real HTTP client (reqwest) against the real
//! listener on 127.0.0.1:0, a real engine and a temp SQLite store.

mod common;
mod triggers_env;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_daemon::triggers::cron::ManualClock;
use sluice_daemon::triggers::webhook::{
    WebhookOptions, WebhookState, hmac_key, serve, sign_standard_webhook,
};
use sluice_shared::run::{RunState, TriggerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use triggers_env::Env;

const KEY_NEW: &str = "whsec_c2x1aWNlLXRlc3Qta2V5LW5ldy0xMjM0NTY3ODkw";
const KEY_OLD: &str = "whsec_c2x1aWNlLXRlc3Qta2V5LW9sZC0wOTg3NjU0MzIx";
/// The published Standard Webhooks test vector's secret.
const VECTOR_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const SIGNED: &str = r#"
inputs:
  n: { type: integer, default: 1 }
  who: { type: string, default: nobody }
triggers:
  - webhook: { auth: hmac, secret: [hook_new, hook_old] }
nodes:
  - id: echo
    kind: transform
    output: { n: "{{ inputs.n }}", who: "{{ inputs.who }}", kind: "{{ trigger.kind }}" }
"#;

const VECTOR: &str = r#"
triggers:
  - webhook: { auth: hmac, secret: vector_key }
nodes:
  - id: a
    kind: transform
    output: { ok: true }
"#;

const BEARER: &str = r#"
triggers:
  - webhook: { auth: bearer, secret: tok, user: ci }
nodes:
  - id: a
    kind: transform
    output: { ok: true }
"#;

const OPEN: &str = r#"
inputs:
  count: { type: integer }
triggers:
  - webhook: { auth: none }
nodes:
  - id: a
    kind: transform
    output: { count: "{{ inputs.count }}" }
"#;

const SLOW: &str = r#"
triggers:
  - webhook: { auth: none }
nodes:
  - id: wait
    kind: shell
    run: sleep 5
"#;

const CRON_ONLY: &str = r#"
triggers:
  - cron: "0 7 * * *"
    timezone: UTC
nodes:
  - id: a
    kind: transform
    output: { ok: true }
"#;

struct Hook {
    env: Env,
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
    state: WebhookState,
}

async fn start(opts: WebhookOptions, clock: Option<Arc<ManualClock>>) -> Hook {
    let secrets = BTreeMap::from([
        ("hook_new".to_owned(), KEY_NEW.to_owned()),
        ("hook_old".to_owned(), KEY_OLD.to_owned()),
        ("vector_key".to_owned(), VECTOR_KEY.to_owned()),
        ("tok".to_owned(), "s3cret-token-value".to_owned()),
    ]);
    let env = Env::new(
        &[
            ("signed.yaml", SIGNED),
            ("vector.yaml", VECTOR),
            ("bearer.yaml", BEARER),
            ("open.yaml", OPEN),
            ("off.yaml", OPEN),
            ("slow.yaml", SLOW),
            ("cronly.yaml", CRON_ONLY),
        ],
        secrets,
    )
    .await;
    assert!(
        env.registry.errors().is_empty(),
        "{:#?}",
        env.registry.errors()
    );
    env.registry.set_enabled("off", false, None).await.unwrap();
    let stop = CancellationToken::new();
    let mut state = WebhookState::new(
        env.triggers.clone(),
        env.secrets.clone(),
        opts,
        stop.clone(),
    );
    if let Some(c) = clock {
        state = state.with_clock(c);
    }
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, state.clone(), stop.clone()));
    Hook {
        env,
        base: format!("http://{addr}"),
        client: common::http_client(),
        stop,
        state,
    }
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Hook {
    fn post(&self, pipeline: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}/hooks/{pipeline}", self.base))
    }

    fn signed(
        &self,
        pipeline: &str,
        key: &str,
        id: &str,
        ts: i64,
        body: &str,
    ) -> reqwest::RequestBuilder {
        let sig = sign_standard_webhook(&hmac_key(key).unwrap(), id, ts, body.as_bytes());
        self.post(pipeline)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_owned())
    }

    async fn runs(&self, pipeline: &str) -> usize {
        self.env
            .store
            .runs(Some(pipeline), 10_000)
            .await
            .unwrap()
            .len()
    }
}

async fn status_and_json(r: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn every_status_code() {
    let h = start(
        WebhookOptions {
            max_body: 2048,
            ..WebhookOptions::default()
        },
        None,
    )
    .await;
    let get = |path: &str| h.client.get(format!("{}{path}", h.base));
    assert_eq!(get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(get("/readyz").send().await.unwrap().status(), 200);

    let (s, b) = status_and_json(h.post("nope").json(&json!({}))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("unknown pipeline 'nope'"))
    );
    let (s, b) = status_and_json(h.post("cronly").json(&json!({}))).await;
    assert_eq!(s, 404, "{b}");
    assert!(b["error"].as_str().unwrap().contains("no webhook trigger"));

    let (s, b) = status_and_json(
        h.post("open")
            .header("content-type", "text/plain")
            .body("hi"),
    )
    .await;
    assert_eq!(s, 415, "{b}");
    let big = format!("{{\"count\": 1, \"pad\": \"{}\"}}", "x".repeat(4096));
    let (s, b) = status_and_json(
        h.post("open")
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("2048 bytes"), "{b}");

    let (s, b) = status_and_json(
        h.post("open")
            .header("content-type", "application/json")
            .body("{\"count\": "),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON body"),
        "{b}"
    );
    let (s, b) = status_and_json(h.post("open").json(&json!({"count": "three"}))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("input 'count' must be an integer"))
    );
    let (s, b) = status_and_json(h.post("open").json(&json!({"other": 1}))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("required input 'count' is missing"))
    );
    let (s, b) = status_and_json(
        h.post("open")
            .query(&[("wait", "10m")])
            .json(&json!({"count": 1})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("maximum of 5m"),
        "{b}"
    );

    let (s, _) = status_and_json(h.post("signed").json(&json!({}))).await;
    assert_eq!(s, 401, "no signature at all");
    let (s, b) = status_and_json(
        h.post("signed")
            .header("webhook-id", "msg_x")
            .header("webhook-timestamp", now_secs().to_string())
            .header(
                "webhook-signature",
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            )
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (403, Some("the signature does not match"))
    );
    let (s, _) = status_and_json(h.post("bearer").json(&json!({}))).await;
    assert_eq!(s, 401);
    let (s, _) = status_and_json(h.post("bearer").bearer_auth("wrong").json(&json!({}))).await;
    assert_eq!(s, 403);

    let (s, b) = status_and_json(h.post("off").json(&json!({"count": 1}))).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (409, Some("pipeline 'off' is disabled"))
    );

    assert_eq!(
        h.runs("open").await + h.runs("signed").await,
        0,
        "no refused request made a run"
    );

    let (s, b) = status_and_json(
        h.post("bearer")
            .bearer_auth("s3cret-token-value")
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let run = sluice_shared::run::RunId(b["run"].as_i64().unwrap());
    let record = h.env.store.run(run).await.unwrap().unwrap();
    assert_eq!(record.trigger.kind, TriggerKind::Webhook);
    assert_eq!(record.trigger.user.as_deref(), Some("ci"));
    assert!(
        record.trigger.details["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(record.trigger.details["request_id"].is_string());
    assert!(
        record.trigger.details["headers"]
            .get("authorization")
            .is_none(),
        "credentials are not stored"
    );

    // An empty body without a content type is a trigger without data.
    let (s, b) = status_and_json(h.post("bearer").bearer_auth("s3cret-token-value")).await;
    assert_eq!(s, 202, "{b}");

    h.stop.cancel();
    h.state.set_ready(false);
}

#[tokio::test]
async fn hmac_good_bad_stale_rotated_and_replayed() {
    let h = start(WebhookOptions::default(), None).await;
    let body = r#"{"n": 7, "who": "alice", "extra": [1, 2]}"#;
    let now = now_secs();

    let (s, b) = status_and_json(h.signed("signed", KEY_NEW, "msg_good", now, body)).await;
    assert_eq!(s, 202, "{b}");
    let run = sluice_shared::run::RunId(b["run"].as_i64().unwrap());
    let record = common::finished(&h.env.engine, run).await;
    assert_eq!(record.state, RunState::Succeeded);
    assert_eq!(
        record.inputs,
        json!({"n": 7, "who": "alice"}),
        "declared inputs only"
    );
    assert_eq!(record.trigger.details["body"]["extra"], json!([1, 2]));
    assert_eq!(record.trigger.details["request_id"], "msg_good");
    let out = &h.env.store.nodes(run).await.unwrap()[0];
    assert_eq!(out.output.as_ref().unwrap()["who"], "alice");

    // The old key of a rotation still verifies.
    let (s, _) = status_and_json(h.signed("signed", KEY_OLD, "msg_old_key", now, body)).await;
    assert_eq!(s, 202);
    // A signature made with another key, or over another body, does not.
    let (s, _) = status_and_json(h.signed(
        "signed",
        "whsec_b3RoZXIta2V5LW90aGVyLWtleQ==",
        "msg_bad",
        now,
        body,
    ))
    .await;
    assert_eq!(s, 403);
    let sig = sign_standard_webhook(
        &hmac_key(KEY_NEW).unwrap(),
        "msg_tamper",
        now,
        body.as_bytes(),
    );
    let (s, _) = status_and_json(
        h.post("signed")
            .header("content-type", "application/json")
            .header("webhook-id", "msg_tamper")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", sig)
            .body(body.replace('7', "8")),
    )
    .await;
    assert_eq!(s, 403);

    // ±299 s is accepted, ±301 s refused.
    for (offset, expect) in [(299, 202), (-299, 202), (301, 403), (-301, 403)] {
        let id = format!("msg_skew_{offset}");
        let (s, b) =
            status_and_json(h.signed("signed", KEY_NEW, &id, now_secs() + offset, body)).await;
        assert_eq!(s, expect, "offset {offset}: {b}");
    }
    let before = h.runs("signed").await;
    // A replay of an accepted delivery names the same run and makes none.
    let (s, b) = status_and_json(h.signed("signed", KEY_NEW, "msg_good", now, body)).await;
    assert_eq!(
        (s, b["run"].as_i64(), b["duplicate"].as_bool()),
        (202, Some(run.0), Some(true))
    );
    assert_eq!(h.runs("signed").await, before);
    h.stop.cancel();
}

#[tokio::test]
async fn published_standard_webhooks_vector_is_accepted_at_its_time() {
    // The vector is from 2021: checked at its own timestamp it verifies; now it is stale.
    let clock = ManualClock::new(jiff::Timestamp::from_second(1614265330).unwrap());
    let h = start(WebhookOptions::default(), Some(clock)).await;
    let send = |h: &Hook| {
        h.post("vector")
            .header("content-type", "application/json")
            .header("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
            .header("webhook-timestamp", "1614265330")
            .header(
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            )
            .body(r#"{"test": 2432232314}"#)
    };
    let (s, b) = status_and_json(send(&h)).await;
    assert_eq!(s, 202, "{b}");
    h.stop.cancel();

    let h = start(WebhookOptions::default(), None).await;
    let (s, b) = status_and_json(send(&h)).await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("tolerance 300s"),
        "{b}"
    );
    h.stop.cancel();
}

#[tokio::test]
async fn the_same_delivery_sent_100_times_at_once_makes_one_run() {
    let h = Arc::new(start(WebhookOptions::default(), None).await);
    let body = r#"{"n": 3}"#;
    let ts = now_secs();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let h = Arc::clone(&h);
        tasks.spawn(async move {
            let (s, b) =
                status_and_json(h.signed("signed", KEY_NEW, "msg_same_delivery", ts, body)).await;
            assert_eq!(s, 202, "{b}");
            b["run"].as_i64().expect("every response names the run")
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.push(r.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(h.runs("signed").await, 1);

    // Idempotency-Key works for unsigned hooks too and wins over webhook-id.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (s, b) = status_and_json(
            h.post("open")
                .header("Idempotency-Key", "order-42")
                .json(&json!({"count": 1})),
        )
        .await;
        assert_eq!(s, 202);
        runs.push(b["run"].as_i64().unwrap());
    }
    runs.dedup();
    assert_eq!(runs.len(), 1);
    assert_eq!(h.runs("open").await, 1);
    let counters = h.env.triggers.counters().snapshot();
    assert_eq!(counters.webhook_accepted, 2);
    assert_eq!(counters.webhook_duplicates, 101);
    h.stop.cancel();
}

#[tokio::test]
async fn wait_replies_with_the_result() {
    let h = start(WebhookOptions::default(), None).await;
    let (s, b) = status_and_json(
        h.post("open")
            .query(&[("wait", "20s")])
            .json(&json!({"count": 5})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "succeeded");
    assert_eq!(b["finished"], true);
    assert_eq!(b["outputs"]["a"]["count"], 5);
    // The 200 carries the request id as the 202 does (the sender's, when it gave one).
    assert!(
        b["request_id"].as_str().is_some_and(|r| r.len() == 32),
        "{b}"
    );
    let (s, b) = status_and_json(
        h.post("open")
            .query(&[("wait", "20s")])
            .header("x-request-id", "req-42")
            .json(&json!({"count": 6})),
    )
    .await;
    assert_eq!((s, &b["request_id"]), (200, &json!("req-42")), "{b}");

    // A run that takes longer than the wait: 202 with its current state.
    let (s, b) = status_and_json(h.post("slow").query(&[("wait", "200ms")])).await;
    assert_eq!(s, 202, "{b}");
    assert!(b["request_id"].is_string(), "{b}");
    assert_eq!(b["finished"], false);
    assert_eq!(b["state"], "running");
    let run = sluice_shared::run::RunId(b["run"].as_i64().unwrap());
    h.env.engine.cancel(run).await.unwrap();
    h.stop.cancel();
}

/// 500 clients that trickle headers cannot starve signed deliveries, and are cut off.
#[tokio::test]
async fn idle_connections_do_not_starve_deliveries() {
    let h = start(
        WebhookOptions {
            header_timeout: Duration::from_secs(2),
            // Every client here is 127.0.0.1: only the global cap is under test.
            max_per_peer: 1024,
            ..WebhookOptions::default()
        },
        None,
    )
    .await;
    let addr: SocketAddr = h.base.trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..500 {
        let mut s = common::within(
            10,
            "an idle connection to the listener",
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .unwrap();
        common::within(
            10,
            "an idle connection's partial request to be taken",
            s.write_all(b"POST /hooks/signed HTTP/1.1\r\nHost: x\r\n"),
        )
        .await
        .unwrap();
        idle.push(s);
    }
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let (s, b) = status_and_json(h.signed(
            "signed",
            KEY_NEW,
            &format!("msg_busy_{i}"),
            now_secs(),
            "{}",
        ))
        .await;
        assert_eq!(s, 202, "{b}");
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "slowest delivery took {worst:?}"
    );
    // Each stalled connection is closed by the header timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut s in idle {
        let mut buf = [0u8; 256];
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, s.read(&mut buf)).await;
        match r {
            Ok(Ok(_)) | Ok(Err(_)) => {}
            Err(_) => panic!("a stalled connection was still open after the header timeout"),
        }
    }
    eprintln!("with 500 stalled connections: slowest of 20 signed deliveries {worst:?}");
    h.stop.cancel();
}

#[test]
fn base64_of_test_keys_is_valid() {
    for k in [KEY_NEW, KEY_OLD, VECTOR_KEY] {
        assert!(
            base64::engine::general_purpose::STANDARD
                .decode(k.trim_start_matches("whsec_"))
                .is_ok()
        );
    }
}
