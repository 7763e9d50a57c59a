//! Webhook payloads and one POST.
//!
//! - generic: `{"title", "text", ...fields}`;
//! - Slack (incoming webhooks): `text` (the notification fallback) and
//!   `blocks` (header, section, a context line of fields); `&`, `<` and `>`
//!   are escaped so rendered data cannot mention `<!channel>` or forge links;
//! - Discord: `content` (at most 2000 characters), an embed with the fields,
//!   and `allowed_mentions` empty so rendered data cannot ping `@everyone`.

use std::time::Duration;

use serde_json::{Map, Value, json};
use sluice_shared::model::node::NotifyFormat;

use super::{AttemptError, Message};

/// Discord's limit on `content`.
pub const DISCORD_CONTENT_MAX: usize = 2000;
const DISCORD_FIELD_NAME_MAX: usize = 256;
const DISCORD_FIELD_VALUE_MAX: usize = 1024;
const DISCORD_FIELDS_MAX: usize = 25;
/// Slack's limits on a header block's and a section's text.
const SLACK_HEADER_MAX: usize = 150;
const SLACK_SECTION_MAX: usize = 3000;
/// Slack truncates `text` beyond this; keep the fallback readable.
const SLACK_TEXT_MAX: usize = 4000;
/// Characters of a failed response's body quoted in the error.
const SNIPPET_CHARS: usize = 200;
/// Bytes of a response body read at most (only to quote it on failure).
const BODY_READ_MAX: usize = 8 * 1024;

/// The JSON body for `format`.
pub fn payload(msg: &Message, format: NotifyFormat) -> Value {
    match format {
        NotifyFormat::Generic => generic(msg),
        NotifyFormat::Slack => slack(msg),
        NotifyFormat::Discord => discord(msg),
    }
}

fn generic(msg: &Message) -> Value {
    let mut out = Map::new();
    out.insert("title".into(), Value::String(msg.title.clone()));
    out.insert("text".into(), Value::String(msg.text.clone()));
    for (name, value) in &msg.fields {
        // The message's own keys win: a field cannot replace the text.
        if name != "title" && name != "text" {
            out.insert(name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// A field's value as text: strings as they are, lists joined with commas.
pub(super) fn field_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(field_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Slack's three control characters escaped (the rest is literal mrkdwn).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(msg: &Message) -> Value {
    let title = slack_escape(&msg.title);
    let text = slack_escape(&msg.text);
    let fallback = match (title.is_empty(), text.is_empty()) {
        (false, false) => format!("*{title}*\n{text}"),
        (false, true) => format!("*{title}*"),
        _ => text.clone(),
    };
    let mut blocks = Vec::new();
    if !msg.title.is_empty() {
        blocks.push(json!({
            "type": "header",
            // Header blocks are plain text: no escaping needed.
            "text": { "type": "plain_text", "text": truncate(&msg.title, SLACK_HEADER_MAX) },
        }));
    }
    if !text.is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&text, SLACK_SECTION_MAX) },
        }));
    }
    if !msg.fields.is_empty() {
        let line = msg
            .fields
            .iter()
            .map(|(name, value)| {
                format!(
                    "*{}:* {}",
                    slack_escape(name),
                    slack_escape(&field_text(value))
                )
            })
            .collect::<Vec<_>>()
            .join("  ·  ");
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": truncate(&line, SLACK_SECTION_MAX) }],
        }));
    }
    json!({ "text": truncate(&fallback, SLACK_TEXT_MAX), "blocks": blocks })
}

fn discord(msg: &Message) -> Value {
    let content = match (msg.title.is_empty(), msg.text.is_empty()) {
        (false, false) => format!("**{}**\n{}", msg.title, msg.text),
        (false, true) => format!("**{}**", msg.title),
        _ => msg.text.clone(),
    };
    let mut out = Map::new();
    out.insert(
        "content".into(),
        Value::String(truncate(&content, DISCORD_CONTENT_MAX)),
    );
    if !msg.fields.is_empty() {
        let fields: Vec<Value> = msg
            .fields
            .iter()
            .take(DISCORD_FIELDS_MAX)
            .map(|(name, value)| {
                let value = field_text(value);
                json!({
                    "name": truncate(name, DISCORD_FIELD_NAME_MAX),
                    // Discord refuses empty field values.
                    "value": if value.is_empty() { "—".to_owned() } else { truncate(&value, DISCORD_FIELD_VALUE_MAX) },
                    "inline": true,
                })
            })
            .collect();
        out.insert("embeds".into(), json!([{ "fields": fields }]));
    }
    out.insert("allowed_mentions".into(), json!({ "parse": [] }));
    Value::Object(out)
}

