//! Notification delivery: webhooks (generic JSON, Slack- and
//! Discord-compatible payloads) and SMTP email, with retries, backoff and a
//! time limit. Used by the `notify` node and by approval requests.
//!
//! A [`Notifier`] is built once from `[smtp]` and the secrets; it is cheap to
//! clone. [`Notifier::deliver`] sends one [`Message`] to every channel of a
//! [`ResolvedTarget`] (already rendered) and notes each failed attempt on the
//! run's log; [`Notifier::spawn_deliver`] does the same in the background and
//! never reports an error to its caller (approvals must not wait on it).
//! Webhook URLs usually carry a secret in their path, so logs and errors show
//! only their scheme and host.

pub mod approval;
pub mod config;
mod email;
pub mod target;
mod webhook;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sluice_shared::model::RetryPolicy;
use tokio::time::Instant;

use crate::attempt_log::LogSink;
use crate::secrets::{Redactor, Secrets};

pub use approval::{ApprovalEvent, ApprovalNotice};
pub use config::{SmtpConfig, SmtpTls};
pub use target::{
    EmailDelivery, Message, ResolvedTarget, TargetError, WebhookTarget, format_name, shown_url,
};

/// How hard delivery tries.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryPolicy {
    /// Attempts per channel and the waits between them (exponential, jittered).
    pub retry: RetryPolicy,
    /// Time limit of one attempt (one HTTP request, one SMTP session).
    pub attempt_timeout: Duration,
    /// Time limit of a whole delivery, waits included; no attempt starts after it.
    pub total_timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                attempts: 5,
                backoff: sluice_shared::Duration::from_secs(1),
                max_backoff: sluice_shared::Duration::from_secs(30),
                jitter: true,
            },
            attempt_timeout: Duration::from_secs(15),
            total_timeout: Duration::from_secs(120),
        }
    }
}

/// How one channel's delivery ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelReport {
    /// `webhook` or `email`.
    pub channel: &'static str,
    /// Whether it was delivered.
    pub delivered: bool,
    /// Attempts made.
    pub attempts: u32,
    /// On success, what the other side said (`200 OK`, `250 ...`); on
    /// failure, the last error (secrets redacted, no webhook URL).
    pub detail: String,
    /// On failure, whether a later try might pass (false for 4xx and permanent SMTP errors).
    pub retryable: bool,
}

/// Every channel's outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryReport {
    /// One entry per channel tried, webhook first.
    pub channels: Vec<ChannelReport>,
}

impl DeliveryReport {
    /// The channels that delivered.
    pub fn delivered(&self) -> Vec<&'static str> {
        self.channels
            .iter()
            .filter(|c| c.delivered)
            .map(|c| c.channel)
            .collect()
    }

    /// As stored in a node's output:
    /// `{delivered: [..], failed: [..], <channel>: {delivered, attempts, detail|error}}`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("delivered".into(), json!(self.delivered()));
        let failed: Vec<&str> = self
            .channels
            .iter()
            .filter(|c| !c.delivered)
            .map(|c| c.channel)
            .collect();
        out.insert("failed".into(), json!(failed));
        for c in &self.channels {
            let key = if c.delivered { "response" } else { "error" };
            out.insert(
                c.channel.into(),
                json!({ "delivered": c.delivered, "attempts": c.attempts, key: c.detail }),
            );
        }
        Value::Object(out)
    }

    fn summary(&self) -> String {
        self.channels
            .iter()
            .map(|c| {
                format!(
                    "{} failed after {} attempt{}: {}",
                    c.channel,
                    c.attempts,
                    if c.attempts == 1 { "" } else { "s" },
                    c.detail
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why a delivery failed as a whole.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Every channel failed; the report says how.
    #[error("notification not delivered: {summary}")]
    Failed {
        /// One line per channel.
        summary: String,
        /// Each channel's outcome.
        report: DeliveryReport,
    },
}

impl DeliveryError {
    /// Each channel's outcome.
    pub fn report(&self) -> &DeliveryReport {
        match self {
            Self::Failed { report, .. } => report,
        }
    }

    /// Whether trying again later may help (some channel failed transiently).
    pub fn retryable(&self) -> bool {
        self.report().channels.iter().any(|c| c.retryable)
    }
}

/// Why a [`Notifier`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// `[smtp] password` names a secret that does not exist.
    #[error(
        "[smtp] password names the secret '{0}', which is not defined (put it in $CREDENTIALS_DIRECTORY/{0} or the secrets file)"
    )]
    MissingSecret(String),
    /// The SMTP transport could not be set up (e.g. TLS).
    #[error("[smtp] cannot set up the connection to {host}: {message}")]
    Smtp {
        /// The server.
        host: String,
        /// Why.
        message: String,
    },
}

