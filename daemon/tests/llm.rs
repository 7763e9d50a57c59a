//! `llm` nodes through the real engine and a real SQLite store, against
//! provider servers on 127.0.0.1 that speak Ollama's NDJSON `/api/chat` and
//! OpenAI's SSE `/v1/chat/completions` byte for byte as their docs show.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use sluice_daemon::config::Config;
use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::llm::LlmProviders;
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{Durability, Store};
use sluice_shared::run::{NodeState, RunId, RunState, TriggerInfo};
use tokio::sync::Notify;

use common::pipeline;

const API_KEY: &str = "sk-test-0123456789abcdef";

// ---------------------------------------------------------------- wire formats

/// Ollama's streamed chunks for `parts`, as in its API docs, with eval counts.
fn ollama_lines(model: &str, parts: &[&str], prompt_eval: u64, eval: u64) -> Vec<String> {
    let mut lines: Vec<String> = parts
        .iter()
        .map(|p| {
            format!(
                "{{\"model\":\"{model}\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{{\"role\":\"assistant\",\"content\":{}}},\"done\":false}}\n",
                Value::from(*p)
            )
        })
        .collect();
    lines.push(format!(
        "{{\"model\":\"{model}\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"\"}},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":4883583458,\"load_duration\":1334875,\"prompt_eval_count\":{prompt_eval},\"prompt_eval_duration\":342546000,\"eval_count\":{eval},\"eval_duration\":4535599000}}\n"
    ));
    lines
}

fn sse_chunk(model: &str, delta: &str, finish: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"{model}\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
    )
}

/// OpenAI's streamed events for `parts`, as in its API reference: a role
/// chunk, content chunks, a finish chunk, a usage chunk (when given) and `[DONE]`.
fn openai_events(model: &str, parts: &[&str], usage: Option<(u64, u64)>) -> Vec<String> {
    let mut events = vec![sse_chunk(
        model,
        "{\"role\":\"assistant\",\"content\":\"\"}",
        "null",
    )];
    for p in parts {
        events.push(sse_chunk(
            model,
            &format!("{{\"content\":{}}}", Value::from(*p)),
            "null",
        ));
    }
    events.push(sse_chunk(model, "{}", "\"stop\""));
    if let Some((prompt, completion)) = usage {
        events.push(format!(
            "data: {{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"{model}\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\n",
            prompt + completion
        ));
    }
    events.push("data: [DONE]\n\n".into());
    events
}

// ---------------------------------------------------------------- the server

/// What the server does with one request.
#[derive(Clone)]
enum Act {
    /// Streams these chunks, each written separately.
    Stream(Vec<String>),
    /// Streams `first`, waits for `gate`, then streams `rest`.
    Gated {
        first: Vec<String>,
        gate: Arc<Notify>,
        rest: Vec<String>,
    },
    /// Streams the chunks, then breaks the connection (no end of body).
    Drop(Vec<String>),
    /// Streams the chunks, then hangs; `closed` fires when the client goes away.
    Hang(Vec<String>, Arc<Notify>),
    /// Answers with this status, headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
}

struct Seen {
    at: Instant,
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Mock {
    script: Mutex<VecDeque<Act>>,
    seen: Mutex<Vec<Seen>>,
}

impl Mock {
    fn push(&self, act: Act) {
        self.script.lock().unwrap().push_back(act);
    }

    fn bodies(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.body.clone())
            .collect()
    }
}

