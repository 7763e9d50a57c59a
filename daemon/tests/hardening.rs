//! Security hardening (issue #14) against the real `sluiced` binary: real
//! HTTP to its webhook listener, its socket, its store read back directly
//! (the SQLite file, or every row of its PostgreSQL database), restarts and
//! offline tampering.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use common::eventually;
use daemon::Client;
use serde_json::{Value, json};
use sluice_daemon::triggers::webhook::{hmac_key, sign_standard_webhook};
use sluice_shared::method::{self as m, Method as _};
use sluice_shared::protocol::ErrorCode;

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

/// A 30-byte HMAC key in Standard Webhooks form.
fn good_key() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode("sluice-hardening-test-key-0001")
    )
}

/// `sluiced` on a temp directory with a secrets file and a known HTTP port.
struct Sluiced {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    port: u16,
    /// Where the store lives (dropped after the process is killed).
    backend: common::Backend,
}

impl Sluiced {
    /// Writes everything; does not start the process.
    fn prepare(extra_config: &str, secrets: &str, pipelines: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("pipelines");
        std::fs::create_dir_all(&pdir).unwrap();
        for (name, text) in pipelines {
            let path = pdir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let secrets_path = dir.path().join("secrets.toml");
        std::fs::write(&secrets_path, secrets).unwrap();
        std::fs::set_permissions(&secrets_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "[paths]\nsecrets = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[access]\nadmin = [\"{}\"]\n\n{extra_config}\n",
            secrets_path.display(),
            me()
        );
        let backend = common::Backend::new_blocking();
        std::fs::write(
            dir.path().join("sluiced.toml"),
            backend.with_config(&config),
        )
        .unwrap();
        let socket = dir.path().join("sluice.sock");
        Self {
            dir,
            child: None,
            socket,
            port,
            backend,
        }
    }

    fn start(extra_config: &str, secrets: &str, pipelines: &[(&str, String)]) -> Self {
        let mut d = Self::prepare(extra_config, secrets, pipelines);
        d.spawn()
            .unwrap_or_else(|e| panic!("sluiced did not start:\n{e}"));
        d
    }

    fn command(&self) -> Command {
        let p = |rel: &str| self.dir.path().join(rel);
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluiced"));
        c.arg("--config")
            .arg(p("sluiced.toml"))
            .arg("--state-dir")
            .arg(p("state"))
            .arg("--pipelines")
            .arg(p("pipelines"))
            .arg("--socket")
            .arg(&self.socket)
            .env("SLUICE_LOG", "warn")
            .env_remove("CREDENTIALS_DIRECTORY");
        c
    }

    /// Starts the process; on failure returns everything it wrote to stderr.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = self
            .command()
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("sluiced: ready") => break,
                Some(Ok(line)) => seen.push(line),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(seen.join("\n"));
                }
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM and wait: the store is closed cleanly.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    async fn client(&self) -> Client {
        let mut c = Client::connect(&self.socket).await;
        c.hello().await.unwrap();
        c
    }

    fn url(&self, pipeline: &str) -> String {
        format!("http://127.0.0.1:{}/hooks/{pipeline}", self.port)
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state").join("sluice.db")
    }

    /// Every byte the store holds (database and WAL files, or every row), for grepping.
    async fn stored_bytes(&self) -> Vec<u8> {
        self.backend.stored_bytes(&self.db()).await
    }
}

impl Drop for Sluiced {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn runs_of(c: &mut Client, pipeline: &str) -> Vec<Value> {
    let page = c
        .call::<m::RunsList>(json!({ "pipeline": pipeline, "limit": 100 }))
        .await
        .unwrap();
    page["runs"].as_array().cloned().unwrap_or_default()
}

async fn wait_finished(c: &mut Client, run: i64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = c.call::<m::RunsGet>(json!({ "id": run })).await.unwrap();
        let state = r["state"].as_str().unwrap_or_default().to_owned();
        if ["succeeded", "failed", "cancelled"].contains(&state.as_str()) {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {run} did not finish: {r}"
        );
        // Wait for the next change instead of polling blindly.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), c.notification()).await;
    }
}

