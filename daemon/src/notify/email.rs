//! Email through `[smtp]` with lettre: one SMTP session per attempt (no
//! pool; notifications are rare and a pooled connection would go stale).

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::{SmtpConfig, SmtpTls};
use super::webhook::{field_text, truncate};
use super::{AttemptError, EmailDelivery, Message, NotifierError};
use crate::secrets::Secrets;

/// Longest subject kept (RFC 5322 lines should stay short; mail clients cut anyway).
const SUBJECT_MAX: usize = 200;

/// The configured SMTP server.
pub(super) struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    tls: SmtpTls,
}

impl SmtpSender {
    /// Sets up the transport; the password is looked up among `secrets` now,
    /// so a missing secret stops the daemon at start rather than at 3 a.m.
    pub(super) fn new(config: &SmtpConfig, secrets: &Secrets) -> Result<Self, NotifierError> {
        let setup = |e: lettre::transport::smtp::Error| NotifierError::Smtp {
            host: config.host.clone(),
            message: e.to_string(),
        };
        let builder = match config.tls {
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(setup)?
            }
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(setup)?
            }
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(config.timeout.std()));
        if let (Some(user), Some(secret)) = (&config.username, &config.password) {
            let password = secrets
                .get(secret)
                .ok_or_else(|| NotifierError::MissingSecret(secret.clone()))?;
            builder = builder.credentials(Credentials::new(user.clone(), password.to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            from: config.from.clone(),
            host: config.host.clone(),
            port: config.port,
            tls: config.tls,
        })
    }

    /// `host:port (tls mode)` for messages.
    pub(super) fn describe(&self) -> String {
        format!("{}:{} ({})", self.host, self.port, self.tls.as_str())
    }

    /// The email for `msg`: plain text, the fields as `name: value` lines
    /// after the text.
    pub(super) fn message(
        &self,
        msg: &Message,
        mail: &EmailDelivery,
    ) -> Result<lettre::Message, String> {
        let subject = mail.subject.as_deref().unwrap_or(&msg.title);
        // Header values cannot hold line breaks.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(truncate(&subject, SUBJECT_MAX))
            .header(ContentType::TEXT_PLAIN);
        for to in &mail.to {
            builder = builder.to(to.clone());
        }
        let mut body = msg.text.trim_end().to_owned();
        if !msg.fields.is_empty() {
            body.push_str("\n\n--");
            for (name, value) in &msg.fields {
                body.push_str(&format!("\n{name}: {}", field_text(value)));
            }
        }
        builder
            .body(body)
            .map_err(|e| format!("cannot build the email: {e}"))
    }

    /// One SMTP session. 4xx replies, timeouts and network failures may pass
    /// later; 5xx replies, TLS and client errors will not.
    pub(super) async fn send(
        &self,
        email: lettre::Message,
        _timeout: Duration,
    ) -> Result<String, AttemptError> {
        // lettre applies `[smtp] timeout` to each command; the caller bounds the whole attempt.
        match self.transport.send(email).await {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )
            .trim_end()
            .to_owned()),
            Err(e) => {
                let message = format!("SMTP {}: {e}", self.describe());
                if e.is_transient() || e.is_timeout() || e.is_response() {
                    Err(AttemptError::retryable(message))
                } else if e.is_permanent() || e.is_tls() || e.is_client() {
                    Err(AttemptError::fatal(message))
                } else {
                    // Connection refused or reset: the server may be back soon.
                    Err(AttemptError::retryable(message))
                }
            }
        }
    }
}