/// Delivers notifications. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    http: Option<reqwest::Client>,
    smtp: Option<Arc<email::SmtpSender>>,
    policy: DeliveryPolicy,
    redactor: Arc<Redactor>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("smtp", &self.smtp.as_ref().map(|s| s.describe()))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::disabled()
    }
}

impl Notifier {
    /// A notifier for `[smtp]` (when given) that looks up the SMTP password
    /// among `secrets` and masks every secret in what it logs.
    pub fn new(smtp: Option<&SmtpConfig>, secrets: &Secrets) -> Result<Self, NotifierError> {
        let smtp = match smtp {
            Some(config) => Some(Arc::new(email::SmtpSender::new(config, secrets)?)),
            None => None,
        };
        Ok(Self {
            http: None,
            smtp,
            policy: DeliveryPolicy::default(),
            redactor: Arc::new(secrets.redactor()),
        })
    }

    /// Webhooks only: email fails with "not configured".
    pub fn disabled() -> Self {
        Self {
            http: None,
            smtp: None,
            policy: DeliveryPolicy::default(),
            redactor: Arc::new(Redactor::default()),
        }
    }

    /// The same notifier with other retry settings (tests use short waits).
    pub fn with_policy(mut self, policy: DeliveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The same notifier posting webhooks with this client. It should not
    /// follow redirects: a POST turned into a GET elsewhere is not a delivery.
    pub fn with_http(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The retry settings in force.
    pub fn policy(&self) -> &DeliveryPolicy {
        &self.policy
    }

    /// Whether email can be sent.
    pub fn email_configured(&self) -> bool {
        self.smtp.is_some()
    }

    /// Delivers `msg` to every channel of `target` (concurrently), noting
    /// each failed attempt on `log`. Succeeds when at least one channel
    /// delivered; the report also lists the channels that failed.
    pub async fn deliver(
        &self,
        msg: &Message,
        target: &ResolvedTarget,
        log: &LogSink,
    ) -> Result<DeliveryReport, DeliveryError> {
        let deadline = Instant::now() + self.policy.total_timeout;
        let webhook = async {
            match &target.webhook {
                Some(hook) => Some(self.deliver_webhook(msg, hook, log, deadline).await),
                None => None,
            }
        };
        let email = async {
            match &target.email {
                Some(mail) => Some(self.deliver_email(msg, mail, log, deadline).await),
                None => None,
            }
        };
        let (webhook, email) = tokio::join!(webhook, email);
        let report = DeliveryReport {
            channels: webhook.into_iter().chain(email).collect(),
        };
        if report.channels.iter().any(|c| c.delivered) {
            Ok(report)
        } else {
            Err(DeliveryError::Failed {
                summary: report.summary(),
                report,
            })
        }
    }

    /// Delivers in a background task and never reports an error to the
    /// caller: the outcome (and every failed attempt) is noted on `log`.
    /// Await the handle only to know when it is over (tests).
    pub fn spawn_deliver(
        &self,
        msg: Message,
        target: ResolvedTarget,
        log: LogSink,
    ) -> tokio::task::JoinHandle<()> {
        let notifier = self.clone();
        tokio::spawn(async move {
            match notifier.deliver(&msg, &target, &log).await {
                Ok(report) => {
                    log.note(&format!(
                        "notification '{}' delivered by {}",
                        msg.title,
                        report.delivered().join(" and ")
                    ))
                    .await;
                }
                Err(e) => {
                    tracing::warn!(error = %notifier.redactor.redact(&e.to_string()), "notification not delivered");
                    log.note(&e.to_string()).await;
                }
            }
        })
    }

    fn http(&self) -> Result<reqwest::Client, String> {
        static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
        if let Some(client) = &self.http {
            return Ok(client.clone());
        }
        CLIENT
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("sluiced/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot create an HTTP client: {e}"))
            })
            .clone()
    }

    async fn deliver_webhook(
        &self,
        msg: &Message,
        hook: &WebhookTarget,
        log: &LogSink,
        deadline: Instant,
    ) -> ChannelReport {
        let label = format!(
            "webhook ({}) {}",
            format_name(hook.format),
            shown_url(&hook.url)
        );
        let client = match self.http() {
            Ok(client) => client,
            Err(message) => {
                return self.fail_early("webhook", &label, message, log).await;
            }
        };
        let payload = webhook::payload(msg, hook.format);
        self.with_retries("webhook", &label, log, deadline, |timeout| {
            webhook::post(&client, &hook.url, &payload, timeout)
        })
        .await
    }

    async fn deliver_email(
        &self,
        msg: &Message,
        mail: &EmailDelivery,
        log: &LogSink,
        deadline: Instant,
    ) -> ChannelReport {
        let label = format!(
            "email to {}",
            mail.to
                .iter()
                .map(|m| m.email.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let Some(smtp) = &self.smtp else {
            return self
                .fail_early(
                    "email",
                    &label,
                    "email is not configured: add an [smtp] section to sluiced.toml".into(),
                    log,
                )
                .await;
        };
        let email = match smtp.message(msg, mail) {
            Ok(email) => email,
            Err(message) => return self.fail_early("email", &label, message, log).await,
        };
        self.with_retries("email", &label, log, deadline, |timeout| {
            smtp.send(email.clone(), timeout)
        })
        .await
    }

    async fn fail_early(
        &self,
        channel: &'static str,
        label: &str,
        message: String,
        log: &LogSink,
    ) -> ChannelReport {
        let detail = self.redactor.redact(&message).into_owned();
        log.note(&format!("notify {label}: {detail}")).await;
        ChannelReport {
            channel,
            delivered: false,
            attempts: 0,
            detail,
            retryable: false,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, runs out of attempts
    /// or the deadline would pass; each failure is noted on `log`.
    async fn with_retries<F, Fut>(
        &self,
        channel: &'static str,
        label: &str,
        log: &LogSink,
        deadline: Instant,
        mut attempt: F,
    ) -> ChannelReport
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<String, AttemptError>>,
    {
        let max = self.policy.retry.attempts.max(1);
        let mut n = 0;
        loop {
            n += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = self.policy.attempt_timeout.min(left);
            let result = match tokio::time::timeout(limit, attempt(limit)).await {
                Ok(result) => result,
                Err(_) => Err(AttemptError::retryable(format!(
                    "no answer within {}",
                    show_duration(limit)
                ))),
            };
            let error = match result {
                Ok(detail) => {
                    if n > 1 {
                        log.note(&format!("notify {label}: delivered on attempt {n}"))
                            .await;
                    }
                    return ChannelReport {
                        channel,
                        delivered: true,
                        attempts: n,
                        detail,
                        retryable: false,
                    };
                }
                Err(error) => error,
            };
            let detail = self.redactor.redact(&error.message).into_owned();
            let next = if !error.retryable {
                Err("not retried".to_owned())
            } else if n >= max {
                Err("no attempts left".to_owned())
            } else {
                let wait = sluice_shared::time::delay(&self.policy.retry, n + 1, error.retry_after);
                if Instant::now() + wait >= deadline {
                    Err(format!(
                        "giving up: the next attempt would start after the {} limit",
                        show_duration(self.policy.total_timeout)
                    ))
                } else {
                    Ok(wait)
                }
            };
            match next {
                Ok(wait) => {
                    log.note(&format!(
                        "notify {label}: attempt {n}/{max} failed: {detail}; retrying in {}",
                        show_duration(wait)
                    ))
                    .await;
                    tokio::time::sleep(wait).await;
                }
                Err(why) => {
                    log.note(&format!(
                        "notify {label}: attempt {n}/{max} failed: {detail}; {why}"
                    ))
                    .await;
                    return ChannelReport {
                        channel,
                        delivered: false,
                        attempts: n,
                        detail,
                        retryable: error.retryable,
                    };
                }
            }
        }
    }
}

/// One failed attempt.
#[derive(Debug)]
pub(crate) struct AttemptError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl AttemptError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }
}

/// `1.5s`, `250ms`, `2m 5s`.
fn show_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        let tenths = d.as_millis() / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let s = d.as_secs();
        format!("{}m {}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show_duration(Duration::from_secs(2)), "2s");
        assert_eq!(show_duration(Duration::from_secs(125)), "2m 5s");
    }
}
