//! Notifications delivered for real: an axum receiver on 127.0.0.1 for
//! webhooks and a small SMTP server speaking plain SMTP on 127.0.0.1, each
//! able to fail first and recover. Tests wait on the receivers' channels
//! with a time limit; nothing sleeps to synchronise.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use sluice_daemon::config::Config;
use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::nodes::{LogMsg, LogSink};
use sluice_daemon::notify::{
    ApprovalEvent, ApprovalNotice, DeliveryPolicy, Message, Notifier, ResolvedTarget,
};
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{Durability, Store};
use sluice_shared::model::RetryPolicy;
use sluice_shared::model::node::{EmailTarget, NotifyFormat, NotifyTarget};
use sluice_shared::run::{NodeState, RunId, RunState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "tok-s3cret-77a1";

fn fast() -> DeliveryPolicy {
    DeliveryPolicy {
        retry: RetryPolicy {
            attempts: 4,
            backoff: sluice_shared::Duration(Duration::from_millis(20)),
            max_backoff: sluice_shared::Duration(Duration::from_millis(50)),
            jitter: true,
        },
        attempt_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(30),
    }
}

// ---------------------------------------------------------------- webhooks

/// One request as the receiver saw it.
#[derive(Debug)]
struct Hit {
    path: String,
    content_type: Option<String>,
    body: Value,
}

struct Receiver {
    /// Statuses to answer with, in turn; then 200.
    script: Mutex<Vec<u16>>,
    retry_after: Option<&'static str>,
    hits: mpsc::UnboundedSender<Hit>,
}

async fn hook(
    State(r): State<Arc<Receiver>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let _ = r.hits.send(Hit {
        path: format!("/hook/{token}"),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
    });
    let code = {
        let mut script = r.script.lock().unwrap();
        if script.is_empty() {
            200
        } else {
            script.remove(0)
        }
    };
    let mut response = (StatusCode::from_u16(code).unwrap(), "receiver says hi").into_response();
    if code != 200
        && let Some(after) = r.retry_after
    {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}

/// A webhook receiver on 127.0.0.1; its URL ends in the secret token.
async fn receiver(
    script: Vec<u16>,
    retry_after: Option<&'static str>,
) -> (String, mpsc::UnboundedReceiver<Hit>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        script: Mutex::new(script),
        retry_after,
        hits: tx,
    });
    let app = Router::new()
        .route("/hook/{token}", post(hook))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, rx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for the receiver")
        .expect("receiver gone")
}

fn log_sink() -> (LogSink, mpsc::Receiver<LogMsg>) {
    let (tx, rx) = mpsc::channel(10_000);
    let secrets = secrets();
    (
        LogSink::new(RunId(7), "tell", 1, tx, Arc::new(secrets.redactor())),
        rx,
    )
}

fn lines(rx: &mut mpsc::Receiver<LogMsg>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        if let LogMsg::Line(line) = msg {
            out.push(line.line);
        }
    }
    out
}

fn secrets() -> Secrets {
    Secrets::from_map(BTreeMap::from([
        ("hook".to_owned(), SECRET.to_owned()),
        ("smtp_password".to_owned(), "pw-9911-smtp".to_owned()),
    ]))
}

fn webhook_target(base: &str, format: NotifyFormat) -> ResolvedTarget {
    ResolvedTarget::render(
        &NotifyTarget {
            webhook: Some(format!("{base}/hook/{SECRET}")),
            format,
            email: None,
        },
        |_, s| Ok(s.to_owned()),
    )
    .unwrap()
}

fn message() -> Message {
    Message::new("Backup done", "3 files <copied> & verified")
        .field("pipeline", "nightly")
        .field("run", 42)
        .field("node", "tell")
}