/// Fires a notification when dropped: the body stream goes when the connection does.
struct OnDrop(Arc<Notify>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

fn streamed(is_sse: bool, act: Act) -> Response {
    let content_type = if is_sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    type Item = Result<Bytes, std::io::Error>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Item>(64);
    tokio::spawn(async move {
        let send_all = |chunks: Vec<String>| {
            let tx = tx.clone();
            async move {
                for c in chunks {
                    if tx.send(Ok(Bytes::from(c))).await.is_err() {
                        return;
                    }
                    // Separate writes: each chunk reaches the client on its own.
                    tokio::task::yield_now().await;
                }
            }
        };
        match act {
            Act::Stream(chunks) => send_all(chunks).await,
            Act::Gated { first, gate, rest } => {
                send_all(first).await;
                gate.notified().await;
                send_all(rest).await;
            }
            Act::Drop(chunks) => {
                send_all(chunks).await;
                let _ = tx
                    .send(Err(std::io::Error::other("connection dropped")))
                    .await;
            }
            Act::Hang(chunks, closed) => {
                send_all(chunks).await;
                // Held until the client goes away and the body (with `rx`) is dropped.
                let _guard = OnDrop(closed);
                tx.closed().await;
            }
            Act::Status(..) => {}
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", content_type)
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn chat(
    State(mock): State<Arc<Mock>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap();
    let is_sse = uri.path().ends_with("/chat/completions");
    mock.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: body.clone(),
    });
    let act = mock.script.lock().unwrap().pop_front();
    let act = act.unwrap_or_else(|| {
        // Unscripted: models named missing-* do not exist; the others answer
        // "[model] <last message>", in three pieces.
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        if model.starts_with("missing-") {
            let error = if is_sse {
                json!({ "error": { "message": format!("The model `{model}` does not exist or you do not have access to it."), "type": "invalid_request_error", "param": null, "code": "model_not_found" } })
            } else {
                json!({ "error": format!("model \"{model}\" not found, try pulling it first") })
            };
            return Act::Status(404, vec![], error.to_string());
        }
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let text = format!("[{model}] {last}");
        let (a, rest) = text.split_at(text.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        Act::Stream(if is_sse {
            openai_events(&model, &[a, b, c], Some((10, 5)))
        } else {
            ollama_lines(&model, &[a, b, c], 10, 5)
        })
    });
    match act {
        Act::Status(code, headers, text) => {
            let mut r = Response::builder().status(StatusCode::from_u16(code).unwrap());
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.header("content-type", "application/json")
                .body(Body::from(text))
                .unwrap()
        }
        other => streamed(is_sse, other),
    }
}

async fn server() -> (String, Arc<Mock>) {
    let mock = Arc::new(Mock::default());
    let app = Router::new()
        .route("/api/chat", post(chat))
        .route("/v1/chat/completions", post(chat))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), mock)
}

// ---------------------------------------------------------------- the daemon side

struct Daemon {
    _dir: tempfile::TempDir,
    engine: Engine,
    store: Store,
    /// Where the store lives (last: a PostgreSQL database outlives the engine).
    _backend: common::Backend,
}

/// An engine whose sluiced.toml names an Ollama provider `local` (the
/// default) and an OpenAI-compatible `hosted`, both at `base`.
async fn daemon(base: &str, extra_toml: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[llm.providers.local]
kind = "ollama"
base_url = "{base}"
default_model = "llama3.2"

[llm.providers.hosted]
kind = "openai"
base_url = "{base}/v1"
api_key = "openai_key"
default_model = "gpt-4o-mini"
{extra_toml}
"#
    );
    let config = Config::parse(&toml, Path::new("sluiced.toml")).unwrap();
    let secrets = Secrets::from_map(BTreeMap::from([(
        "openai_key".to_owned(),
        API_KEY.to_owned(),
    )]));
    let llm = LlmProviders::from_config(&config.llm, &secrets).unwrap();
    let backend = common::Backend::new().await;
    let store = backend
        .open(&dir.path().join("sluice.db"), Durability::Normal)
        .await;
    let opts = EngineOptions {
        workers: 8,
        plugins_dir: dir.path().join("plugins"),
        shutdown_grace: Duration::ZERO,
        llm: Arc::new(llm),
        limits: Arc::new(sluice_daemon::limits::Limits::new(config.limits.clone())),
        ..EngineOptions::default()
    };
    let engine = Engine::start(store.clone(), &secrets, opts).unwrap();
    Daemon {
        _dir: dir,
        engine,
        store,
        _backend: backend,
    }
}

impl Daemon {
    async fn run(&self, yaml: &str, inputs: Value) -> RunId {
        let p = pipeline("p", yaml);
        self.engine
            .submit(
                &p,
                None,
                inputs.as_object().unwrap(),
                TriggerInfo::manual(Some("tester".into())),
            )
            .await
            .unwrap()
    }

    async fn finish(&self, run: RunId) -> (RunState, Option<String>) {
        let record = tokio::time::timeout(Duration::from_secs(30), self.engine.wait(run))
            .await
            .expect("the run ends")
            .unwrap();
        self.store.flush().await.unwrap();
        (record.state, record.error)
    }

    async fn output(&self, run: RunId, node: &str) -> Value {
        let nodes = self.store.nodes(run).await.unwrap();
        let n = nodes.iter().find(|n| n.node_id == node).unwrap();
        n.output.clone().unwrap_or(Value::Null)
    }

    async fn log(&self, run: RunId, node: &str, stream: &str) -> Vec<String> {
        self.store
            .logs(run, Some(node))
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.line)
            .collect()
    }

    async fn usage_rows(&self) -> Vec<(String, String, i64, i64, i64, i64)> {
        self.store
            .llm_usage_since("0000-00-00")
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.user,
                    r.pipeline,
                    r.tokens_in,
                    r.tokens_out,
                    r.requests,
                    r.estimated_requests,
                )
            })
            .collect()
    }

    async fn daily_tokens(&self, user: &str) -> i64 {
        self.store
            .usage_since("0000-00-00")
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.user == user)
            .map(|r| r.llm_tokens)
            .sum()
    }
}

