//! What a notification says ([`Message`]) and where it goes
//! ([`ResolvedTarget`]): templates rendered, URL and addresses checked.

use lettre::message::{Mailbox, Mailboxes};
use serde_json::Value;
use sluice_shared::model::node::{NotifyFormat, NotifyTarget};

/// What a notification says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// A short heading (email subject unless the target gives one).
    pub title: String,
    /// The body text.
    pub text: String,
    /// Structured context (run, pipeline, node, ...): top-level keys of the
    /// generic JSON payload, embed fields on Discord, a context line on Slack,
    /// trailing lines in email.
    pub fields: Vec<(String, Value)>,
}

impl Message {
    /// A message with a title and a text and no fields.
    pub fn new(title: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            text: text.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a structured field (replacing one of the same name).
    pub fn field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        let value = value.into();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
        self
    }
}

/// A webhook to post to. Its `Debug` hides the URL (it usually holds a secret).
#[derive(Clone, PartialEq)]
pub struct WebhookTarget {
    /// Where to post.
    pub url: reqwest::Url,
    /// Payload style.
    pub format: NotifyFormat,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &shown_url(&self.url))
            .field("format", &self.format)
            .finish()
    }
}

/// An email to send through `[smtp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailDelivery {
    /// Recipients.
    pub to: Vec<Mailbox>,
    /// Subject; the message's title when `None`.
    pub subject: Option<String>,
}

/// Where a message goes, with every template already rendered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedTarget {
    /// Post to this webhook.
    pub webhook: Option<WebhookTarget>,
    /// Send this email.
    pub email: Option<EmailDelivery>,
}

/// Why a notification target is unusable (never quotes a webhook URL).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// A template failed to render.
    #[error("cannot render `{field}`: {message}")]
    Render {
        /// The field, e.g. `webhook` or `email.to[0]`.
        field: String,
        /// What went wrong (secrets redacted by the renderer).
        message: String,
    },
    /// The webhook is not an http(s) URL.
    #[error("`{field}` is not a valid http or https URL: {reason}")]
    BadUrl {
        /// The field.
        field: String,
        /// Why (without the URL).
        reason: String,
    },
    /// A recipient is not an email address.
    #[error("`{field}` is not a list of email addresses: {reason}")]
    BadAddress {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// `email.to` rendered to nothing.
    #[error("`email.to` has no recipients")]
    NoRecipients,
    /// Neither a webhook nor an email was given.
    #[error("nothing to notify: give `webhook` or `email`")]
    NoChannel,
}

impl ResolvedTarget {
    /// Renders a target's templates with `render(field, source)` and checks
    /// the results: the webhook must be an http(s) URL, recipients email
    /// addresses (an entry may hold several, separated by commas; empty
    /// entries are dropped).
    pub fn render(
        target: &NotifyTarget,
        mut render: impl FnMut(&str, &str) -> Result<String, String>,
    ) -> Result<Self, TargetError> {
        let webhook = match &target.webhook {
            Some(source) => {
                let text = render("webhook", source).map_err(|message| TargetError::Render {
                    field: "webhook".into(),
                    message,
                })?;
                Some(WebhookTarget {
                    url: parse_webhook("webhook", &text)?,
                    format: target.format,
                })
            }
            None => None,
        };
        let email = match &target.email {
            Some(email) => {
                let mut to = Vec::new();
                for (i, source) in email.to.iter().enumerate() {
                    let field = format!("email.to[{i}]");
                    let text = render(&field, source).map_err(|message| TargetError::Render {
                        field: field.clone(),
                        message,
                    })?;
                    to.extend(parse_recipients(&field, &text)?);
                }
                if to.is_empty() {
                    return Err(TargetError::NoRecipients);
                }
                let subject = match &email.subject {
                    Some(source) => Some(render("email.subject", source).map_err(|message| {
                        TargetError::Render {
                            field: "email.subject".into(),
                            message,
                        }
                    })?),
                    None => None,
                };
                Some(EmailDelivery { to, subject })
            }
            None => None,
        };
        if webhook.is_none() && email.is_none() {
            return Err(TargetError::NoChannel);
        }
        Ok(Self { webhook, email })
    }
}

