//! The webhook listener: `POST /hooks/<pipeline>` starts a run, `GET /healthz`
//! and `GET /readyz` answer probes.
//!
//! A delivery is checked in this order, so nothing is parsed or stored before
//! it is authenticated: pipeline known (404), content type (415), body size
//! and read time (413, 408), signature or token on the raw bytes (401, 403),
//! pipeline enabled (409), JSON and inputs (400). The reply (202 with the run
//! id) is sent only after the run is committed; `?wait=30s` instead waits for
//! the run to finish and replies with its state and outputs.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that a
//! header read timeout applies: a client that trickles headers, or holds an
//! idle keep-alive connection, is cut off and cannot starve real deliveries.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sluice_shared::model::Trigger;
use sluice_shared::model::trigger::{WebhookAuth, WebhookTrigger};
use sluice_shared::run::{RunId, TriggerInfo, TriggerKind};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::cron::{Clock, SystemClock};
use super::{Counters, Fired, TriggerError, Triggers};
use crate::engine::EngineError;
use crate::secrets::{MASK, MIN_AUTH_KEY_LEN, Redactor, Secrets};

/// Signatures older or newer than this (seconds) are refused, against replay.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// The longest `?wait=` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Longest delivery key accepted (as Stripe's idempotency keys).
const MAX_KEY_LEN: usize = 255;

/// Request headers never copied into `trigger.headers` (credentials).
const HIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "webhook-signature",
    "x-hub-signature",
    "x-hub-signature-256",
    "stripe-signature",
];

/// Headers whose values are stored as sent: harmless metadata that senders
/// (GitHub, GitLab, Gitea, Bitbucket, Standard Webhooks) put on deliveries.
/// Every other header is kept by name with its value masked, since senders
/// invent credential headers freely (`X-Gitlab-Token`, `X-Api-Key`, ...).
const HARMLESS_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "expect",
    "forwarded",
    "host",
    "idempotency-key",
    "traceparent",
    "tracestate",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-correlation-id",
    "x-event-key",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-gitea-delivery",
    "x-gitea-event",
    "x-github-delivery",
    "x-github-event",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-instance",
    "x-gitlab-webhook-uuid",
    "x-gogs-event",
    "x-hook-uuid",
    "x-real-ip",
    "x-request-id",
];

/// Parts of a header name that suggest a credential: such a header is masked
/// even if it is on the allowlist.
const CREDENTIAL_WORDS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "signature",
    "password",
    "passwd",
    "cookie",
    "session",
    "credential",
    "apikey",
    "api-key",
    "private",
];

/// Whether a header's value may be stored as sent.
fn harmless_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    HARMLESS_HEADERS.contains(&n.as_str()) && !CREDENTIAL_WORDS.iter().any(|w| n.contains(w))
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Largest request body in bytes (413 beyond).
    pub max_body: usize,
    /// Time a client has to send a request's headers (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (408 beyond).
    pub body_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// Connections one client address may hold open; beyond, 503 and close.
    pub max_per_peer: usize,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            max_body: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_per_peer: 256,
        }
    }
}

/// Why a size such as "1MiB" could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid size '{0}': use bytes or a unit, e.g. 1048576, 512KiB, 1MiB, 10MB")]
pub struct SizeError(String);

/// Reads a byte size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB).
pub fn parse_size(text: &str) -> Result<usize, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| SizeError(text.to_owned()))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1024 * 1024 * 1024,
        _ => return Err(SizeError(text.to_owned())),
    };
    n.checked_mul(mult)
        .ok_or_else(|| SizeError(text.to_owned()))
}

/// What the listener's handlers share; cheap to clone.
#[derive(Clone)]
pub struct WebhookState {
    triggers: Triggers,
    secrets: Arc<RwLock<Arc<Secrets>>>,
    opts: WebhookOptions,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
    /// `GET /metrics`, when served, with the secret naming its bearer token.
    metrics: Option<(Arc<crate::prometheus::Exporter>, Option<String>)>,
}

