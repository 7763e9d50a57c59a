//! `http`: one request with the engine's shared client.
//!
//! Output: `{status, headers: {lowercase-name: value}, body}`, the body parsed
//! when the response says it is JSON, else text; secrets masked. Failures:
//! connect errors, timeouts, 429 and 5xx are retryable (429/5xx honour
//! `Retry-After`); statuses listed in `retry_if.statuses` are retryable; other
//! 4xx are not. Messages show the URL with its password and any secret masked.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use sluice_shared::model::node::{HttpMethod, HttpNode};
use sluice_shared::template::Escape;

use super::{Execute, NodeContext, NodeError, Outcome, render, render_json};
use crate::http_client::{error_chain, retry_after};

/// Largest response body read; a longer one fails the attempt.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// Time limit for a request when the node sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Characters of a failed response's body quoted in the error message.
const SNIPPET_CHARS: usize = 200;

const USER_AGENT: &str = concat!("sluiced/", env!("CARGO_PKG_VERSION"));

impl Execute for HttpNode {
    /// Makes the request once. With `error_on_status: false` no status fails
    /// the node; otherwise statuses >= 400 and those listed in
    /// `retry_if.statuses` (even 2xx, to poll until something changes) do.
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let result = request(self, ctx).await;
        // The node ends its attempt's log: the engine relies on that.
        ctx.log.finish().await;
        result
    }
}

/// The parts of a response the node keeps.
struct Exchange {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum Failure {
    Transport(reqwest::Error),
    TooLarge,
}

async fn request(node: &HttpNode, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    let url_text = render(ctx, "url", &node.url, Escape::Text)?;
    let mut url = Url::parse(url_text.trim()).map_err(|e| {
        NodeError::fatal(format!(
            "`url` is not a valid URL ('{}'): {e}",
            ctx.redactor.redact(&url_text)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NodeError::fatal(format!(
            "`url` must use http or https, not '{}'",
            url.scheme()
        )));
    }
    let mut query = Vec::with_capacity(node.query.len());
    for (name, value) in &node.query {
        query.push((
            name.as_str(),
            render(ctx, &format!("query.{name}"), value, Escape::Text)?,
        ));
    }
    let shown = shown_url(ctx, &url, &query);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(&query);
    }

    let method = method_of(node.method);
    let timeout = ctx.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut builder = client_for(node.follow_redirects, ctx)?
        .request(method.clone(), url)
        .timeout(timeout);
    builder = match (&node.json, &node.body) {
        (Some(_), Some(_)) => {
            return Err(NodeError::fatal("give either `json` or `body`, not both"));
        }
        (Some(value), None) => builder.json(&render_json(ctx, "json", value)?),
        (None, Some(body)) => builder.body(render(ctx, "body", body, Escape::Text)?),
        (None, None) => builder,
    };
    // After `json`, so that a Content-Type given here wins over its default.
    builder = builder.headers(headers(node, ctx)?);

    let started = std::time::Instant::now();
    let exchange = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => {
            ctx.log.note(&format!("cancelled: {method} {shown} dropped")).await;
            return Err(NodeError::fatal("cancelled"));
        }
        result = exchange(builder, &method) => result,
    };
    let exchange = match exchange {
        Ok(exchange) => exchange,
        Err(Failure::TooLarge) => {
            return Err(NodeError::fatal(format!(
                "the response to {method} {shown} is larger than {} MiB",
                MAX_BODY / (1024 * 1024)
            )));
        }
        Err(Failure::Transport(error)) => {
            return Err(transport_error(ctx, &method, &shown, timeout, error));
        }
    };

    let status = exchange.status;
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    ctx.log
        .note(&format!(
            "{method} {shown} → {status_text} in {} ms",
            started.elapsed().as_millis()
        ))
        .await;
    let output = ctx.redactor.redact_json(output_of(&exchange));

    let code = status.as_u16();
    let listed = ctx.retry_if.statuses.contains(&code);
    if !node.error_on_status || (code < 400 && !listed) {
        return Ok(Outcome::Done(output));
    }
    let mut message = format!("{method} {shown} returned {status_text}");
    if let Some(snippet) = snippet(&output["body"]) {
        message.push_str(": ");
        message.push_str(&snippet);
    }
    let mut error = if code == 429 || status.is_server_error() || listed {
        NodeError::retryable(message)
    } else {
        NodeError::fatal(message)
    };
    if error.retryable {
        error.retry_after = retry_after(&exchange.headers, jiff::Timestamp::now());
    }
    Err(error.with_output(output))
}

fn method_of(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Options => Method::OPTIONS,
    }
}