fn one_node(extra: &str) -> String {
    format!(
        "nodes:\n  - id: ask\n    kind: llm\n    prompt: \"Summarise {{{{ inputs.topic }}}}\"\n{extra}"
    )
}

const INPUTS: fn() -> Value = || json!({});

fn topic_pipeline(extra: &str) -> String {
    format!(
        "inputs:\n  topic: {{ type: string, default: rust }}\n{}",
        one_node(extra)
    )
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn ollama_stream_is_assembled_logged_live_and_its_usage_recorded() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let gate = Arc::new(Notify::new());
    let lines = ollama_lines("llama3.2", &["Line one\nLi", "ne two", "\nend"], 26, 282);
    mock.push(Act::Gated {
        first: lines[..1].to_vec(),
        gate: gate.clone(),
        rest: lines[1..].to_vec(),
    });
    let mut events = d.engine.subscribe();
    let run = d
        .run(
            &topic_pipeline("    temperature: 0.2\n    max_tokens: 300\n"),
            INPUTS(),
        )
        .await;

    // The first line shows while the reply is still streaming.
    common::next_event(
        &mut events,
        10,
        |e| matches!(e, sluice_shared::event::Event::Log { line, .. } if line == "Line one"),
    )
    .await;
    gate.notify_one();

    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));
    let out = d.output(run, "ask").await;
    assert_eq!(out["text"], "Line one\nLine two\nend");
    assert_eq!(out["model"], "llama3.2");
    assert_eq!(out["provider"], "local");
    assert_eq!(out["finish_reason"], "stop");
    assert_eq!(
        (out["tokens_in"].as_u64(), out["tokens_out"].as_u64()),
        (Some(26), Some(282))
    );
    assert_eq!(out["tokens_estimated"], false);
    assert_eq!(
        d.log(run, "ask", "stdout").await,
        ["Line one", "Line two", "end"]
    );

    let body = &mock.bodies()[0];
    assert_eq!(
        *body,
        json!({
            "model": "llama3.2",
            "messages": [{ "role": "user", "content": "Summarise rust" }],
            "stream": true,
            "options": { "temperature": 0.2, "num_predict": 300 },
        })
    );
    assert_eq!(
        d.usage_rows().await,
        [("tester".into(), "p".into(), 26, 282, 1, 0)]
    );
    assert_eq!(d.daily_tokens("tester").await, 308);
}

#[tokio::test]
async fn openai_sse_stream_sends_the_key_and_redacts_it_everywhere() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    mock.push(Act::Stream(openai_events(
        "gpt-4o-mini-2024-07-18",
        &["Your key is ", API_KEY, ".\nBye"],
        Some((9, 12)),
    )));
    let run = d
        .run(
            &topic_pipeline("    provider: hosted\n    system: Be brief.\n"),
            INPUTS(),
        )
        .await;
    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));
    let out = d.output(run, "ask").await;
    assert_eq!(out["text"], "Your key is ***.\nBye");
    assert_eq!(out["model"], "gpt-4o-mini");
    assert_eq!(
        (out["tokens_in"].as_u64(), out["tokens_out"].as_u64()),
        (Some(9), Some(12))
    );
    assert_eq!(
        d.log(run, "ask", "stdout").await,
        ["Your key is ***.", "Bye"]
    );
    let all_logs = d.store.logs(run, None).await.unwrap();
    assert!(all_logs.iter().all(|l| !l.line.contains(API_KEY)));

    let seen = mock.seen.lock().unwrap();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(
        seen[0].body["stream_options"],
        json!({ "include_usage": true })
    );
    assert_eq!(
        seen[0].body["messages"],
        json!([
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": "Summarise rust" }
        ])
    );
}