impl WebhookState {
    /// State for a listener; `ready` starts false (see [`WebhookState::set_ready`]).
    pub fn new(
        triggers: Triggers,
        secrets: Secrets,
        opts: WebhookOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            triggers,
            secrets: Arc::new(RwLock::new(Arc::new(secrets))),
            opts,
            ready: Arc::new(AtomicBool::new(false)),
            shutdown,
            clock: Arc::new(SystemClock),
            metrics: None,
        }
    }

    /// Serves `GET /metrics` from `exporter`; with `token_secret`, only to
    /// requests bearing that secret's value.
    pub fn with_metrics(
        mut self,
        exporter: Arc<crate::prometheus::Exporter>,
        token_secret: Option<String>,
    ) -> Self {
        self.metrics = Some((exporter, token_secret));
        self
    }

    /// Uses `clock` for signature timestamps (tests check published vectors at their own time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Marks the daemon ready (pipelines loaded) for `GET /readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready
            .store(ready, std::sync::atomic::Ordering::Release);
    }

    /// Replaces the secrets (after a reload).
    pub fn set_secrets(&self, secrets: Secrets) {
        if let Ok(mut s) = self.secrets.write() {
            *s = Arc::new(secrets);
        }
    }

    fn secrets(&self) -> Arc<Secrets> {
        self.secrets
            .read()
            .map_or_else(|_| Arc::new(Secrets::default()), |s| Arc::clone(&s))
    }
}

/// The routes, for serving or for tests.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hooks/{pipeline}", post(hook))
        .with_state(state)
}

