//! One delivery: checks in order, the run committed, the reply.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value, json};
use sluice_shared::model::Trigger;
use sluice_shared::model::trigger::{WebhookAuth, WebhookTrigger};
use sluice_shared::run::{RunId, TriggerInfo, TriggerKind};

use super::auth::{authenticate, user_token};
use super::{MAX_WAIT, Refusal, WebhookState, header_text, rate_headers};
use crate::engine::EngineError;
use crate::secrets::{MASK, Redactor};
use crate::triggers::{Counters, Fired, TriggerError};

/// Longest delivery key accepted (as Stripe's idempotency keys).
pub(super) const MAX_KEY_LEN: usize = 255;

/// Request headers never copied into `trigger.headers` (credentials).
pub(super) const HIDDEN_HEADERS: &[&str] = &[
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
pub(super) const HARMLESS_HEADERS: &[&str] = &[
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

/// Parts of a header name that suggest a credential: no allowlisted name may
/// contain one (a test checks the two lists against each other).
#[cfg(test)]
pub(super) const CREDENTIAL_WORDS: &[&str] = &[
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
pub(super) fn harmless_header(name: &str) -> bool {
    // No allowlisted name contains a credential word (a test holds the two
    // lists to that), so the list alone decides; looking for the words in
    // every header of every delivery was most of this function's cost.
    HARMLESS_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The reply to an accepted delivery (`202`).
#[derive(serde::Serialize)]
struct Accepted<'a> {
    run: i64,
    pipeline: &'a str,
    duplicate: bool,
    request_id: &'a str,
}

pub(super) async fn hook(
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

pub(super) async fn intake(
    st: &WebhookState,
    name: &str,
    peer: SocketAddr,
    req: Request,
) -> Result<Response, Refusal> {
    let entry =
        st.triggers.registry().get(name).ok_or_else(|| {
            Refusal::new(StatusCode::NOT_FOUND, format!("unknown pipeline '{name}'"))
        })?;
    let hooks = webhook_triggers(&entry.pipeline, name)?;
    let wait = wait_param(req.uri())?;
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let bytes = read_body(st, &headers, body).await?;

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
    // Built by moving the parts in: `json!` would serialize the body into a copy.
    let mut details = Map::with_capacity(5);
    details.insert("request_id".into(), Value::String(request_id.clone()));
    details.insert("source".into(), Value::String(peer.to_string()));
    details.insert("body".into(), body);
    details.insert(
        "headers".into(),
        visible_headers(&headers, &secrets.redactor()),
    );
    if let Some(k) = &key {
        details.insert("delivery_key".into(), Value::String(k.clone()));
    }
    let trigger = TriggerInfo {
        kind: TriggerKind::Webhook,
        user: hook_user.or_else(|| entry.pipeline.owner.clone()),
        details: Value::Object(details),
    };
    let limits_user = crate::limits::user_key(trigger.user.as_deref()).to_owned();
    let scoped = key.as_ref().map(|k| format!("hook:{k}"));
    let fired = st
        .triggers
        .fire(&entry, &inputs, trigger, scoped.as_deref())
        .await
        .map_err(fire_refusal)?;
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
            axum::Json(Accepted {
                run: run.0,
                pipeline: name,
                duplicate: !created,
                request_id: &request_id,
            }),
        )
            .into_response(),
        Some(limit) => wait_for(st, run, name, limit, created, &request_id).await,
    };
    rate_headers(&mut response, st.triggers.engine().limits(), &limits_user);
    Ok(response)
}

/// The pipeline's webhook triggers; a pipeline without one is not found here.
fn webhook_triggers<'p>(
    pipeline: &'p sluice_shared::Pipeline,
    name: &str,
) -> Result<Vec<&'p WebhookTrigger>, Refusal> {
    let hooks: Vec<&WebhookTrigger> = pipeline
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
    Ok(hooks)
}

/// Reads the body within the size and time limits, refusing what is not JSON
/// (by its content type) before reading a byte of it.
async fn read_body(
    st: &WebhookState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, Refusal> {
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
    Ok(bytes)
}

/// The reply to a trigger that could not start a run.
fn fire_refusal(e: TriggerError) -> Refusal {
    match e {
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
    }
}

pub(super) async fn wait_for(
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

pub(super) fn too_large(max: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {max} bytes ([http] max_body)"),
    )
}

pub(super) fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The `?wait=` of a delivery, percent-decoded (axum's `Query`); other
/// parameters are ignored.
pub(super) fn wait_param(uri: &axum::http::Uri) -> Result<Option<Duration>, Refusal> {
    #[derive(serde::Deserialize)]
    struct Params {
        wait: Option<String>,
    }
    let axum::extract::Query(Params { wait }) =
        axum::extract::Query::try_from_uri(uri).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("malformed query: {}", e.body_text()),
            )
        })?;
    let Some(v) = wait else { return Ok(None) };
    let d: sluice_shared::Duration =
        serde_json::from_value(Value::String(v.clone())).map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("wait: {v:?} is not a duration (e.g. 30s, 2m)"),
            )
        })?;
    if d.std() > MAX_WAIT {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("wait: {v:?} is longer than the maximum of 5m"),
        ));
    }
    Ok(Some(d.std()))
}

/// The delivery key. For a signed (HMAC) delivery it is the signed
/// `webhook-id`: an unsigned `Idempotency-Key` could be changed by anyone
/// replaying the delivery, so it is ignored. Otherwise `Idempotency-Key`,
/// else `webhook-id`.
pub(super) fn delivery_key(headers: &HeaderMap, signed: bool) -> Result<Option<String>, Refusal> {
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
pub(super) fn visible_headers(headers: &HeaderMap, redactor: &Redactor) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_percent_decoded_and_checked() {
        let wait = |q: &str| wait_param(&format!("/hooks/p{q}").parse().unwrap());
        assert_eq!(wait("").unwrap(), None);
        assert_eq!(
            wait("?x=1&y").unwrap(),
            None,
            "other parameters are ignored"
        );
        assert_eq!(wait("?wait=30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            wait("?a=b&wait=%32m").unwrap(),
            Some(Duration::from_secs(120))
        );
        let long = wait("?wait=6m").unwrap_err();
        assert_eq!(long.status, StatusCode::BAD_REQUEST);
        assert!(
            long.message.contains("longer than the maximum of 5m"),
            "{}",
            long.message
        );
        let bad = wait("?wait=%22%24(id)%0Asoon").unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(
            bad.message.contains(r#"\"$(id)\nsoon"#),
            "the value is quoted with its newline escaped: {}",
            bad.message
        );
        let twice = wait("?wait=1s&wait=2s").unwrap_err();
        assert!(
            twice.message.starts_with("malformed query"),
            "{}",
            twice.message
        );
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
            assert!(
                !CREDENTIAL_WORDS.iter().any(|w| n.contains(w)),
                "{n} is allowlisted but looks like a credential"
            );
        }
        assert!(!harmless_header("x-auth-token"));
        assert!(
            harmless_header("X-GitHub-Event"),
            "names are compared without case"
        );
        assert!(!harmless_header("X-Auth-Token"));
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
}