#[tokio::test]
async fn each_format_posts_its_exact_json() {
    let (base, mut hits) = receiver(vec![], None).await;
    let notifier = Notifier::disabled().with_policy(fast());
    let (log, _logs) = log_sink();
    let expected = [
        (
            NotifyFormat::Generic,
            json!({
                "title": "Backup done",
                "text": "3 files <copied> & verified",
                "pipeline": "nightly",
                "run": 42,
                "node": "tell",
            }),
        ),
        (
            NotifyFormat::Slack,
            json!({
                "text": "*Backup done*\n3 files &lt;copied&gt; &amp; verified",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Backup done"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "3 files &lt;copied&gt; &amp; verified"}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "*pipeline:* nightly  ·  *run:* 42  ·  *node:* tell"}]},
                ],
            }),
        ),
        (
            NotifyFormat::Discord,
            json!({
                "content": "**Backup done**\n3 files <copied> & verified",
                "embeds": [{"fields": [
                    {"name": "pipeline", "value": "nightly", "inline": true},
                    {"name": "run", "value": "42", "inline": true},
                    {"name": "node", "value": "tell", "inline": true},
                ]}],
                "allowed_mentions": {"parse": []},
            }),
        ),
    ];
    for (format, body) in expected {
        let report = notifier
            .deliver(&message(), &webhook_target(&base, format), &log)
            .await
            .unwrap();
        assert_eq!(report.delivered(), ["webhook"]);
        assert_eq!(report.channels[0].attempts, 1);
        let hit = next(&mut hits).await;
        assert_eq!(hit.path, format!("/hook/{SECRET}"));
        assert_eq!(hit.content_type.as_deref(), Some("application/json"));
        assert_eq!(hit.body, body, "{format:?}");
    }
}

#[tokio::test]
async fn a_receiver_failing_twice_then_recovering_gets_exactly_three_requests() {
    let (base, mut hits) = receiver(vec![500, 500], None).await;
    let notifier = Notifier::disabled().with_policy(fast());
    let (log, mut logs) = log_sink();
    let report = notifier
        .deliver(
            &message(),
            &webhook_target(&base, NotifyFormat::Generic),
            &log,
        )
        .await
        .unwrap();
    assert_eq!(report.channels[0].attempts, 3);
    assert_eq!(report.channels[0].detail, "200 OK");
    for _ in 0..3 {
        next(&mut hits).await;
    }
    assert!(hits.try_recv().is_err(), "no fourth request");
    let lines = lines(&mut logs);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("notify webhook (generic) http://127.0.0.1:")
            && lines[0].contains("/***: attempt 1/4 failed: the webhook answered 500 Internal Server Error: receiver says hi; retrying in"),
        "{lines:#?}"
    );
    assert!(lines[1].contains("attempt 2/4 failed"), "{lines:#?}");
    assert!(lines[2].ends_with("delivered on attempt 3"), "{lines:#?}");
    for line in &lines {
        assert!(!line.contains(SECRET) && !line.contains("/hook/"), "{line}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured_and_client_errors_are_final() {
    let (base, mut hits) = receiver(vec![429], Some("1")).await;
    let notifier = Notifier::disabled().with_policy(fast());
    let (log, _logs) = log_sink();
    let started = tokio::time::Instant::now();
    notifier
        .deliver(
            &message(),
            &webhook_target(&base, NotifyFormat::Generic),
            &log,
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After",
        started.elapsed()
    );
    next(&mut hits).await;
    next(&mut hits).await;

    let (base, mut hits) = receiver(vec![403, 403], None).await;
    let err = notifier
        .deliver(
            &message(),
            &webhook_target(&base, NotifyFormat::Slack),
            &log,
        )
        .await
        .unwrap_err();
    assert!(!err.retryable());
    assert_eq!(err.report().channels[0].attempts, 1);
    next(&mut hits).await;
    assert!(hits.try_recv().is_err());
}

#[tokio::test]
async fn a_silent_receiver_hits_the_time_limits() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let notifier = Notifier::disabled().with_policy(DeliveryPolicy {
        attempt_timeout: Duration::from_millis(200),
        total_timeout: Duration::from_millis(600),
        ..fast()
    });
    let (log, mut logs) = log_sink();
    let started = tokio::time::Instant::now();
    let err = notifier
        .deliver(
            &message(),
            &webhook_target(&format!("http://{addr}"), NotifyFormat::Generic),
            &log,
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.retryable());
    let lines = lines(&mut logs);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("timed out") || l.contains("no answer within")),
        "{lines:#?}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("limit") || l.contains("no attempts left")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn spawned_delivery_never_fails_its_caller_and_logs_the_outcome() {
    let (base, mut hits) = receiver(vec![500, 500, 500, 500], None).await;
    let notifier = Notifier::disabled().with_policy(fast());
    let (log, mut logs) = log_sink();
    let notice = ApprovalNotice {
        pipeline: "deploy".into(),
        run: RunId(12),
        node: "gate".into(),
        approval: Some(3),
        message: Some("Ship it?".into()),
        approvers: vec!["@ops".into()],
        deadline: None,
    };
    notifier
        .spawn_deliver(
            notice.message(ApprovalEvent::Requested),
            webhook_target(&base, NotifyFormat::Generic),
            log.clone(),
        )
        .await
        .unwrap();
    let first = next(&mut hits).await;
    assert_eq!(first.body["title"], "Approval needed: deploy #12 (gate)");
    assert_eq!(first.body["event"], "requested");
    assert_eq!(first.body["approval"], 3);
    let first_lines = lines(&mut logs);
    assert_eq!(first_lines.len(), 5, "{first_lines:#?}");
    assert!(
        first_lines[4].starts_with(
            "notification not delivered: webhook failed after 4 attempts: the webhook answered 500"
        ),
        "{first_lines:#?}"
    );

    // The receiver recovered: the next one goes through.
    notifier
        .spawn_deliver(
            notice.message(ApprovalEvent::Reminder),
            webhook_target(&base, NotifyFormat::Generic),
            log,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        next(&mut hits).await;
    }
    assert_eq!(next(&mut hits).await.body["event"], "reminder");
    assert_eq!(
        lines(&mut logs),
        ["notification 'Reminder: approval still needed: deploy #12 (gate)' delivered by webhook"]
    );
}