/// Serves `listener` until `shutdown`: stops accepting, lets requests in
/// progress finish (a `?wait` answers at once with the run's current state).
pub async fn serve(listener: TcpListener, state: WebhookState, shutdown: CancellationToken) {
    let app = router(state.clone());
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(state.opts.max_connections.max(1)));
    let peers = super::peers::PeerSlots::new(state.opts.max_per_peer);
    let mut backoff = crate::fdlimit::Backoff::default();
    let telemetry = state.triggers.engine().telemetry().clone();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => {
                    if backoff.succeeded() {
                        tracing::info!("webhook listener: accepting connections again");
                    }
                    c
                }
                Err(e) => {
                    // Out of file descriptors (the pending connection stays
                    // queued) and the like: back off instead of spinning, and
                    // say so once per streak, not once per try.
                    let (pause, first) = backoff.failed();
                    if first {
                        let why = if crate::fdlimit::is_exhaustion(&e) {
                            "out of file descriptors; retrying with backoff"
                        } else {
                            "retrying with backoff"
                        };
                        tracing::warn!(error = %e, "webhook listener: accept failed: {why}");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(peer_slot) = peers.claim(peer.ip()) else {
            tracker.spawn(refuse_busy_peer(stream, peer, permit));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let header_timeout = state.opts.header_timeout;
        let stop = shutdown.clone();
        let telemetry = telemetry.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let _peer_slot = peer_slot;
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    // Only deliveries are counted: probes and scrapes are not webhooks.
                    let hook = req.uri().path().starts_with("/hooks/");
                    let started = std::time::Instant::now();
                    let answered = app.clone().oneshot(req.map(Body::new));
                    let telemetry = telemetry.clone();
                    async move {
                        let r = answered.await;
                        if hook && let Ok(resp) = &r {
                            telemetry.webhook_answered(resp.status().as_u16(), started.elapsed());
                        }
                        r
                    }
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "webhook connection ended");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Tells a client over its per-address connection cap to come back later,
/// without reading its request, and closes (the connection slot is held
/// until then: the descriptor is still in use).
async fn refuse_busy_peer(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    use tokio::io::AsyncWriteExt;
    tracing::debug!(%peer, "webhook listener: too many connections from this address");
    const BODY: &str = "{\"error\":\"too many connections from your address; retry later\"}\n";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// `GET /metrics`: 404 when not served, 401 without the configured bearer token.
async fn metrics(State(st): State<WebhookState>, headers: HeaderMap) -> Response {
    let Some((exporter, token_secret)) = &st.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not served here\n").into_response();
    };
    if let Some(name) = token_secret {
        let secrets = st.secrets();
        // A token that cannot be read refuses every scrape rather than opening the endpoint.
        let Some(expected) = secrets.get(name) else {
            tracing::warn!(secret = %name, "metrics: the [http] metrics_token secret is not set; refusing scrapes");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics token not configured\n",
            )
                .into_response();
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared as digests in constant time, like webhook bearer tokens.
        let given = CtOutput::<Sha256>::new(Sha256::digest(given.trim().as_bytes()));
        let expected = CtOutput::<Sha256>::new(Sha256::digest(expected.as_bytes()));
        if given != expected {
            let mut r = (StatusCode::UNAUTHORIZED, "bearer token required\n").into_response();
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice metrics\""),
            );
            return r;
        }
    }
    match exporter.render().await {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static(crate::prometheus::CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(st): State<WebhookState>) -> Response {
    let ready = st.ready.load(std::sync::atomic::Ordering::Acquire) && !st.shutdown.is_cancelled();
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// An error reply: status plus a JSON body saying what is wrong.
struct Refusal {
    status: StatusCode,
    message: String,
    /// A limit's refusal: 429 with `Retry-After` and the IETF RateLimit headers.
    limit: Option<Box<crate::limits::Refusal>>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            limit: None,
        }
    }

    fn limited(refusal: crate::limits::Refusal) -> Self {
        // A full queue is the server's state, not the caller's fault: 503. A
        // user's own share of the queue, like its rate, is 429.
        let status = if refusal.limit == crate::limits::LimitKind::Queue {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        Self {
            status,
            message: refusal.message.clone(),
            limit: Some(Box::new(refusal)),
        }
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) for `user`'s rate.
fn rate_headers(r: &mut Response, limits: &crate::limits::Limits, user: &str) {
    if let Some((quota, remaining)) = limits.rate_remaining(user) {
        let state = crate::limits::RateState { quota, remaining };
        if let (Ok(p), Ok(v)) = (
            HeaderValue::from_str(&state.policy_header()),
            HeaderValue::from_str(&state.state_header()),
        ) {
            r.headers_mut().insert("ratelimit-policy", p);
            r.headers_mut().insert("ratelimit", v);
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "status": self.status.as_u16() });
        if let (Some(l), Value::Object(m)) = (&self.limit, &mut body) {
            m.insert("limit".into(), Value::String(l.limit.as_str().into()));
            m.insert("retry_after_s".into(), l.retry_after_secs().into());
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(l) = &self.limit {
            let headers = r.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(l.retry_after_secs()));
            if let (Ok(p), Ok(v)) = (
                HeaderValue::from_str(&l.policy_header()),
                HeaderValue::from_str(&l.state_header()),
            ) {
                headers.insert("ratelimit-policy", p);
                headers.insert("ratelimit", v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer, Standard-Webhooks"),
            );
        }
        r
    }
}

async fn hook(
    State(st): State<WebhookState>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match intake(&st, &name, peer, req).await {
        Ok(r) => r,
        Err(refusal) => {
            Counters::add(&st.triggers.counters().webhook_rejected, 1);
            // `?` quotes and escapes: the name comes from the URL, and a newline in it must not forge a log line.
            if refusal.status.is_server_error() {
                tracing::error!(pipeline = ?name, %peer, status = %refusal.status, error = ?refusal.message, "webhook refused");
            } else {
                tracing::info!(pipeline = ?name, %peer, status = %refusal.status, error = ?refusal.message, "webhook refused");
            }
            refusal.into_response()
        }
    }
}

async fn intake(
    st: &WebhookState,
    name: &str,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, Refusal> {
    let entry =
        st.triggers.registry().get(name).ok_or_else(|| {
            Refusal::new(StatusCode::NOT_FOUND, format!("unknown pipeline '{name}'"))
        })?;
    let hooks: Vec<&WebhookTrigger> = entry
        .pipeline
        .triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Webhook(w) => Some(&w.webhook),
            Trigger::Cron(_) => None,
        })
        .collect();
    if hooks.is_empty() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("pipeline '{name}' has no webhook trigger"),
        ));
    }
    let wait = wait_param(req.uri().query())?;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    if let Some(ct) = &content_type
        && !is_json(ct)
    {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type '{ct}' is not JSON; send application/json"),
        ));
    }
    let max = st.opts.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let read = tokio::time::timeout(st.opts.body_timeout, Limited::new(body, max).collect()).await;
    let bytes = match read {
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body was not received within {}",
                    sluice_shared::Duration(st.opts.body_timeout)
                ),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(max)),
        Ok(Err(e)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if content_type.is_none() && !bytes.is_empty() {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body has no content type; send application/json",
        ));
    }

    // Authenticate on the raw bytes before anything is parsed or stored.
    let secrets = st.secrets();
    let now = st.clock.now().as_second();
    // A user's token (`sluice token create`) authenticates as that user; otherwise the
    // webhook trigger's own credentials decide, and its configured user (or the owner) applies.
    let (hook_user, signed) = match user_token(st, name, &headers).await? {
        Some(user) => (Some(user), false),
        None => {
            let hook = authenticate(&hooks, &secrets, &headers, &bytes, now)
                .map_err(|f| f.refusal(name))?;
            (hook.user.clone(), hook.auth == WebhookAuth::Hmac)
        }
    };

    if !entry.runnable() {
        let why = if entry.present {
            "disabled"
        } else {
            "removed (its file was deleted)"
        };
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("pipeline '{name}' is {why}"),
        ));
    }
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            Refusal::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}"))
        })?
    };
    let inputs: Map<String, Value> = match &body {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| entry.pipeline.inputs.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => Map::new(),
    };
    let key = delivery_key(&headers, signed)?;
    let request_id = header_text(&headers, "webhook-id")
        .or_else(|| header_text(&headers, "x-request-id"))
        .map_or_else(
            || format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            str::to_owned,
        );
    let mut details = json!({
        "request_id": request_id,
        "source": peer.to_string(),
        "body": body,
        "headers": visible_headers(&headers, &secrets.redactor()),
    });
    if let (Some(k), Value::Object(m)) = (&key, &mut details) {
        m.insert("delivery_key".into(), Value::String(k.clone()));
    }
    let trigger = TriggerInfo {
        kind: TriggerKind::Webhook,
        user: hook_user.or_else(|| entry.pipeline.owner.clone()),
        details,
    };
    let limits_user = crate::limits::user_key(trigger.user.as_deref()).to_owned();
    let scoped = key.as_ref().map(|k| format!("hook:{k}"));
    let fired = st
        .triggers
        .fire(&entry, &inputs, trigger, scoped.as_deref())
        .await
        .map_err(|e| match e {
            TriggerError::Input(m) => Refusal::new(StatusCode::BAD_REQUEST, m),
            TriggerError::UnknownPipeline(_) => Refusal::new(StatusCode::NOT_FOUND, e.to_string()),
            TriggerError::Disabled { .. } => Refusal::new(StatusCode::CONFLICT, e.to_string()),
            TriggerError::Engine(EngineError::Stopping) => {
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping")
            }
            TriggerError::Limited(r) => Refusal::limited(r),
            other => Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the run could not be committed: {other}"),
            ),
        })?;
    let (run, created) = match fired {
        Fired::Started { run, created } => (run, created),
        Fired::Skipped { reason } => {
            // Handled as the pipeline asks: a retry would not help, so this is a success.
            return Ok((
                StatusCode::OK,
                axum::Json(json!({ "run": null, "skipped": true, "reason": reason, "request_id": request_id })),
            )
                .into_response());
        }
    };
    let counters = st.triggers.counters();
    Counters::add(
        if created {
            &counters.webhook_accepted
        } else {
            &counters.webhook_duplicates
        },
        1,
    );
    let mut response = match wait {
        None => (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "run": run.0,
                "pipeline": name,
                "duplicate": !created,
                "request_id": request_id,
            })),
        )
            .into_response(),
        Some(limit) => wait_for(st, run, name, limit, created, &request_id).await,
    };
    rate_headers(&mut response, st.triggers.engine().limits(), &limits_user);
    Ok(response)
}

