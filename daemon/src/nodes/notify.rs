//! `notify`: renders a message and sends it to a webhook and/or by email
//! through the daemon's [`Notifier`](crate::notify::Notifier).
//!
//! Output: `{delivered: [channels], failed: [channels], webhook: {delivered,
//! attempts, response|error}, email: {...}}`. One channel delivering is
//! enough; when every channel fails the node fails, retryable unless every
//! failure was permanent (a 4xx answer, a 5xx SMTP reply, a bad address).
//! Each channel already retries on its own with backoff before that.

use sluice_shared::model::node::{NotifyNode, NotifyTarget};
use sluice_shared::template::Escape;

use super::{Execute, NodeContext, NodeError, Outcome, render};
use crate::notify::{Message, ResolvedTarget};

impl Execute for NotifyNode {
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let result = notify(self, ctx).await;
        // The node ends its attempt's log: the engine relies on that.
        ctx.log.finish().await;
        result
    }
}

async fn notify(node: &NotifyNode, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    let text = render(ctx, "message", &node.message, Escape::Text)?;
    let pipeline = ctx
        .templates
        .eval("pipeline.name", &ctx.template)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let title = match &node.title {
        Some(source) => render(ctx, "title", source, Escape::Text)?,
        None => format!("{pipeline} #{}", ctx.run.0),
    };
    let target = render_target(
        ctx,
        &NotifyTarget {
            webhook: node.webhook.clone(),
            format: node.format,
            email: node.email.clone(),
        },
    )?;
    let msg = Message::new(title, text)
        .field("pipeline", pipeline)
        .field("run", ctx.run.0)
        .field("node", ctx.node.as_str());
    let delivered = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => {
            ctx.log.note("cancelled: notification dropped").await;
            return Err(NodeError::fatal("cancelled"));
        }
        result = ctx.notifier.deliver(&msg, &target, &ctx.log) => result,
    };
    match delivered {
        Ok(report) => Ok(Outcome::Done(report.to_json())),
        Err(e) => {
            let mut error = NodeError::fatal(ctx.redactor.redact(&e.to_string()))
                .with_output(ctx.redactor.redact_json(e.report().to_json()));
            error.retryable = e.retryable();
            Err(error)
        }
    }
}