// ---------------------------------------------------------------- email

/// One email as the SMTP server received it.
#[derive(Debug)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

/// A plain SMTP server on 127.0.0.1 (no TLS, no AUTH). The first
/// `reject_mail` MAIL commands get `451`, later ones are accepted.
async fn smtp_server(reject_mail: usize) -> (SocketAddr, mpsc::UnboundedReceiver<Mail>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let rejects = Arc::new(Mutex::new(reject_mail));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (tx, rejects) = (tx.clone(), Arc::clone(&rejects));
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write
                    .write_all(b"220 test.local ESMTP ready\r\n")
                    .await
                    .unwrap();
                let (mut from, mut to) = (String::new(), Vec::new());
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-test.local\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                        b"250 test.local\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        let reject = {
                            let mut left = rejects.lock().unwrap();
                            let reject = *left > 0;
                            *left = left.saturating_sub(1);
                            reject
                        };
                        if reject {
                            b"451 4.3.0 try again later\r\n"
                        } else {
                            from = line[10..].trim().to_owned();
                            to.clear();
                            b"250 2.1.0 ok\r\n"
                        }
                    } else if upper.starts_with("RCPT TO:") {
                        to.push(line[8..].trim().to_owned());
                        b"250 2.1.5 ok\r\n"
                    } else if upper == "DATA" {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            // Dot-stuffing undone.
                            data.push_str(l.strip_prefix('.').unwrap_or(&l));
                            data.push('\n');
                        }
                        let _ = tx.send(Mail {
                            from: from.clone(),
                            to: std::mem::take(&mut to),
                            data,
                        });
                        b"250 2.0.0 queued as 1\r\n"
                    } else if upper == "RSET" {
                        b"250 ok\r\n"
                    } else if upper == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"502 5.5.2 not implemented\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn smtp_notifier(addr: SocketAddr) -> Notifier {
    let config = Config::parse(
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Sluice <sluice@example.com>\"\ntimeout = \"5s\"\n",
            addr.port()
        ),
        Path::new("sluiced.toml"),
    )
    .unwrap();
    Notifier::new(config.smtp.as_ref(), &secrets())
        .unwrap()
        .with_policy(fast())
}

fn email_target(subject: Option<&str>) -> ResolvedTarget {
    ResolvedTarget::render(
        &NotifyTarget {
            webhook: None,
            format: NotifyFormat::Generic,
            email: Some(EmailTarget {
                to: vec!["ops@example.com, Alice <alice@example.com>".into()],
                subject: subject.map(str::to_owned),
            }),
        },
        |_, s| Ok(s.to_owned()),
    )
    .unwrap()
}