async fn wait_for(
    st: &WebhookState,
    run: RunId,
    name: &str,
    limit: Duration,
    created: bool,
    request_id: &str,
) -> Response {
    let engine = st.triggers.engine();
    let finished = tokio::select! {
        r = tokio::time::timeout(limit, engine.wait(run)) => r.ok().and_then(Result::ok),
        () = st.shutdown.cancelled() => None,
    };
    let store = engine.store();
    let Some(record) = finished else {
        let state = store
            .run(run)
            .await
            .ok()
            .flatten()
            .map(|r| r.state.as_str());
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "run": run.0,
                "pipeline": name,
                "duplicate": !created,
                "finished": false,
                "state": state,
                "waited": sluice_shared::Duration(limit).to_string(),
                "request_id": request_id,
            })),
        )
            .into_response();
    };
    let outputs: Map<String, Value> = store
        .nodes(run)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.node_id, n.output.unwrap_or(Value::Null)))
        .collect();
    (
        StatusCode::OK,
        axum::Json(json!({
            "run": run.0,
            "pipeline": name,
            "duplicate": !created,
            "finished": true,
            "state": record.state.as_str(),
            "error": record.error,
            "outputs": outputs,
            "request_id": request_id,
        })),
    )
        .into_response()
}

fn too_large(max: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {max} bytes ([http] max_body)"),
    )
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn wait_param(query: Option<&str>) -> Result<Option<Duration>, Refusal> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "wait" {
            continue;
        }
        let d: sluice_shared::Duration = serde_json::from_value(Value::String(v.to_owned()))
            .map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("wait: '{v}' is not a duration (e.g. 30s, 2m)"),
                )
            })?;
        if d.std() > MAX_WAIT {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("wait: {v} is longer than the maximum of 5m"),
            ));
        }
        return Ok(Some(d.std()));
    }
    Ok(None)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The delivery key. For a signed (HMAC) delivery it is the signed