#[tokio::test]
async fn without_usage_fields_tokens_are_estimated_and_marked() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    mock.push(Act::Stream(openai_events(
        "gpt-4o-mini",
        &["12345678"],
        None,
    )));
    let run = d
        .run(&topic_pipeline("    provider: hosted\n"), INPUTS())
        .await;
    assert_eq!(d.finish(run).await.0, RunState::Succeeded);
    let out = d.output(run, "ask").await;
    // "Summarise rust" is 14 characters: 4 tokens; the 8-character reply: 2.
    assert_eq!(
        (out["tokens_in"].as_u64(), out["tokens_out"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(out["tokens_estimated"], true);
    assert_eq!(d.usage_rows().await[0].5, 1, "counted as estimated");
    let notes = d.log(run, "ask", "sluice").await;
    assert!(notes.iter().any(|n| n.contains("(estimated")), "{notes:?}");
}

#[tokio::test]
async fn json_mode_is_parsed_and_checked_against_the_schema_with_retries() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let schema = "    format: json\n    schema:\n      type: object\n      required: [name, score]\n      properties:\n        name: { type: string }\n        score: { type: integer, maximum: 10 }\n    retry: { attempts: 3, backoff: 10ms, jitter: false }\n";
    mock.push(Act::Stream(ollama_lines(
        "llama3.2",
        &["{\"name\": \"Ada\""],
        5,
        3,
    )));
    mock.push(Act::Stream(ollama_lines(
        "llama3.2",
        &["{\"name\": \"Ada\", ", "\"score\": 11}"],
        5,
        4,
    )));
    mock.push(Act::Stream(ollama_lines(
        "llama3.2",
        &["{\"name\": \"Ada\", ", "\"score\": 9}"],
        5,
        4,
    )));
    let run = d.run(&topic_pipeline(schema), INPUTS()).await;
    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));
    let out = d.output(run, "ask").await;
    assert_eq!(out["json"], json!({ "name": "Ada", "score": 9 }));

    let attempts = d.store.attempts(run).await.unwrap();
    let errors: Vec<String> = attempts.iter().filter_map(|a| a.error.clone()).collect();
    assert_eq!(attempts.len(), 3);
    assert!(
        errors[0].starts_with("the reply is not valid JSON"),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        "the reply does not match `schema`: /score: 11 is more than the maximum 10"
    );
    // Ollama is asked for the schema itself as `format`.
    assert_eq!(
        mock.bodies()[0]["format"]["required"],
        json!(["name", "score"])
    );
    // Failed attempts spent tokens too.
    assert_eq!(
        d.usage_rows().await,
        [("tester".into(), "p".into(), 15, 11, 3, 0)]
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    mock.push(Act::Status(
        429,
        vec![("retry-after", "1".into())],
        r#"{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    ));
    let run = d
        .run(
            &topic_pipeline(
                "    provider: hosted\n    retry: { attempts: 2, backoff: 10ms, jitter: false }\n",
            ),
            INPUTS(),
        )
        .await;
    assert_eq!(d.finish(run).await.0, RunState::Succeeded);
    let times: Vec<Instant> = mock.seen.lock().unwrap().iter().map(|s| s.at).collect();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_millis(2500),
        "retried after {gap:?}, not the 1 s asked for"
    );
    let attempts = d.store.attempts(run).await.unwrap();
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("returned 429 Too Many Requests for gpt-4o-mini: Rate limit reached"),
        "{:?}",
        attempts[0].error
    );
}

#[tokio::test]
async fn a_500_is_retried() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    mock.push(Act::Status(
        500,
        vec![],
        r#"{"error":"llama runner process has terminated"}"#.into(),
    ));
    let run = d
        .run(
            &topic_pipeline("    retry: { attempts: 2, backoff: 10ms }\n"),
            INPUTS(),
        )
        .await;
    assert_eq!(d.finish(run).await.0, RunState::Succeeded);
    let nodes = d.store.nodes(run).await.unwrap();
    assert_eq!(
        (nodes[0].state, nodes[0].attempts),
        (NodeState::Succeeded, 2)
    );
    assert_eq!(
        d.output(run, "ask").await["text"],
        "[llama3.2] Summarise rust"
    );
}