#[tokio::test]
async fn email_reaches_a_real_smtp_listener() {
    let (addr, mut mails) = smtp_server(0).await;
    let notifier = smtp_notifier(addr);
    let (log, _logs) = log_sink();
    let report = notifier
        .deliver(&message(), &email_target(Some("Nightly backup")), &log)
        .await
        .unwrap();
    assert_eq!(report.delivered(), ["email"]);
    assert!(report.channels[0].detail.starts_with("250"), "{report:?}");
    let mail = next(&mut mails).await;
    assert_eq!(mail.from, "<sluice@example.com>");
    assert_eq!(mail.to, ["<ops@example.com>", "<alice@example.com>"]);
    assert!(
        mail.data.contains("Subject: Nightly backup\n"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("From: ")
            && mail.data.contains("Sluice")
            && mail.data.contains("<sluice@example.com>"),
        "{}",
        mail.data
    );
    let body = mail
        .data
        .split_once("\n\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert_eq!(
        body,
        "3 files <copied> & verified\n\n--\npipeline: nightly\nrun: 42\nnode: tell\n"
    );
}

#[tokio::test]
async fn email_is_retried_after_a_temporary_rejection() {
    let (addr, mut mails) = smtp_server(1).await;
    let notifier = smtp_notifier(addr);
    let (log, mut logs) = log_sink();
    let report = notifier
        .deliver(&message(), &email_target(None), &log)
        .await
        .unwrap();
    assert_eq!(report.channels[0].attempts, 2);
    let mail = next(&mut mails).await;
    // Without a subject of its own the title is used.
    assert!(
        mail.data.contains("Subject: Backup done\n"),
        "{}",
        mail.data
    );
    let lines = lines(&mut logs);
    assert!(
        lines[0].starts_with("notify email to ops@example.com, alice@example.com: attempt 1/4 failed: SMTP 127.0.0.1:")
            && lines[0].contains("451"),
        "{lines:#?}"
    );
    assert_eq!(
        lines[1],
        "notify email to ops@example.com, alice@example.com: delivered on attempt 2"
    );
}

#[tokio::test]
async fn smtp_password_must_name_a_defined_secret() {
    let config = Config::parse(
        "[smtp]\nhost = \"mail.example.com\"\nusername = \"u\"\npassword = \"nope\"\nfrom = \"a@example.com\"\n",
        Path::new("sluiced.toml"),
    )
    .unwrap();
    let err = Notifier::new(config.smtp.as_ref(), &secrets())
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret 'nope', which is not defined"), "{err}");
    let err = Config::parse(
        "[smtp]\nhost = \"h\"\nfrom = \"nobody\"\n",
        Path::new("sluiced.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("sluiced.toml: line 1: [smtp] from 'nobody'"),
        "{err}"
    );
}

// ---------------------------------------------------------------- engine

/// The directory and store (keep them while the engine runs), the engine and its store.
async fn engine_with(notifier: Notifier) -> ((tempfile::TempDir, common::Backend), Engine, Store) {
    let dir = tempfile::tempdir().unwrap();
    let backend = common::Backend::new().await;
    let store = backend
        .open(&common::db_path(dir.path()), Durability::Full)
        .await;
    let engine = Engine::start(
        store.clone(),
        &secrets(),
        EngineOptions {
            notifier: Arc::new(notifier),
            ..common::options(dir.path())
        },
    )
    .unwrap();
    ((dir, backend), engine, store)
}

#[tokio::test]
async fn a_pipeline_notifies_by_webhook_and_email_through_the_engine() {
    let (base, mut hits) = receiver(vec![502], None).await;
    let (addr, mut mails) = smtp_server(0).await;
    let (_dir, engine, store) = engine_with(smtp_notifier(addr)).await;
    let p = common::pipeline(
        "report",
        &format!(
            r#"inputs:
  who: {{ type: string, default: ops }}
nodes:
  - id: count
    kind: transform
    output: {{ n: 3 }}
  - id: tell
    kind: notify
    needs: [count]
    title: "Report for {{{{ inputs.who }}}}"
    message: "{{{{ nodes.count.output.n }}}} items"
    webhook: "{base}/hook/{{{{ secrets.hook }}}}"
    format: discord
    email:
      to: ["{{{{ inputs.who }}}}@example.com"]
"#
        ),
    );
    let run = engine
        .submit(
            &p,
            None,
            &Default::default(),
            sluice_shared::run::TriggerInfo::manual(None),
        )
        .await
        .unwrap();
    let record = common::finished(&engine, run).await;
    assert_eq!(record.state, RunState::Succeeded, "{:?}", record.error);
    next(&mut hits).await;
    let hit = next(&mut hits).await;
    assert_eq!(hit.body["content"], "**Report for ops**\n3 items");
    let mail = next(&mut mails).await;
    assert_eq!(mail.to, ["<ops@example.com>"]);
    assert!(
        mail.data.contains("Subject: Report for ops\n"),
        "{}",
        mail.data
    );

    let nodes = store.nodes(run).await.unwrap();
    let tell = nodes.iter().find(|n| n.node_id == "tell").unwrap();
    assert_eq!(
        tell.output.as_ref().unwrap(),
        &json!({
            "delivered": ["webhook", "email"],
            "failed": [],
            "webhook": {"delivered": true, "attempts": 2, "response": "200 OK"},
            "email": {"delivered": true, "attempts": 1, "response": tell.output.as_ref().unwrap()["email"]["response"]},
        })
    );
    let logs = store.logs(run, Some("tell")).await.unwrap();
    assert!(
        logs.iter().any(|l| l
            .line
            .contains("attempt 1/4 failed: the webhook answered 502 Bad Gateway")),
        "{logs:#?}"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_notify_node_whose_every_channel_fails_fails_without_leaking_the_url() {
    let (base, mut hits) = receiver(vec![500; 100], None).await;
    let (_dir, engine, store) = engine_with(Notifier::disabled().with_policy(DeliveryPolicy {
        retry: RetryPolicy {
            attempts: 2,
            ..fast().retry
        },
        ..fast()
    }))
    .await;
    let p = common::pipeline(
        "alert",
        &format!(
            r#"nodes:
  - id: tell
    kind: notify
    message: "disk full"
    webhook: "{base}/hook/{{{{ secrets.hook }}}}"
    format: slack
    retry: {{ attempts: 2, backoff: 10ms, jitter: false }}
"#
        ),
    );
    let run = engine
        .submit(
            &p,
            None,
            &Default::default(),
            sluice_shared::run::TriggerInfo::manual(None),
        )
        .await
        .unwrap();
    let record = common::finished(&engine, run).await;
    assert_eq!(record.state, RunState::Failed);
    // Two node attempts of two deliveries each.
    for _ in 0..4 {
        next(&mut hits).await;
    }
    assert!(hits.try_recv().is_err());
    let nodes = store.nodes(run).await.unwrap();
    let tell = &nodes[0];
    assert_eq!(tell.state, NodeState::Failed);
    assert_eq!(tell.attempts, 2);
    let error = tell.error.clone().unwrap_or_default();
    assert!(
        error.contains(
            "notification not delivered: webhook failed after 2 attempts: the webhook answered 500"
        ),
        "{error}"
    );
    let logs = store.logs(run, Some("tell")).await.unwrap();
    let notes: Vec<&str> = logs
        .iter()
        .filter(|l| l.line.starts_with("notify webhook (slack)"))
        .map(|l| l.line.as_str())
        .collect();
    assert_eq!(notes.len(), 4, "{logs:#?}");
    assert!(
        notes.iter().all(|l| l.contains("http://127.0.0.1:")),
        "{notes:#?}"
    );
    for text in logs.iter().map(|l| l.line.as_str()).chain([error.as_str()]) {
        assert!(!text.contains(SECRET) && !text.contains("/hook/"), "{text}");
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn approval_notices_render_their_target_and_never_fail_the_caller() {
    let (base, mut hits) = receiver(vec![], None).await;
    let notifier = Notifier::disabled().with_policy(fast());
    let (log, mut logs) = log_sink();
    let notice = ApprovalNotice {
        pipeline: "deploy".into(),
        run: RunId(12),
        node: "gate".into(),
        approval: Some(3),
        message: None,
        approvers: vec![],
        deadline: Some("2026-11-22T05:57:00Z".parse().unwrap()),
    };
    let target = NotifyTarget {
        webhook: Some("{{ hook }}".into()),
        format: NotifyFormat::Slack,
        email: None,
    };
    // The lead's engine renders with the run's template context; here a map stands in.
    let hook_url = format!("{base}/hook/{SECRET}");
    notifier
        .spawn_approval_notice(
            &notice,
            ApprovalEvent::Expired(sluice_shared::model::node::OnTimeout::Reject),
            &target,
            |_, source| Ok(source.replace("{{ hook }}", &hook_url)),
            log.clone(),
        )
        .await
        .unwrap();
    let hit = next(&mut hits).await;
    assert_eq!(
        hit.body["text"],
        "*Approval expired: deploy #12 (gate)*\nNo decision was made by 2026-11-22 05:57 UTC; it was treated as rejected."
    );
    assert_eq!(lines(&mut logs).len(), 1, "one 'delivered' note");

    notifier
        .spawn_approval_notice(
            &notice,
            ApprovalEvent::Reminder,
            &target,
            |_, _| Err("undefined value `hook`".into()),
            log,
        )
        .await
        .unwrap();
    assert_eq!(
        lines(&mut logs),
        [
            "approval notification (reminder) not sent: cannot render `webhook`: undefined value `hook`"
        ]
    );
    assert!(hits.try_recv().is_err());
}