/// `webhook-id`: an unsigned `Idempotency-Key` could be changed by anyone
/// replaying the delivery, so it is ignored. Otherwise `Idempotency-Key`,
/// else `webhook-id`.
fn delivery_key(headers: &HeaderMap, signed: bool) -> Result<Option<String>, Refusal> {
    let k = if signed {
        let id = header_text(headers, "webhook-id");
        if let (Some(id), Some(other)) = (id, header_text(headers, "idempotency-key"))
            && id != other
        {
            tracing::debug!(
                "Idempotency-Key differs from the signed webhook-id; the webhook-id is the delivery key"
            );
        }
        id
    } else {
        header_text(headers, "idempotency-key").or_else(|| header_text(headers, "webhook-id"))
    };
    let Some(k) = k else {
        return Ok(None);
    };
    if k.len() > MAX_KEY_LEN || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "delivery key (Idempotency-Key or webhook-id) must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ),
        ));
    }
    Ok(Some(k.to_owned()))
}

/// The headers stored with the run (`trigger.headers`): credentials dropped,
/// anything not known to be harmless masked, and secret values masked in the rest.
fn visible_headers(headers: &HeaderMap, redactor: &Redactor) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HIDDEN_HEADERS.contains(&n) {
            continue;
        }
        let shown = if harmless_header(n) {
            redactor
                .redact(&String::from_utf8_lossy(value.as_bytes()))
                .into_owned()
        } else {
            MASK.to_owned()
        };
        out.insert(n.to_owned(), Value::String(shown));
    }
    Value::Object(out)
}

/// Why a delivery was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials were presented (401).
    Missing(String),
    /// Credentials were presented and are wrong, stale or malformed (403).
    Wrong(String),
    /// The server cannot check: a secret is not configured (500).
    Config(String),
    /// The trigger's secret is too short to authenticate anything (401).
    Disabled(String),
}

impl AuthFailure {
    fn refusal(self, pipeline: &str) -> Refusal {
        match self {
            Self::Missing(m) => Refusal::new(StatusCode::UNAUTHORIZED, m),
            Self::Disabled(m) => Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!("webhook of pipeline '{pipeline}' is disabled: {m}"),
            ),
            Self::Wrong(m) => Refusal::new(StatusCode::FORBIDDEN, m),
            Self::Config(m) => Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("webhook of pipeline '{pipeline}' cannot be verified: {m}"),
            ),
        }
    }
}

/// The user of a `slk_` bearer token, if the request presents one: unknown,
/// revoked or out-of-scope tokens are refused (403), not passed on to other checks.
async fn user_token(
    st: &WebhookState,
    pipeline: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, Refusal> {
    let Some(token) = header_text(headers, "authorization")
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| t.starts_with(crate::limits::tokens::TOKEN_PREFIX))
    else {
        return Ok(None);
    };
    // Issued tokens carry 32 random bytes; a short one was never issued and is not looked up.
    if token.len() < crate::limits::tokens::TOKEN_PREFIX.len() + MIN_AUTH_KEY_LEN {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the token is too short to be a sluice token",
        ));
    }
    let row = st
        .triggers
        .engine()
        .store()
        .token_by_hash(&crate::limits::tokens::token_hash(token))
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token: {e}"),
            )
        })?;
    match row {
        None => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the token is not valid (unknown or revoked)",
        )),
        Some(t) if t.pipeline.as_deref().is_some_and(|p| p != pipeline) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("the token may not trigger pipeline '{pipeline}'"),
        )),
        Some(t) => Ok(Some(t.user)),
    }
}