#[tokio::test]
async fn a_malformed_chunk_is_a_clear_error() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let mut lines = ollama_lines("llama3.2", &["Hello"], 1, 1);
    lines.insert(
        1,
        "{\"model\":\"llama3.2\",\"message\":{\"content\":\"x\"},\"done\":fals\n".into(),
    );
    mock.push(Act::Stream(lines));
    // Not retried: a server that speaks another protocol will not start making sense.
    let run = d
        .run(
            &topic_pipeline("    retry: { attempts: 3, backoff: 10ms }\n"),
            INPUTS(),
        )
        .await;
    let (state, error) = d.finish(run).await;
    assert_eq!(state, RunState::Failed);
    let error = error.unwrap();
    assert!(
        error.contains(&format!("node 'ask' failed: provider 'local' ({base}/api/chat) sent a malformed stream for llama3.2: a chunk is not the JSON Ollama sends"))
            && error.contains("is kind = \"ollama\" right for this server?"),
        "{error}"
    );
    assert_eq!(mock.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_a_clear_error() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let events = openai_events("gpt-4o-mini", &["Half a rep", "ly"], None);
    mock.push(Act::Drop(events[..2].to_vec()));
    let run = d
        .run(&topic_pipeline("    provider: hosted\n"), INPUTS())
        .await;
    let (state, error) = d.finish(run).await;
    assert_eq!(state, RunState::Failed);
    let error = error.unwrap();
    assert!(
        error.contains(&format!(
            "the connection to provider 'hosted' ({base}/v1/chat/completions) dropped mid-reply from gpt-4o-mini (after 10 characters)"
        )),
        "{error}"
    );
    // The partial reply is kept, and its (estimated) tokens are charged.
    assert_eq!(d.output(run, "ask").await["text"], "Half a rep");
    assert_eq!(d.log(run, "ask", "stdout").await, ["Half a rep"]);
    assert_eq!(d.usage_rows().await[0].5, 1);
}

#[tokio::test]
async fn a_stream_that_ends_early_is_an_error() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let lines = ollama_lines("llama3.2", &["Half"], 1, 1);
    mock.push(Act::Stream(lines[..1].to_vec()));
    let run = d.run(&topic_pipeline(""), INPUTS()).await;
    let (state, error) = d.finish(run).await;
    assert_eq!(state, RunState::Failed);
    assert!(error.unwrap().contains(
        "closed the stream for llama3.2 before the reply was complete (after 4 characters)"
    ));
}