/// At most `max` characters, the last one `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Posts `payload` once. Success is any 2xx; 429, 5xx, timeouts and
/// connection failures may pass on another attempt; other statuses will not.
pub(super) async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    payload: &Value,
    timeout: Duration,
) -> Result<String, AttemptError> {
    let response = client
        .post(url.clone())
        .timeout(timeout)
        .json(payload)
        .send()
        .await
        .map_err(transport_error)?;
    let status = response.status();
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    if status.is_success() {
        return Ok(status_text);
    }
    let retry_after = crate::http_client::retry_after(response.headers(), jiff::Timestamp::now());
    let body = read_some(response).await;
    let mut message = format!("the webhook answered {status_text}");
    if let Some(snippet) = snippet(&body) {
        message.push_str(": ");
        message.push_str(&snippet);
    }
    if status.is_redirection() {
        message.push_str(" (redirects are not followed)");
    }
    if status.as_u16() == 429 || status.is_server_error() {
        let mut error = AttemptError::retryable(message);
        error.retry_after = retry_after;
        Err(error)
    } else {
        Err(AttemptError::fatal(message))
    }
}

async fn read_some(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    // A body that fails to arrive only costs the quote in the error.
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= BODY_READ_MAX {
            body.truncate(BODY_READ_MAX);
            break;
        }
    }
    body
}

fn snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!one_line.is_empty()).then(|| truncate(&one_line, SNIPPET_CHARS))
}

fn transport_error(error: reqwest::Error) -> AttemptError {
    // reqwest puts the full URL in its messages, and the URL is the secret.
    let error = error.without_url();
    let detail = crate::http_client::error_chain(&error);
    if error.is_timeout() {
        AttemptError::retryable(format!("timed out: {detail}"))
    } else if error.is_connect() {
        AttemptError::retryable(format!("cannot connect: {detail}"))
    } else if error.is_builder() {
        AttemptError::fatal(format!("cannot build the request: {detail}"))
    } else {
        // Connection reset and the like: the next try may pass.
        AttemptError::retryable(format!("request failed: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message::new("Deploy <done>", "All 3 nodes & more")
            .field("pipeline", "deploy")
            .field("run", 12)
    }

    #[test]
    fn generic_is_title_text_and_fields() {
        assert_eq!(
            payload(&msg().field("text", "nope"), NotifyFormat::Generic),
            json!({"title": "Deploy <done>", "text": "All 3 nodes & more", "pipeline": "deploy", "run": 12})
        );
    }

    #[test]
    fn slack_escapes_control_characters() {
        assert_eq!(
            payload(&msg(), NotifyFormat::Slack),
            json!({
                "text": "*Deploy &lt;done&gt;*\nAll 3 nodes &amp; more",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "Deploy <done>"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "All 3 nodes &amp; more"}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "*pipeline:* deploy  ·  *run:* 12"}]},
                ],
            })
        );
    }

    #[test]
    fn discord_content_is_capped_and_mentions_are_off() {
        let long = Message::new("T", "é".repeat(5000));
        let p = payload(&long, NotifyFormat::Discord);
        let content = p["content"].as_str().unwrap();
        assert_eq!(content.chars().count(), DISCORD_CONTENT_MAX);
        assert!(content.starts_with("**T**\né") && content.ends_with('…'));
        assert_eq!(p["allowed_mentions"], json!({"parse": []}));
        assert!(p.get("embeds").is_none());
        assert_eq!(
            payload(&msg(), NotifyFormat::Discord)["embeds"],
            json!([{"fields": [
                {"name": "pipeline", "value": "deploy", "inline": true},
                {"name": "run", "value": "12", "inline": true},
            ]}])
        );
    }
}
