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

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Triggers;
use super::cron::{Clock, SystemClock};
use crate::secrets::Secrets;

mod auth;
mod intake;
mod server;

pub use auth::{AuthFailure, hmac_key, sign_standard_webhook, verify_standard_webhook};
pub use server::serve;

/// Signatures older or newer than this (seconds) are refused, against replay.
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// The longest `?wait=` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

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
        .route("/readyz", get(server::readyz))
        .route("/metrics", get(server::metrics))
        .route("/hooks/{pipeline}", post(intake::hook))
        .with_state(state)
}

/// An error reply: status plus a JSON body saying what is wrong.
#[derive(Debug)]
pub(super) struct Refusal {
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

/// A header's trimmed text, unless absent, empty or not text.
pub(super) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("2000").unwrap(), 2000);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert!(parse_size("lots").is_err());
    }
}