#[tokio::test]
async fn cancelling_a_run_closes_the_connection_mid_stream() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let closed = Arc::new(Notify::new());
    mock.push(Act::Hang(
        ollama_lines("llama3.2", &["Still thinking\n"], 1, 1)[..1].to_vec(),
        closed.clone(),
    ));
    let mut events = d.engine.subscribe();
    let run = d.run(&topic_pipeline(""), INPUTS()).await;
    common::next_event(
        &mut events,
        10,
        |e| matches!(e, sluice_shared::event::Event::Log { line, .. } if line == "Still thinking"),
    )
    .await;
    d.engine.cancel(run).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), closed.notified())
        .await
        .expect("the provider sees the connection close");
    assert_eq!(d.finish(run).await.0, RunState::Cancelled);
    let notes = d.log(run, "ask", "sluice").await;
    assert!(
        notes
            .iter()
            .any(|n| n == "cancelled: the reply from llama3.2 was dropped mid-stream"),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_provider_timeout_aborts_the_request() {
    let (base, mock) = server().await;
    let d = daemon(
        &base,
        "[llm.providers.slow]\nkind = \"ollama\"\nbase_url = \"BASE\"\ntimeout = \"300ms\"\n"
            .replace("BASE", &base)
            .as_str(),
    )
    .await;
    let closed = Arc::new(Notify::new());
    mock.push(Act::Hang(Vec::new(), closed.clone()));
    let run = d
        .run(
            &topic_pipeline("    provider: slow\n    model: llama3.2\n"),
            INPUTS(),
        )
        .await;
    let (state, error) = d.finish(run).await;
    assert_eq!(state, RunState::Failed);
    assert!(error.unwrap().ends_with(&format!(
        "the request to provider 'slow' ({base}/api/chat) for llama3.2 timed out after 300ms"
    )));
    tokio::time::timeout(Duration::from_secs(10), closed.notified())
        .await
        .expect("the connection is closed");
}

#[tokio::test]
async fn a_missing_model_falls_back_to_the_next() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    mock.push(Act::Status(
        404,
        vec![],
        r#"{"error":"model \"llama9\" not found, try pulling it first"}"#.into(),
    ));
    let run = d
        .run(&topic_pipeline("    model: [llama9, llama3.2]\n"), INPUTS())
        .await;
    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));
    let out = d.output(run, "ask").await;
    assert_eq!(out["model"], "llama3.2");
    assert_eq!(out["text"], "[llama3.2] Summarise rust");
    let models: Vec<Value> = mock.bodies().iter().map(|b| b["model"].clone()).collect();
    assert_eq!(models, [json!("llama9"), json!("llama3.2")]);
    let notes = d.log(run, "ask", "sluice").await;
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("llama9 is not available (")
                && n.contains("returned 404 Not Found for llama9: model \"llama9\" not found")
                && n.ends_with("; trying llama3.2")),
        "{notes:?}"
    );

    // When every model is missing, the error lists each.
    mock.push(Act::Status(404, vec![], r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#.into()));
    mock.push(Act::Status(404, vec![], r#"{"error":{"message":"The model `gpt-8` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#.into()));
    let run = d
        .run(
            &topic_pipeline("    provider: hosted\n    model: [gpt-9, gpt-8]\n"),
            INPUTS(),
        )
        .await;
    let (state, error) = d.finish(run).await;
    assert_eq!(state, RunState::Failed);
    let error = error.unwrap();
    assert!(
        error.contains("no model answered — gpt-9: ")
            && error.contains("; gpt-8: ")
            && error.contains("The model `gpt-8` does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn a_four_node_chain_feeds_each_output_to_the_next() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let yaml = r#"
inputs:
  topic: { type: string, default: sluice }
nodes:
  - id: outline
    kind: llm
    prompt: "Outline a post about {{ inputs.topic }}"
  - id: draft
    kind: llm
    needs: [outline]
    provider: hosted
    prompt: "Draft from: {{ nodes.outline.output.text }}"
  - id: critique
    kind: llm
    needs: [draft]
    model: qwen2.5
    prompt: "Critique: {{ nodes.draft.output.text }}"
  - id: revise
    kind: llm
    needs: [draft, critique]
    provider: hosted
    model: [missing-gpt, gpt-4o]
    prompt: "Revise {{ nodes.draft.output.text }} given {{ nodes.critique.output.text }}"
"#;
    // The outline is scripted; the rest are echoes, and revise's first model is missing.
    mock.push(Act::Stream(ollama_lines(
        "llama3.2",
        &["1. Why", "\n2. How"],
        12,
        6,
    )));
    let run = d.run(yaml, json!({})).await;
    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));

    let outline = d.output(run, "outline").await;
    assert_eq!(outline["text"], "1. Why\n2. How");
    let draft = d.output(run, "draft").await;
    assert_eq!(draft["text"], "[gpt-4o-mini] Draft from: 1. Why\n2. How");
    let critique = d.output(run, "critique").await;
    assert_eq!(
        critique["text"],
        "[qwen2.5] Critique: [gpt-4o-mini] Draft from: 1. Why\n2. How"
    );
    let revise = d.output(run, "revise").await;
    assert_eq!(revise["model"], "gpt-4o");
    assert_eq!(
        revise["text"],
        "[gpt-4o] Revise [gpt-4o-mini] Draft from: 1. Why\n2. How given [qwen2.5] Critique: [gpt-4o-mini] Draft from: 1. Why\n2. How"
    );
    let paths: Vec<String> = mock
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/chat",
            "/v1/chat/completions",
            "/api/chat",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
    // Four answered requests: 12+6 and three echoes of 10+5.
    assert_eq!(
        d.usage_rows().await,
        [("tester".into(), "p".into(), 42, 21, 4, 0)]
    );
    assert_eq!(d.daily_tokens("tester").await, 63);
}

/// A pipeline shipped in config/pipelines/.
fn example(file: &str) -> sluice_shared::Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/pipelines")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let f = sluice_shared::load_source(&path, &text, &Default::default());
    assert!(f.is_valid(), "{:#?}", f.diagnostics);
    f.pipeline.unwrap()
}

#[tokio::test]
async fn the_blog_drafter_example_runs_its_four_steps() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let p = example("blog-drafter.yaml");
    let inputs = json!({ "topic": "durable timers" });
    let run = d
        .engine
        .submit(
            &p,
            None,
            inputs.as_object().unwrap(),
            TriggerInfo::manual(Some("alice".into())),
        )
        .await
        .unwrap();
    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));
    let bodies = mock.bodies();
    assert_eq!(bodies.len(), 4);
    // revise saw the draft and the critique as two user messages after its system prompt.
    let revise = &bodies[3]["messages"];
    assert_eq!(revise[0]["role"], "system");
    assert!(
        revise[1]["content"]
            .as_str()
            .unwrap()
            .starts_with("Here is my draft:\n[llama3.2] Write the post")
    );
    assert!(
        revise[2]["content"]
            .as_str()
            .unwrap()
            .contains("[llama3.2] List the five")
    );
    let text = d.output(run, "revise").await["text"].clone();
    assert!(
        text.as_str().unwrap().starts_with("[llama3.2] Revise it"),
        "{text}"
    );
    assert_eq!(d.usage_rows().await[0].0, "alice");
    assert_eq!(d.usage_rows().await[0].4, 4);
}