/// Finds the webhook trigger the request authenticates for.
fn authenticate<'a>(
    hooks: &[&'a WebhookTrigger],
    secrets: &Secrets,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<&'a WebhookTrigger, AuthFailure> {
    let mut failure: Option<AuthFailure> = None;
    for hook in hooks {
        let result = match hook.auth {
            WebhookAuth::None => Ok(()),
            WebhookAuth::Bearer => check_bearer(hook, secrets, headers),
            WebhookAuth::Hmac => hmac_keys(hook, secrets).and_then(|keys| {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                verify_standard_webhook(&refs, headers, body, now_secs)
            }),
        };
        match result {
            Ok(()) => return Ok(hook),
            // Keep the most telling failure: wrong credentials beat missing ones.
            Err(f) => {
                let rank = |f: &AuthFailure| match f {
                    AuthFailure::Missing(_) => 0,
                    AuthFailure::Wrong(_) => 1,
                    AuthFailure::Disabled(_) => 2,
                    AuthFailure::Config(_) => 3,
                };
                if failure.as_ref().is_none_or(|old| rank(&f) > rank(old)) {
                    failure = Some(f);
                }
            }
        }
    }
    Err(failure
        .unwrap_or_else(|| AuthFailure::Missing("no webhook trigger accepts this request".into())))
}

/// The trigger's secrets as `(name, value)`.
fn secret_values<'s>(
    hook: &'s WebhookTrigger,
    secrets: &'s Secrets,
) -> Result<Vec<(&'s str, &'s str)>, AuthFailure> {
    let names = hook.secret.as_ref().map(|s| s.names()).unwrap_or_default();
    if names.is_empty() {
        return Err(AuthFailure::Config("no secret is named".into()));
    }
    names
        .into_iter()
        .map(|n| {
            secrets
                .get(n)
                .map(|v| (n, v))
                .ok_or_else(|| AuthFailure::Config(format!("secret '{n}' is not configured")))
        })
        .collect()
}

/// Keeps the credentials long enough to authenticate; when none is, the
/// webhook is disabled, naming the secrets.
fn strong<T>(found: Vec<(&str, Option<T>, usize)>, what: &str) -> Result<Vec<T>, AuthFailure> {
    let mut weak = Vec::new();
    let mut keys = Vec::new();
    for (name, key, len) in found {
        match key {
            Some(k) if len >= MIN_AUTH_KEY_LEN => keys.push(k),
            _ => weak.push(format!("'{name}'")),
        }
    }
    if keys.is_empty() {
        return Err(AuthFailure::Disabled(format!(
            "secret {} is not a valid {what} of at least {MIN_AUTH_KEY_LEN} bytes",
            weak.join(", ")
        )));
    }
    Ok(keys)
}

/// The trigger's HMAC keys of at least [`MIN_AUTH_KEY_LEN`] bytes.
fn hmac_keys(hook: &WebhookTrigger, secrets: &Secrets) -> Result<Vec<Vec<u8>>, AuthFailure> {
    let found = secret_values(hook, secrets)?
        .into_iter()
        .map(|(n, v)| {
            let key = crate::secrets::hmac_key_bytes(v);
            let len = key.as_ref().map_or(0, Vec::len);
            (n, key, len)
        })
        .collect();
    strong(found, "HMAC key")
}

