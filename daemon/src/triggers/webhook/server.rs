//! The listener: connection limits, header timeouts, graceful stop, probes
//! and the metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::digest::CtOutput;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::{WebhookState, router};

/// Serves `listener` until `shutdown`: stops accepting, lets requests in
/// progress finish (a `?wait` answers at once with the run's current state).
pub async fn serve(listener: TcpListener, state: WebhookState, shutdown: CancellationToken) {
    let app = router(state.clone());
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(state.opts.max_connections.max(1)));
    let peers = crate::triggers::peers::PeerSlots::new(state.opts.max_per_peer);
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
pub(super) async fn refuse_busy_peer(
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
pub(super) async fn metrics(State(st): State<WebhookState>, headers: HeaderMap) -> Response {
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

pub(super) async fn readyz(State(st): State<WebhookState>) -> Response {
    let ready = st.ready.load(std::sync::atomic::Ordering::Acquire) && !st.shutdown.is_cancelled();
    if ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