#[tokio::test]
async fn the_resume_refiner_example_checks_and_shapes_the_json_reply() {
    let (base, mock) = server().await;
    let d = daemon(&base, "").await;
    let reply = r#"{"headline": "Solid backend engineer", "strengths": ["Rust", "SQL"], "improvements": ["Quantify impact"], "score": 7}"#;
    let (a, b) = reply.split_at(40);
    mock.push(Act::Stream(openai_events(
        "gpt-4o-mini",
        &[a, b],
        Some((310, 42)),
    )));
    let p = example("resume-refiner.yaml");
    let trigger = TriggerInfo {
        kind: sluice_shared::run::TriggerKind::Webhook,
        user: Some("careers".into()),
        details: json!({ "body": { "name": "Ada", "resume": "Ada Lovelace. Rust, SQL." }, "headers": {} }),
    };
    let run = d
        .engine
        .submit(&p, None, &serde_json::Map::new(), trigger)
        .await
        .unwrap();
    assert_eq!(d.finish(run).await, (RunState::Succeeded, None));
    assert_eq!(
        d.output(run, "result").await,
        json!({
            "candidate": "Ada",
            "headline": "Solid backend engineer",
            "score": 7,
            "strengths": ["Rust", "SQL"],
            "top_improvement": "Quantify impact",
            "model": "gpt-4o-mini",
            "tokens": 352,
        })
    );
    let body = &mock.bodies()[0];
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"][3],
        "score"
    );
    assert!(
        body["messages"][1]["content"]
            .as_str()
            .unwrap()
            .starts_with("Candidate: Ada\nRésumé:\nAda Lovelace. Rust, SQL.")
    );
    assert_eq!(
        d.usage_rows().await,
        [("careers".into(), "resume-refiner".into(), 310, 42, 1, 0)]
    );
}

#[tokio::test]
async fn a_run_stops_calling_models_once_its_user_spent_the_days_tokens() {
    let (base, mock) = server().await;
    let d = daemon(&base, "[limits.default]\ndaily_llm_tokens = 10\n").await;
    let yaml = r#"
nodes:
  - id: first
    kind: llm
    prompt: "Say a lot"
  - id: second
    kind: llm
    needs: [first]
    prompt: "Again: {{ nodes.first.output.text }}"
"#;
    mock.push(Act::Stream(ollama_lines(
        "llama3.2",
        &["many words"],
        12,
        6,
    )));
    let run = d.run(yaml, json!({})).await;
    let (state, error) = d.finish(run).await;
    assert_eq!(state, RunState::Failed);
    let error = error.unwrap_or_default();
    assert!(
        error.contains("node 'second' failed")
            && error.contains("has used 18 of 10 LLM tokens today"),
        "{error}"
    );
    assert_eq!(
        mock.seen.lock().unwrap().len(),
        1,
        "the second node never called the model"
    );
}