fn check_bearer(
    hook: &WebhookTrigger,
    secrets: &Secrets,
    headers: &HeaderMap,
) -> Result<(), AuthFailure> {
    let Some(auth) = header_text(headers, "authorization") else {
        return Err(AuthFailure::Missing(
            "missing Authorization: Bearer <token>".into(),
        ));
    };
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Err(AuthFailure::Wrong(
            "the Authorization header is not a bearer token".into(),
        ));
    };
    // Compare digests in constant time, so neither content nor length leaks.
    let given = CtOutput::<Sha256>::new(Sha256::digest(token.trim().as_bytes()));
    let mut ok = false;
    let values = strong(
        secret_values(hook, secrets)?
            .into_iter()
            .map(|(n, v)| (n, Some(v), v.len()))
            .collect(),
        "bearer secret",
    )?;
    for value in values {
        let expected = CtOutput::<Sha256>::new(Sha256::digest(value.as_bytes()));
        ok |= given == expected;
    }
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::Wrong("the bearer token is not valid".into()))
    }
}

/// The HMAC key of a secret: `whsec_<base64>` decodes; anything else is used as is.
pub fn hmac_key(secret: &str) -> Result<Vec<u8>, AuthFailure> {
    crate::secrets::hmac_key_bytes(secret)
        .ok_or_else(|| AuthFailure::Config("a whsec_ secret is not valid base64".into()))
}

/// Verifies a Standard Webhooks signature: `webhook-signature` holds one or
/// more space-separated `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`;
/// any of `keys` may match (key rotation); the timestamp must be within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now_secs`.
pub fn verify_standard_webhook(
    keys: &[&[u8]],
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), AuthFailure> {
    let (Some(id), Some(ts), Some(sigs)) = (
        header_text(headers, "webhook-id"),
        header_text(headers, "webhook-timestamp"),
        header_text(headers, "webhook-signature"),
    ) else {
        return Err(AuthFailure::Missing(
            "missing webhook-id, webhook-timestamp or webhook-signature header".into(),
        ));
    };
    let stamp: i64 = ts.parse().map_err(|_| {
        AuthFailure::Wrong("webhook-timestamp is not a Unix time in seconds".into())
    })?;
    let skew = now_secs.saturating_sub(stamp);
    if skew.abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(AuthFailure::Wrong(format!(
            "webhook-timestamp is {}s {} the server's time (tolerance {TIMESTAMP_TOLERANCE_SECS}s)",
            skew.abs(),
            if skew > 0 { "behind" } else { "ahead of" }
        )));
    }
    let v1: Vec<&str> = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .collect();
    if v1.is_empty() {
        return Err(AuthFailure::Wrong(
            "webhook-signature has no v1 signature".into(),
        ));
    }
    // A v1 entry that is not base64 of 32 bytes is there, and does not match.
    let candidates: Vec<Vec<u8>> = v1
        .iter()
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|sig| sig.len() == 32)
        .collect();
    let mut ok = false;
    for key in keys {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            continue;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        for sig in &candidates {
            // verify_slice compares in constant time.
            ok |= mac.clone().verify_slice(sig).is_ok();
        }
    }
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::Wrong("the signature does not match".into()))
    }
}