/// The client for a request. The engine's shared client follows redirects
/// (its policy). reqwest has no per-request redirect setting, so
/// `follow_redirects: false` uses one process-wide client built with
/// `Policy::none()` on first use: its own connection pool, default settings
/// besides the user agent.
fn client_for(follow_redirects: bool, ctx: &NodeContext) -> Result<reqwest::Client, NodeError> {
    static NO_REDIRECTS: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    if follow_redirects {
        return Ok(ctx.http.clone());
    }
    NO_REDIRECTS
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(USER_AGENT)
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        // Never fall back to the following client: that would quietly ignore the setting.
        .map_err(|e| {
            NodeError::fatal(format!(
                "cannot create an HTTP client that does not follow redirects: {e}"
            ))
        })
}

fn headers(node: &HttpNode, ctx: &NodeContext) -> Result<HeaderMap, NodeError> {
    let mut headers = HeaderMap::with_capacity(node.headers.len());
    for (name, value) in &node.headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| NodeError::fatal(format!("invalid header name '{name}' in `headers`")))?;
        let rendered = render(ctx, &format!("headers.{name}"), value, Escape::Text)?;
        // The value is not quoted: it may hold a secret.
        let mut value = HeaderValue::from_str(&rendered).map_err(|_| {
            NodeError::fatal(format!(
                "header '{name}' has an invalid value (control characters or non-ASCII text)"
            ))
        })?;
        if ctx.redactor.redact(&rendered) != rendered {
            // Kept out of HTTP/2 header compression tables and debug output.
            value.set_sensitive(true);
        }
        headers.append(header, value);
    }
    Ok(headers)
}

/// The URL as shown in logs and errors: password masked, secrets masked.
/// Query values are masked before they are percent-encoded, where the
/// redactor could still recognise them.
fn shown_url(ctx: &NodeContext, url: &Url, query: &[(&str, String)]) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = shown.set_password(Some("***"));
    }
    if !query.is_empty() {
        shown
            .query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, ctx.redactor.redact(v))));
    }
    ctx.redactor.redact(shown.as_str()).into_owned()
}

async fn exchange(builder: reqwest::RequestBuilder, method: &Method) -> Result<Exchange, Failure> {
    let mut response = builder.send().await.map_err(Failure::Transport)?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    if *method != Method::HEAD
        && response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(Failure::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::Transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Failure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Exchange {
        status,
        headers,
        body,
    })
}

fn output_of(exchange: &Exchange) -> Value {
    let mut headers = Map::new();
    for (name, value) in &exchange.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        // Repeated headers are joined as RFC 9110 allows; names are already lowercase.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let text = || Value::String(String::from_utf8_lossy(&exchange.body).into_owned());
    let body = if is_json(&exchange.headers) {
        serde_json::from_slice(&exchange.body).unwrap_or_else(|_| text())
    } else {
        text()
    };
    json!({
        "status": exchange.status.as_u16(),
        "headers": headers,
        "body": body,
    })
}

/// `application/json` or any `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The start of a (redacted) response body, on one line, for an error message.
fn snippet(body: &Value) -> Option<String> {
    let text = match body {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return None;
    }
    let mut cut: String = one_line.chars().take(SNIPPET_CHARS).collect();
    if cut.len() < one_line.len() {
        cut.push('…');
    }
    Some(cut)
}