/// The pending approval of `run`.
async fn pending_approval(c: &mut Client, run: i64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = c
            .call::<m::ApprovalsList>(json!({ "pending": true }))
            .await
            .unwrap();
        if let Some(a) = list
            .as_array()
            .and_then(|l| l.iter().find(|a| a["run"] == run).cloned())
        {
            return a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {run} never asked for approval: {list}"
        );
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), c.notification()).await;
    }
}

const SIGNED: &str = "triggers:\n  - webhook: { auth: hmac, secret: hook_key }\nnodes:\n  - { id: a, kind: transform, output: { ok: true } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_replayed_with_new_idempotency_keys_makes_one_run() {
    let d = Sluiced::start(
        "",
        &format!("hook_key = \"{}\"\n", good_key()),
        &[("signed.yaml", SIGNED.to_owned())],
    );
    let key = hmac_key(&good_key()).unwrap();
    let body = r#"{"n": 1}"#;
    let ts = now_secs();
    let sig = sign_standard_webhook(&key, "msg_replayed", ts, body.as_bytes());
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = http
            .post(d.url("signed"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_replayed")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", &sig)
            .header("Idempotency-Key", format!("attacker-{i}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["duplicate"], i > 0, "{b}");
        ids.push(b["run"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one delivery, one run: {ids:?}");
    let mut c = d.client().await;
    let runs = runs_of(&mut c, "signed").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0]["trigger"]["details"]["delivery_key"], "msg_replayed",
        "the signed id is the key"
    );
    // A new signed id is a new delivery.
    let sig2 = sign_standard_webhook(&key, "msg_other", ts, body.as_bytes());
    let r = http
        .post(d.url("signed"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_other")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", &sig2)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(runs_of(&mut c, "signed").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_short_webhook_secrets_never_authenticate() {
    let empty = "triggers:\n  - webhook: { auth: hmac, secret: empty_key }\nnodes:\n  - { id: a, kind: transform, output: { ok: true } }\n";
    let short = "triggers:\n  - webhook: { auth: bearer, secret: short_tok }\nnodes:\n  - { id: a, kind: transform, output: { ok: true } }\n";
    let d = Sluiced::start(
        "",
        "empty_key = \"whsec_\"\nshort_tok = \"short-token\"\n",
        &[
            ("empty.yaml", empty.to_owned()),
            ("short.yaml", short.to_owned()),
        ],
    );
    let mut c = d.client().await;
    let errors = c.call::<m::ConfigErrorsList>(json!({})).await.unwrap();
    let diags = errors["diagnostics"].as_array().unwrap();
    for (secret, file) in [("empty_key", "empty.yaml"), ("short_tok", "short.yaml")] {
        let d = diags
            .iter()
            .find(|d| {
                d["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("secret '{secret}'")))
            })
            .unwrap_or_else(|| panic!("no config error names {secret}: {errors}"));
        assert_eq!(d["severity"], "error", "{d}");
        assert!(d["file"].as_str().unwrap().ends_with(file), "{d}");
        assert!(d["message"].as_str().unwrap().contains("16"), "{d}");
        assert!(
            !d.to_string().contains("short-token"),
            "never the value: {d}"
        );
    }

    // A delivery signed with the empty key, exactly as a forger would make it.
    let body = "{}";
    let ts = now_secs();
    let sig = sign_standard_webhook(b"", "msg_forged", ts, body.as_bytes());
    let http = reqwest::Client::new();
    let r = http
        .post(d.url("empty"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["error"].as_str().unwrap().contains("empty_key"),
        "says which secret: {b}"
    );
    let r = http
        .post(d.url("short"))
        .bearer_auth("short-token")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A short `slk_` token is not a user token either.
    let r = http
        .post(d.url("short"))
        .bearer_auth("slk_abc")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(runs_of(&mut c, "empty").await.is_empty());
    assert!(runs_of(&mut c, "short").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_too_short_to_mask_stops_the_start_with_a_clear_error() {
    let mut d = Sluiced::prepare(
        "",
        "fine = \"long-enough-value\"\npin = \"x9z\"\n",
        &[("signed.yaml", SIGNED.to_owned())],
    );
    let err = d.spawn().expect_err("sluiced must refuse to start");
    assert!(
        err.contains("secret 'pin'") && err.contains("at least 4"),
        "{err}"
    );
    assert!(!err.contains("x9z"), "never the value: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_respect_disabled_and_removed_pipelines_and_the_limits() {
    let failing = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - { id: a, kind: shell, run: \"exit 3\" }\n";
    let d = Sluiced::start(
        "[limits.default]\nrate = \"1/min\"\nburst = 3\ndaily_runs = 100\n",
        "",
        &[
            ("flaky.yaml", failing.to_owned()),
            ("gone.yaml", failing.to_owned()),
        ],
    );
    let mut c = d.client().await;
    c.call::<m::Subscribe>(json!({})).await.unwrap();
    let first = c
        .call::<m::PipelinesTrigger>(json!({ "name": "flaky" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(wait_finished(&mut c, first).await, "failed");

    // Disabled: refused with the reason, nothing created.
    c.call::<m::PipelinesDisable>(json!({ "name": "flaky" }))
        .await
        .unwrap();
    for mode in ["failed", "all"] {
        let e = c
            .call::<m::RunsRetry>(json!({ "id": first, "mode": mode }))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Refused as i64, "{e:?}");
        assert!(e.message.contains("disabled"), "{e:?}");
    }
    assert_eq!(runs_of(&mut c, "flaky").await.len(), 1);
    c.call::<m::PipelinesEnable>(json!({ "name": "flaky" }))
        .await
        .unwrap();

    // The rate: 3 tokens; the trigger spent one, two retries pass, the third is refused.
    for _ in 0..2 {
        let r = c
            .call::<m::RunsRetry>(json!({ "id": first, "mode": "all" }))
            .await
            .unwrap();
        assert_eq!(r["retry_of"], first);
    }
    let e = c
        .call::<m::RunsRetry>(json!({ "id": first, "mode": "all" }))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Refused as i64, "{e:?}");
    assert_eq!(e.data.as_ref().unwrap()["limit"], "rate", "{e:?}");
    assert_eq!(runs_of(&mut c, "flaky").await.len(), 3);

    // Removed: the file is gone.
    let gone_run = {
        // The rate is spent for this user; the webhook runs as nobody in particular.
        let r = reqwest::Client::new()
            .post(d.url("gone"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["run"].as_i64().unwrap()
    };
    assert_eq!(wait_finished(&mut c, gone_run).await, "failed");
    std::fs::remove_file(d.dir.path().join("pipelines/gone.yaml")).unwrap();
    c.call::<m::ConfigReload>(json!({})).await.unwrap();
    let e = c
        .call::<m::RunsRetry>(json!({ "id": gone_run }))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound as i64, "{e:?}");
    assert!(e.message.contains("removed"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_charged_to_the_daily_run_cap() {
    let failing = "nodes:\n  - { id: a, kind: shell, run: \"exit 3\" }\n";
    let d = Sluiced::start(
        "[limits.default]\ndaily_runs = 2\n",
        "",
        &[("flaky.yaml", failing.to_owned())],
    );
    let mut c = d.client().await;
    c.call::<m::Subscribe>(json!({})).await.unwrap();
    let first = c
        .call::<m::PipelinesTrigger>(json!({ "name": "flaky" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(wait_finished(&mut c, first).await, "failed");
    c.call::<m::RunsRetry>(json!({ "id": first }))
        .await
        .unwrap();
    let e = c
        .call::<m::RunsRetry>(json!({ "id": first }))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Refused as i64, "{e:?}");
    assert_eq!(e.data.as_ref().unwrap()["limit"], "daily_runs", "{e:?}");
    let usage = c
        .call::<m::LimitsUsage>(json!({ "user": me() }))
        .await
        .unwrap();
    assert_eq!(usage["users"][0]["daily_runs"], 2, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_run_asks_for_approval_again() {
    // The socket user triggers and approves: self-approval is allowed here on purpose.
    let gated = "nodes:\n  - id: gate\n    kind: approval\n    allow_self_approval: true\n  - id: work\n    kind: shell\n    needs: [gate]\n    run: \"exit 3\"\n";
    let d = Sluiced::start("", "", &[("gated.yaml", gated.to_owned())]);
    let mut c = d.client().await;
    c.call::<m::Subscribe>(json!({})).await.unwrap();
    let first = c
        .call::<m::PipelinesTrigger>(json!({ "name": "gated" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let a = pending_approval(&mut c, first).await;
    c.call::<m::ApprovalsDecide>(json!({ "id": a["id"], "approve": true }))
        .await
        .unwrap();
    assert_eq!(wait_finished(&mut c, first).await, "failed");

    let retried = c
        .call::<m::RunsRetry>(json!({ "id": first, "mode": "failed" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let again = pending_approval(&mut c, retried).await;
    assert_ne!(again["id"], a["id"], "a new request, not the old decision");
    let detail = c
        .call::<m::RunsGet>(json!({ "id": retried }))
        .await
        .unwrap();
    let gate = detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "gate")
        .unwrap()
        .clone();
    assert!(
        gate["reused_from"].is_null(),
        "the decision is not reused: {gate}"
    );
    assert_ne!(gate["state"], "succeeded", "{gate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_behind_a_token_or_webhook_may_not_approve_the_run() {
    let me = me();
    let gated = |user: &str| {
        format!(
            "triggers:\n  - webhook: {{ auth: none{user} }}\nnodes:\n  - id: gate\n    kind: approval\n  - id: after\n    kind: transform\n    needs: [gate]\n    output: {{ ok: true }}\n"
        )
    };
    let d = Sluiced::start(
        "",
        "",
        &[
            ("bytoken.yaml", gated("")),
            ("byhook.yaml", gated(&format!(", user: {me}"))),
        ],
    );
    let mut c = d.client().await;
    c.call::<m::Subscribe>(json!({})).await.unwrap();
    let token = c
        .call::<m::TokensCreate>(json!({ "user": me }))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let by_token = http
        .post(d.url("bytoken"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(by_token.status(), 202);
    let by_token = by_token.json::<Value>().await.unwrap()["run"]
        .as_i64()
        .unwrap();
    let by_hook = http
        .post(d.url("byhook"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(by_hook.status(), 202);
    let by_hook = by_hook.json::<Value>().await.unwrap()["run"]
        .as_i64()
        .unwrap();
    for run in [by_token, by_hook] {
        let a = pending_approval(&mut c, run).await;
        let e = c
            .call::<m::ApprovalsDecide>(json!({ "id": a["id"], "approve": true }))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied as i64, "{e:?}");
        assert!(e.message.contains("allow_self_approval"), "{e:?}");
    }
    // A token for a name with stray spaces would dodge the comparison: refused.
    let e = c
        .call::<m::TokensCreate>(json!({ "user": format!(" {me}") }))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidParams as i64, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_credential_headers_never_reach_the_database() {
    let pem_lines = [
        "-----BEGIN TEST PRIVATE KEY-----",
        "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8w",
        "ggE7AgEAAkEAq7BFUpkGp3+LQmlQYx2eqzDV",
        "-----END TEST PRIVATE KEY-----",
    ];
    let pem = pem_lines.join("\n");
    let secrets = format!("pem = \"\"\"\n{pem}\n\"\"\"\napi_key = \"sk-live-approval-9f8e7d6c\"\n");
    // The PEM goes through a shell's stdout line by line; the key into an approval message.
    let leaky = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: dump\n    kind: shell\n    run: |\n      printf '%s\\n' \"{{ secrets.pem }}\"\n  - id: gate\n    kind: approval\n    needs: [dump]\n    message: \"deploy with {{ secrets.api_key }}?\"\n";
    let mut d = Sluiced::start("", &secrets, &[("leaky.yaml", leaky.to_owned())]);
    let mut c = d.client().await;
    c.call::<m::Subscribe>(json!({})).await.unwrap();
    let run = c
        .call::<m::PipelinesTrigger>(json!({ "name": "leaky" }))
        .await
        .unwrap()["run"]
        .as_i64()
        .unwrap();
    let a = pending_approval(&mut c, run).await;
    assert_eq!(a["message"], "deploy with ***?");
    // A secret quoted in a reason reaches the approval row and the audit params.
    c.call::<m::ApprovalsDecide>(json!({ "id": a["id"], "approve": false, "reason": "never ship sk-live-approval-9f8e7d6c" }),
    )
    .await
    .unwrap();
    let audited = c.call::<m::AuditList>(json!({ "limit": 1 })).await.unwrap();
    assert_eq!(
        audited[0]["detail"]["reason"], "never ship ***",
        "{audited}"
    );
    let r = reqwest::Client::new()
        .post(d.url("leaky"))
        .header("content-type", "application/json")
        .header("X-Gitlab-Token", "glpat-header-credential-1234")
        .header("X-Custom-Session", "session-credential-5678")
        .header("X-GitHub-Event", "push")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let hook_run = r.json::<Value>().await.unwrap()["run"].as_i64().unwrap();
    let detail = c
        .call::<m::RunsGet>(json!({ "id": hook_run }))
        .await
        .unwrap();
    let headers = &detail["trigger"]["details"]["headers"];
    assert_eq!(headers["x-gitlab-token"], "***", "{headers}");
    assert_eq!(headers["x-custom-session"], "***", "{headers}");
    assert_eq!(
        headers["x-github-event"], "push",
        "harmless headers stay: {headers}"
    );
    pending_approval(&mut c, hook_run).await;
    let logs = c
        .call::<m::LogsGet>(json!({ "run": run, "node": "dump" }))
        .await
        .unwrap();
    let text = logs.to_string();
    assert!(text.contains("***"), "{text}");
    drop(c);
    // Stopped cleanly, then every byte the store wrote is searched.
    d.stop();
    let bytes = d.stored_bytes().await;
    assert!(!bytes.is_empty());
    for secret in pem_lines.iter().copied().chain([
        "sk-live-approval-9f8e7d6c",
        "glpat-header-credential-1234",
        "session-credential-5678",
    ]) {
        assert!(
            !contains(&bytes, secret),
            "'{secret}' is stored in the database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_audit_trail_is_detected_until_an_admin_acknowledges_it() {
    let p = "nodes:\n  - { id: a, kind: transform, output: { ok: true } }\n".to_owned();
    let mut d = Sluiced::start("", "", &[("p.yaml", p.clone())]);
    let mut c = d.client().await;
    for _ in 0..3 {
        c.call::<m::PipelinesDisable>(json!({ "name": "p" }))
            .await
            .unwrap();
        c.call::<m::PipelinesEnable>(json!({ "name": "p" }))
            .await
            .unwrap();
    }
    // Pipeline file changes are audited with their content hash.
    std::fs::write(
        d.dir.path().join("pipelines/p.yaml"),
        "nodes:\n  - { id: b, kind: transform, output: { ok: 2 } }\n",
    )
    .unwrap();
    c.call::<m::ConfigReload>(json!({})).await.unwrap();
    let change = eventually(20, "the file change to be audited", || {
        let socket = d.socket.clone();
        async move {
            let mut c = Client::connect(&socket).await;
            c.hello().await.unwrap();
            let rows = c
                .call::<m::AuditList>(json!({ "limit": 50 }))
                .await
                .unwrap();
            rows.as_array()?
                .iter()
                .find(|r| r["action"] == "pipelines.file.updated")
                .cloned()
        }
    })
    .await;
    assert_eq!(change["target"], "pipeline p");
    let new_file = std::fs::read(d.dir.path().join("pipelines/p.yaml")).unwrap();
    let expected: String = <sha2::Sha256 as sha2::Digest>::digest(&new_file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(change["detail"]["file_sha256"], expected, "{change}");
    assert_eq!(
        change["detail"]["definition_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64,
        "{change}"
    );
    let verified = c.call::<m::AuditVerify>(json!({})).await.unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    let rows_before = verified["rows"].as_u64().unwrap();
    drop(c);
    d.stop();

    // Offline, as someone with access to the database would: drop the two newest rows.
    d.backend
        .tamper(
            &d.db(),
            "DELETE FROM audit WHERE id > (SELECT MAX(id) - 2 FROM audit)",
        )
        .await;
    d.spawn().unwrap();
    let mut c = d.client().await;
    let verified = c.call::<m::AuditVerify>(json!({})).await.unwrap();
    assert_eq!(verified["ok"], false, "{verified}");
    assert!(
        verified["problem"].as_str().unwrap().contains("removed"),
        "{verified}"
    );
    let status = c.call::<m::Status>(json!({})).await.unwrap();
    assert!(
        status["audit_problem"]
            .as_str()
            .is_some_and(|p| p.contains("removed")),
        "{status}"
    );
    // Nothing is chained onto the cut tail: state changes are refused, no row added.
    let e = c
        .call::<m::PipelinesDisable>(json!({ "name": "p" }))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict as i64, "{e:?}");
    assert!(e.message.contains("sluice audit ack"), "{e:?}");
    let rows = c
        .call::<m::AuditList>(json!({ "limit": 1000 }))
        .await
        .unwrap();
    assert_eq!(rows.as_array().unwrap().len() as u64, rows_before - 2);
    let listed = c.call::<m::PipelinesList>(json!({})).await.unwrap();
    assert_eq!(listed[0]["enabled"], true, "the refused call did nothing");

    // The admin acknowledges: an audited row names what was found.
    let ack = c
        .call::<m::AuditAck>(json!({ "note": "restored from backup" }))
        .await
        .unwrap();
    let row = ack["row"].as_i64().unwrap();
    let rows = c.call::<m::AuditList>(json!({ "limit": 1 })).await.unwrap();
    assert_eq!(rows[0]["id"], row);
    assert_eq!(rows[0]["action"], m::AuditAck::NAME);
    assert_eq!(rows[0]["user"], me());
    assert_eq!(rows[0]["detail"]["note"], "restored from backup");
    assert!(
        rows[0]["detail"]["problem"]
            .as_str()
            .unwrap()
            .contains("removed")
    );
    assert_eq!(
        c.call::<m::AuditVerify>(json!({})).await.unwrap()["ok"],
        true
    );
    assert!(c.call::<m::Status>(json!({})).await.unwrap()["audit_problem"].is_null());
    let e = c.call::<m::AuditAck>(json!({})).await.unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::Conflict as i64,
        "nothing left to acknowledge"
    );
    c.call::<m::PipelinesDisable>(json!({ "name": "p" }))
        .await
        .unwrap();
    // And a restart finds the trail whole again.
    drop(c);
    d.stop();
    d.spawn().unwrap();
    let mut c = d.client().await;
    assert_eq!(
        c.call::<m::AuditVerify>(json!({})).await.unwrap()["ok"],
        true
    );
}