/// Renders a notification target's templates (webhook URL, recipients,
/// subject) with the node's context and checks them. For approval
/// notifications as well as `notify` nodes.
pub fn render_target(
    ctx: &NodeContext,
    target: &NotifyTarget,
) -> Result<ResolvedTarget, NodeError> {
    ResolvedTarget::render(target, |_field, source| {
        ctx.templates
            .render_str(source, &ctx.template, Escape::Text)
            .map_err(|e| ctx.redactor.redact(&e.message).into_owned())
    })
    .map_err(|e| NodeError::fatal(ctx.redactor.redact(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use serde_json::{Value, json};
    use sluice_shared::model::RetryPolicy;
    use sluice_shared::model::node::NotifyFormat;

    use super::*;
    use crate::nodes::test_support::{ATTEMPT_SECS, Deadline, context, lines_of};
    use crate::notify::{DeliveryPolicy, Notifier};

    fn fast() -> DeliveryPolicy {
        DeliveryPolicy {
            retry: RetryPolicy {
                attempts: 3,
                backoff: sluice_shared::Duration(Duration::from_millis(10)),
                max_backoff: sluice_shared::Duration(Duration::from_millis(20)),
                jitter: false,
            },
            attempt_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(20),
        }
    }

    /// A receiver answering with `statuses` in turn (then 200), recording bodies.
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = (Arc::clone(&seen), Arc::new(Mutex::new(statuses)));
        type Shared = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<u16>>>);
        async fn hook(State((seen, statuses)): State<Shared>, body: String) -> StatusCode {
            seen.lock()
                .unwrap()
                .push(serde_json::from_str(&body).unwrap());
            let mut statuses = statuses.lock().unwrap();
            let code = if statuses.is_empty() {
                200
            } else {
                statuses.remove(0)
            };
            StatusCode::from_u16(code).unwrap()
        }
        let app = Router::new()
            .route("/hook/{token}", post(hook))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, seen)
    }

    fn node(webhook: &str) -> NotifyNode {
        NotifyNode {
            message: "{{ inputs.what }} finished".into(),
            title: Some("Report".into()),
            webhook: Some(webhook.into()),
            format: NotifyFormat::Generic,
            email: None,
        }
    }

    #[tokio::test]
    async fn renders_and_delivers_with_run_fields() {
        let (base, seen) = receiver(vec![]).await;
        let (mut ctx, _rx) = context(
            json!({"inputs": {"what": "backup"}, "pipeline": {"name": "nightly"}}),
            &[("hook", "tok-s3cret")],
        );
        ctx.notifier = Arc::new(Notifier::disabled().with_policy(fast()));
        let out = node(&format!("{base}/hook/{{{{ secrets.hook }}}}"))
            .execute(&ctx)
            .await
            .unwrap();
        assert_eq!(
            out,
            Outcome::Done(json!({
                "delivered": ["webhook"],
                "failed": [],
                "webhook": {"delivered": true, "attempts": 1, "response": "200 OK"},
            }))
        );
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [
                json!({"title": "Report", "text": "backup finished", "pipeline": "nightly", "run": 1, "node": "n"})
            ]
        );
    }

    #[tokio::test]
    async fn every_channel_failing_is_a_node_error_without_the_url() {
        let (base, seen) = receiver(vec![503, 503, 503]).await;
        let (mut ctx, mut rx) = context(
            json!({"inputs": {"what": "x"}, "pipeline": {"name": "p"}}),
            &[("hook", "tok-s3cret")],
        );
        ctx.notifier = Arc::new(Notifier::disabled().with_policy(fast()));
        let err = node(&format!("{base}/hook/{{{{ secrets.hook }}}}"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert!(
            err.message.starts_with(
                "notification not delivered: webhook failed after 3 attempts: the webhook answered 503 Service Unavailable"
            ),
            "{}",
            err.message
        );
        assert_eq!(err.output.as_ref().unwrap()["failed"], json!(["webhook"]));
        let lines = lines_of(&mut rx, "sluice");
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("attempt 1/3 failed") && lines[0].contains("retrying in"));
        assert!(lines[2].contains("attempt 3/3 failed") && lines[2].contains("no attempts left"));
        for text in lines.iter().chain([&err.message]) {
            assert!(
                !text.contains("s3cret") && !text.contains("/hook/"),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let (base, seen) = receiver(vec![404]).await;
        let (mut ctx, _rx) = context(
            json!({"inputs": {"what": "x"}, "pipeline": {"name": "p"}}),
            &[],
        );
        ctx.notifier = Arc::new(Notifier::disabled().with_policy(fast()));
        let err = node(&format!("{base}/hook/t"))
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(!err.retryable, "{err:?}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn email_without_smtp_is_a_clear_fatal_error() {
        let (mut ctx, _rx) = context(
            json!({"inputs": {"what": "x"}, "pipeline": {"name": "p"}}),
            &[],
        );
        ctx.notifier = Arc::new(Notifier::disabled().with_policy(fast()));
        let n = NotifyNode {
            webhook: None,
            email: Some(sluice_shared::model::node::EmailTarget {
                to: vec!["ops@example.com".into()],
                subject: None,
            }),
            ..node("")
        };
        let err = n
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message.contains("add an [smtp] section"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn bad_targets_fail_before_sending() {
        let (ctx, _rx) = context(
            json!({"inputs": {"what": "x"}, "pipeline": {"name": "p"}}),
            &[("hook", "tok-s3cret")],
        );
        let err = node("{{ secrets.hook }}")
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert!(!err.retryable);
        assert!(
            err.message.starts_with("`webhook` is not a valid"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("s3cret"));
        let err = node("{{ secrets.nope }}")
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert!(
            err.message.starts_with("cannot render `webhook`"),
            "{}",
            err.message
        );
    }
}