/// Signs like a Standard Webhooks sender: `v1,<base64>` (tests and benchmarks).
pub fn sign_standard_webhook(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    /// The published Standard Webhooks test vector (standard-webhooks repo, libraries' tests).
    #[test]
    fn standard_webhooks_published_vector_verifies() {
        let key = hmac_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            sign_standard_webhook(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            sig
        );
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", sig);
        assert_eq!(
            verify_standard_webhook(&[&key], &h, body, 1614265330),
            Ok(())
        );
        // One changed bit anywhere fails.
        assert!(
            verify_standard_webhook(&[&key], &h, br#"{"test": 2432232315}"#, 1614265330).is_err()
        );
        let h2 = headers("msg_p5jXN8AQM9LWM0D4loKWxJeK", "1614265330", sig);
        assert!(verify_standard_webhook(&[&key], &h2, body, 1614265330).is_err());
        let mut other = key.clone();
        other[0] ^= 1;
        assert!(verify_standard_webhook(&[&other], &h, body, 1614265330).is_err());
        // Either of two keys (rotation), and several signatures in the header.
        assert_eq!(
            verify_standard_webhook(&[&other, &key], &h, body, 1614265330),
            Ok(())
        );
        let multi = headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &format!("v1,AAAA v1a,xyz {sig}"),
        );
        assert_eq!(
            verify_standard_webhook(&[&key], &multi, body, 1614265330),
            Ok(())
        );
    }

    /// A `v1,` entry that does not match (short, not base64, or another key's)
    /// is a signature that does not match, not a missing one.
    #[test]
    fn a_wrong_v1_signature_is_said_not_to_match() {
        let key = b"secret-key-bytes".to_vec();
        let ts = 1_700_000_000;
        for sig in [
            "v1,AAAA",
            "v1,!!!",
            &sign_standard_webhook(b"other", "m", ts, b"{}"),
        ] {
            let h = headers("m", &ts.to_string(), sig);
            assert_eq!(
                verify_standard_webhook(&[&key], &h, b"{}", ts),
                Err(AuthFailure::Wrong("the signature does not match".into())),
                "{sig}"
            );
        }
        let h = headers("m", &ts.to_string(), "v2,AAAA");
        assert_eq!(
            verify_standard_webhook(&[&key], &h, b"{}", ts),
            Err(AuthFailure::Wrong(
                "webhook-signature has no v1 signature".into()
            ))
        );
    }

    #[test]
    fn timestamps_within_five_minutes_only() {
        let key = b"secret-key-bytes".to_vec();
        let body = b"{}";
        for (offset, ok) in [
            (299, true),
            (-299, true),
            (300, true),
            (301, false),
            (-301, false),
        ] {
            let ts = 1_700_000_000 + offset;
            let sig = sign_standard_webhook(&key, "msg_1", ts, body);
            let h = headers("msg_1", &ts.to_string(), &sig);
            assert_eq!(
                verify_standard_webhook(&[&key], &h, body, 1_700_000_000).is_ok(),
                ok,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn only_harmless_headers_keep_their_values() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        h.insert("x-gitlab-token", "glpat-abc".parse().unwrap());
        h.insert("x-api-key", "k-123".parse().unwrap());
        h.insert("x-weird", "anything".parse().unwrap());
        h.insert("authorization", "Bearer t".parse().unwrap());
        h.insert(
            "user-agent",
            "agent with s3cret-value inside".parse().unwrap(),
        );
        let r = Redactor::new(["s3cret-value".to_owned()]);
        let v = visible_headers(&h, &r);
        assert_eq!(v["content-type"], "application/json");
        assert_eq!(v["x-github-event"], "push");
        assert_eq!(v["x-gitlab-token"], MASK);
        assert_eq!(v["x-api-key"], MASK);
        assert_eq!(v["x-weird"], MASK);
        assert!(v.get("authorization").is_none());
        assert_eq!(v["user-agent"], "agent with *** inside");
        // No allowlisted name looks like a credential (the two lists never disagree).
        for n in HARMLESS_HEADERS {
            assert!(harmless_header(n), "{n}");
        }
        assert!(!harmless_header("x-auth-token"));
    }

    #[test]
    fn a_signed_delivery_is_keyed_by_its_webhook_id_only() {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("idempotency-key", "other".parse().unwrap());
        assert_eq!(
            delivery_key(&h, true).ok().flatten().as_deref(),
            Some("msg_1")
        );
        assert_eq!(
            delivery_key(&h, false).ok().flatten().as_deref(),
            Some("other")
        );
        h.remove("webhook-id");
        assert_eq!(delivery_key(&h, true).ok().flatten(), None);
    }

    #[test]
    fn short_keys_disable_the_trigger_and_name_the_secret() {
        let hook: WebhookTrigger = serde_json::from_value(
            serde_json::json!({ "auth": "hmac", "secret": ["weak", "good"] }),
        )
        .unwrap();
        let secrets = Secrets::from_map(std::collections::BTreeMap::from([
            ("weak".to_owned(), "whsec_".to_owned()),
            ("good".to_owned(), "0123456789abcdef".to_owned()),
        ]));
        assert_eq!(
            hmac_keys(&hook, &secrets).unwrap(),
            vec![b"0123456789abcdef".to_vec()]
        );
        let only_weak = Secrets::from_map(std::collections::BTreeMap::from([
            ("weak".to_owned(), "whsec_".to_owned()),
            ("good".to_owned(), "0123456789abcde".to_owned()),
        ]));
        match hmac_keys(&hook, &only_weak) {
            Err(AuthFailure::Disabled(m)) => {
                assert!(m.contains("'weak'") && m.contains("'good'"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("2000").unwrap(), 2000);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert!(parse_size("lots").is_err());
    }
}