fn parse_webhook(field: &str, text: &str) -> Result<reqwest::Url, TargetError> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| TargetError::BadUrl {
        field: field.into(),
        // url's messages describe the problem without quoting the input.
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::BadUrl {
            field: field.into(),
            reason: format!("the scheme must be http or https, not '{}'", url.scheme()),
        });
    }
    Ok(url)
}

fn parse_recipients(field: &str, text: &str) -> Result<Vec<Mailbox>, TargetError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let boxes: Mailboxes = text.trim().parse().map_err(|e| TargetError::BadAddress {
        field: field.into(),
        reason: format!("'{}': {e}", text.trim()),
    })?;
    Ok(boxes.into_iter().collect())
}

/// The payload style's name as written in pipeline files.
pub fn format_name(format: NotifyFormat) -> &'static str {
    match format {
        NotifyFormat::Generic => "generic",
        NotifyFormat::Slack => "slack",
        NotifyFormat::Discord => "discord",
    }
}

/// A webhook URL as shown in logs: scheme, host and port only, since the
/// path and query of Slack and Discord webhooks are the credential.
pub fn shown_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}/***", url.scheme()),
        None => format!("{}://{host}/***", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sluice_shared::model::node::EmailTarget;

    use super::*;

    fn plain(_: &str, s: &str) -> Result<String, String> {
        Ok(s.to_owned())
    }

    #[test]
    fn targets_are_checked_after_rendering() {
        let target = NotifyTarget {
            webhook: Some("https://hooks.example.com/T0/B1/s3cret".into()),
            format: NotifyFormat::Slack,
            email: Some(EmailTarget {
                to: vec!["a@example.com, Bob <b@example.com>".into(), " ".into()],
                subject: Some("Hi".into()),
            }),
        };
        let t = ResolvedTarget::render(&target, plain).unwrap();
        let hook = t.webhook.as_ref().unwrap();
        assert_eq!(hook.format, NotifyFormat::Slack);
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");
        let mail = t.email.unwrap();
        assert_eq!(mail.to.len(), 2);
        assert_eq!(mail.subject.as_deref(), Some("Hi"));

        let bad = |webhook: &str| {
            ResolvedTarget::render(
                &NotifyTarget {
                    webhook: Some(webhook.into()),
                    ..NotifyTarget::default()
                },
                plain,
            )
            .unwrap_err()
            .to_string()
        };
        let err = bad("ftp://x/s3cret");
        assert!(
            err.contains("http or https") && !err.contains("s3cret"),
            "{err}"
        );
        let err = bad("not a url s3cret");
        assert!(
            err.starts_with("`webhook` is not a valid") && !err.contains("s3cret"),
            "{err}"
        );

        let err = ResolvedTarget::render(&NotifyTarget::default(), plain).unwrap_err();
        assert_eq!(err, TargetError::NoChannel);
        let none = NotifyTarget {
            email: Some(EmailTarget {
                to: vec![String::new()],
                subject: None,
            }),
            ..NotifyTarget::default()
        };
        assert_eq!(
            ResolvedTarget::render(&none, plain).unwrap_err(),
            TargetError::NoRecipients
        );
        let wrong = NotifyTarget {
            email: Some(EmailTarget {
                to: vec!["nobody".into()],
                subject: None,
            }),
            ..NotifyTarget::default()
        };
        assert!(
            ResolvedTarget::render(&wrong, plain)
                .unwrap_err()
                .to_string()
                .starts_with("`email.to[0]` is not a list of email addresses")
        );
        let failing = ResolvedTarget::render(&target, |field, _| {
            if field == "webhook" {
                Err("undefined value".into())
            } else {
                Ok("x@example.com".into())
            }
        })
        .unwrap_err();
        assert_eq!(
            failing.to_string(),
            "cannot render `webhook`: undefined value"
        );
    }

    #[test]
    fn urls_are_shown_without_path_or_query() {
        let url = reqwest::Url::parse("https://discord.com/api/webhooks/1/tok?wait=true").unwrap();
        assert_eq!(shown_url(&url), "https://discord.com/***");
        let url = reqwest::Url::parse("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(shown_url(&url), "http://127.0.0.1:8080/***");
    }

    #[test]
    fn message_fields_replace_by_name() {
        let m = Message::new("t", "x")
            .field("run", 1)
            .field("run", 2)
            .field("node", "n");
        assert_eq!(
            m.fields,
            vec![("run".into(), json!(2)), ("node".into(), json!("n"))]
        );
    }
}