fn transport_error(
    ctx: &NodeContext,
    method: &Method,
    shown: &str,
    timeout: Duration,
    error: reqwest::Error,
) -> NodeError {
    // reqwest puts the full URL in its messages; ours shows the masked one.
    let error = error.without_url();
    let detail = ctx.redactor.redact(&error_chain(&error)).into_owned();
    if error.is_timeout() {
        NodeError::retryable(format!("{method} {shown} timed out after {timeout:?}"))
    } else if error.is_builder() {
        NodeError::fatal(format!(
            "cannot build the request {method} {shown}: {detail}"
        ))
    } else if error.is_redirect() {
        NodeError::fatal(format!("{method} {shown}: {detail}"))
    } else if error.is_connect() {
        NodeError::retryable(format!("cannot connect for {method} {shown}: {detail}"))
    } else {
        // Connection reset, truncated body and the like: the next try may pass.
        NodeError::retryable(format!("{method} {shown} failed: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus, Uri};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use sluice_shared::model::node::RetryIf;
    use tokio::sync::Notify;

    use super::*;
    use crate::nodes::test_support::{ATTEMPT_SECS, Deadline, context, lines_of};

    #[derive(Default)]
    struct Seen {
        bodies: Mutex<Vec<Value>>,
        arrived: Notify,
    }

    async fn status(Path(code): Path<u16>) -> Response {
        let mut response = (
            AxumStatus::from_u16(code).unwrap(),
            format!("status {code} body"),
        )
            .into_response();
        if code == 429 {
            response
                .headers_mut()
                .insert("retry-after", "7".parse().unwrap());
        }
        response
    }

    async fn echo(
        State(seen): State<Arc<Seen>>,
        headers: AxumHeaders,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        seen.bodies.lock().unwrap().push(body.clone());
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        Json(json!({ "got": body, "authorization": auth }))
    }

    async fn hang(State(seen): State<Arc<Seen>>) -> &'static str {
        seen.arrived.notify_one();
        std::future::pending::<()>().await;
        "never"
    }

    /// A server on 127.0.0.1 for one test; returns its base URL.
    async fn server() -> (String, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route(
                "/json",
                get(|| async { ([("x-Custom", "yes")], Json(json!({ "items": [1, 2] }))) }),
            )
            .route("/text", get(|| async { "plain text" }))
            .route(
                "/query",
                get(|uri: Uri| async move { uri.query().unwrap_or_default().to_owned() }),
            )
            .route("/echo", post(echo))
            .route("/status/{code}", get(status))
            .route("/hang", get(hang))
            .route("/redirect", get(|| async { Redirect::to("/json") }))
            .route("/big", get(|| async { vec![b'x'; MAX_BODY + 1] }))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn get_node(url: String) -> HttpNode {
        HttpNode {
            url,
            follow_redirects: true,
            error_on_status: true,
            ..HttpNode::default()
        }
    }

    fn done(outcome: Result<Outcome, NodeError>) -> Value {
        match outcome {
            Ok(Outcome::Done(v)) => v,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn get_parses_json_and_lowercases_header_names() {
        let (base, _) = server().await;
        let (ctx, mut rx) = context(json!({}), &[]);
        let out = done(
            get_node(format!("{base}/json"))
                .execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(out["status"], 200);
        assert_eq!(out["body"], json!({ "items": [1, 2] }));
        assert_eq!(out["headers"]["x-custom"], "yes");
        assert_eq!(out["headers"]["content-type"], "application/json");
        let notes = lines_of(&mut rx, "sluice");
        assert!(
            notes[0].starts_with(&format!("GET {base}/json → 200 OK in ")),
            "{notes:?}"
        );
    }

    #[tokio::test]
    async fn text_stays_text_and_query_values_are_rendered_and_encoded() {
        let (base, _) = server().await;
        let (ctx, _rx) = context(json!({ "inputs": { "q": "a b&c" } }), &[]);
        let out = done(
            get_node(format!("{base}/text"))
                .execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(out["body"], "plain text");
        let node = HttpNode {
            query: [("q".to_owned(), "{{ inputs.q }}".to_owned())]
                .into_iter()
                .collect(),
            ..get_node(format!("{base}/query?fixed=1"))
        };
        assert_eq!(
            done(
                node.execute(&ctx)
                    .deadline(ATTEMPT_SECS, "the node attempt")
                    .await
            )["body"],
            "fixed=1&q=a+b%26c"
        );
    }

    #[tokio::test]
    async fn post_json_arrives_at_the_server_and_secrets_are_masked() {
        let (base, seen) = server().await;
        let (ctx, _rx) = context(json!({ "inputs": { "n": 3 } }), &[("token", "t0ken-value")]);
        let node = HttpNode {
            method: HttpMethod::Post,
            headers: [(
                "Authorization".to_owned(),
                "Bearer {{ secrets.token }}".to_owned(),
            )]
            .into_iter()
            .collect(),
            json: Some(json!({ "n": "{{ inputs.n }}", "text": "n is {{ inputs.n }}" })),
            ..get_node(format!("{base}/echo"))
        };
        let out = done(
            node.execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(
            seen.bodies.lock().unwrap().as_slice(),
            [json!({ "n": 3, "text": "n is 3" })]
        );
        assert_eq!(out["body"]["got"]["n"], 3);
        assert_eq!(out["body"]["authorization"], "Bearer ***");
    }

    #[tokio::test]
    async fn server_errors_are_retryable_with_the_output_attached() {
        let (base, _) = server().await;
        let (ctx, _rx) = context(json!({}), &[]);
        let err = get_node(format!("{base}/status/500"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(err.retry_after, None);
        assert_eq!(
            err.message,
            format!("GET {base}/status/500 returned 500 Internal Server Error: status 500 body")
        );
        assert_eq!(err.output.unwrap()["status"], 500);
    }

    #[tokio::test]
    async fn too_many_requests_honours_retry_after() {
        let (base, _) = server().await;
        let (ctx, _rx) = context(json!({}), &[]);
        let err = get_node(format!("{base}/status/429"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn client_errors_are_fatal_unless_listed() {
        let (base, _) = server().await;
        let (mut ctx, _rx) = context(json!({}), &[]);
        let err = get_node(format!("{base}/status/404"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert_eq!(err.output.unwrap()["body"], "status 404 body");
        ctx.retry_if = RetryIf {
            exit_codes: vec![],
            statuses: vec![404, 202],
        };
        assert!(
            get_node(format!("{base}/status/404"))
                .execute(&ctx)
                .await
                .unwrap_err()
                .retryable
        );
        assert!(
            get_node(format!("{base}/status/202"))
                .execute(&ctx)
                .await
                .unwrap_err()
                .retryable
        );
    }

    #[tokio::test]
    async fn without_error_on_status_any_status_is_an_output() {
        let (base, _) = server().await;
        let (ctx, _rx) = context(json!({}), &[]);
        let node = HttpNode {
            error_on_status: false,
            ..get_node(format!("{base}/status/404"))
        };
        let out = done(
            node.execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(out["status"], 404);
    }

    #[tokio::test]
    async fn redirects_are_followed_unless_disabled() {
        let (base, _) = server().await;
        let (ctx, _rx) = context(json!({}), &[]);
        assert_eq!(
            done(
                get_node(format!("{base}/redirect"))
                    .execute(&ctx)
                    .deadline(ATTEMPT_SECS, "the node attempt")
                    .await
            )["status"],
            200
        );
        let node = HttpNode {
            follow_redirects: false,
            ..get_node(format!("{base}/redirect"))
        };
        let out = done(
            node.execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(out["status"], 303);
        assert_eq!(out["headers"]["location"], "/json");
    }

    #[tokio::test]
    async fn timeouts_are_retryable() {
        let (base, _) = server().await;
        let (mut ctx, _rx) = context(json!({}), &[]);
        ctx.timeout = Some(Duration::from_millis(300));
        let err = get_node(format!("{base}/hang"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(
            err.message,
            format!("GET {base}/hang timed out after 300ms")
        );
    }

    #[tokio::test]
    async fn cancel_drops_a_request_in_flight() {
        let (base, seen) = server().await;
        let (ctx, _rx) = context(json!({}), &[]);
        let node = get_node(format!("{base}/hang"));
        let (result, ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(node.execute(&ctx), async {
                seen.arrived.notified().await;
                ctx.cancel.cancel();
            })
        })
        .await
        .expect("cancel ends the attempt well before the 30 s default timeout");
        let err = result.unwrap_err();
        assert_eq!(err.message, "cancelled");
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn connect_errors_are_retryable_and_never_show_secrets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (ctx, _rx) = context(json!({}), &[("hook", "hook-s3cret")]);
        let node = HttpNode {
            query: [("key".to_owned(), "{{ secrets.hook }}/+=".to_owned())]
                .into_iter()
                .collect(),
            ..get_node(format!(
                "http://user:pa55word@{addr}/hooks/{{{{ secrets.hook }}}}"
            ))
        };
        let err = node
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert!(
            err.message.starts_with(&format!(
                "cannot connect for GET http://user:***@{addr}/hooks/***?key="
            )),
            "{}",
            err.message
        );
        assert!(
            !err.message.contains("s3cret") && !err.message.contains("pa55word"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let (base, _) = server().await;
        let (ctx, _rx) = context(json!({}), &[]);
        let err = get_node(format!("{base}/big"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message.ends_with("is larger than 10 MiB"),
            "{}",
            err.message
        );
    }
}
