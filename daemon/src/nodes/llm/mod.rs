//! `llm`: one chat completion from a configured provider (Ollama or any
//! OpenAI-compatible server), streamed into the node log as it arrives.
//!
//! Output: `{text, json (format: json), provider, model, finish_reason,
//! tokens_in, tokens_out, tokens_estimated}` (+ `input_truncated` when the
//! prompt was cut). Token counts come from the provider's usage fields, or are
//! estimated (about 4 characters a token) and marked so.
//!
//! Failures and retries: connect errors, timeouts, 429 (with its Retry-After),
//! 5xx, a stream that breaks off and a JSON reply that does not parse or match
//! `schema` are retryable; the engine retries them under the node's `retry`
//! policy, so each try is a recorded attempt and a long Retry-After holds no
//! worker. A model list falls through to the next model, within the attempt,
//! when the provider refuses a model (400, 404, 422, 5xx or an error before any
//! text). Cancellation and timeouts drop the request, closing the connection.

pub mod schema;
pub mod wire;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};
use sluice_shared::model::node::{ChatRole, LlmFormat, LlmNode, ModelChoice};
use sluice_shared::template::Escape;

use self::wire::{Decoder, Message, Piece};
use super::{Execute, NodeContext, NodeError, Outcome, render};
use crate::http_client::{error_chain, retry_after};
use crate::llm::Provider;

/// Longest reply kept; a longer one fails the attempt.
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Longest error body read from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A log line still growing past this many bytes is written out at its last
/// space, so text without newlines still shows progress in the console.
const SOFT_LINE_BYTES: usize = 1000;

/// Characters per token assumed when a provider reports no usage.
const CHARS_PER_TOKEN: u64 = 4;

impl Execute for LlmNode {
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let result = complete(self, ctx).await;
        // The node ends its attempt's log: the engine relies on that.
        ctx.log.finish().await;
        result
    }
}

/// Token usage of an attempt, as recorded for the daily caps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The provider's name.
    pub provider: String,
    /// The model asked.
    pub model: String,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Generated tokens.
    pub tokens_out: u64,
    /// Whether the counts are estimates.
    pub estimated: bool,
}

/// The tokens an attempt of an `llm` node spent, read from its output (or the
/// partial output of a failure), so the engine can record them.
pub fn usage_of(result: &Result<Outcome, NodeError>) -> Option<Usage> {
    let output = match result {
        Ok(Outcome::Done(v) | Outcome::Stop(v)) => v,
        Ok(Outcome::WaitUntil(..)) => return None,
        Err(e) => e.output.as_ref()?,
    };
    let tokens_in = output.get("tokens_in")?.as_u64()?;
    let tokens_out = output.get("tokens_out")?.as_u64()?;
    Some(Usage {
        provider: output.get("provider")?.as_str()?.to_owned(),
        model: output.get("model")?.as_str()?.to_owned(),
        tokens_in,
        tokens_out,
        estimated: output
            .get("tokens_estimated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// What streamed back for one model.
#[derive(Default)]
struct Reply {
    text: String,
    finish: Option<String>,
    usage: Option<(u64, u64)>,
    done: bool,
}

/// How asking one model failed.
enum Failure {
    /// The provider refused this model; the next in the list may work.
    Refused(NodeError),
    /// Anything else: the attempt ends.
    Failed(NodeError),
}

async fn complete(node: &LlmNode, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    let provider = ctx
        .llm
        .get(node.provider.as_deref())
        .map_err(NodeError::fatal)?
        .clone();
    let models = models_of(node, &provider)?;
    if let Some(schema) = &node.schema {
        // Before any request: a schema we cannot check must not cost tokens.
        schema::check_schema(schema).map_err(|e| NodeError::fatal(format!("`schema`: {e}")))?;
    }
    let mut messages = render_messages(node, ctx)?;
    let truncated = fit(node, &mut messages, ctx).await?;
    let chars_in: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    let timeout = ctx
        .timeout
        .map_or(provider.timeout, |t| t.min(provider.timeout));

    let mut refusals: Vec<String> = Vec::new();
    let mut any_retryable = false;
    for (k, model) in models.iter().enumerate() {
        ctx.log
            .note(&format!(
                "asking {model} at provider '{}' ({}): {} message(s), {chars_in} characters",
                provider.name,
                provider.kind,
                messages.len()
            ))
            .await;
        let started = Instant::now();
        match ask(&provider, model, node, &messages, ctx, timeout, chars_in).await {
            Ok(reply) => {
                return finish(
                    node, ctx, &provider, model, reply, chars_in, truncated, started,
                )
                .await;
            }
            Err(Failure::Refused(error)) if k + 1 < models.len() => {
                ctx.log
                    .note(&format!(
                        "{model} is not available ({}); trying {}",
                        error.message,
                        models[k + 1]
                    ))
                    .await;
                refusals.push(format!("{model}: {}", error.message));
                any_retryable |= error.retryable;
            }
            Err(Failure::Refused(mut error)) => {
                if !refusals.is_empty() {
                    refusals.push(format!("{model}: {}", error.message));
                    error.message = format!("no model answered — {}", refusals.join("; "));
                    // A model that failed for a passing reason (5xx) may answer next time.
                    error.retryable |= any_retryable;
                }
                return Err(error);
            }
            Err(Failure::Failed(error)) => return Err(error),
        }
    }
    Err(NodeError::fatal("no model to ask"))
}

/// The node's model list, or the provider's default model.
fn models_of(node: &LlmNode, provider: &Provider) -> Result<Vec<String>, NodeError> {
    let models: Vec<String> = match &node.model {
        Some(ModelChoice::One(m)) => vec![m.clone()],
        Some(ModelChoice::Fallbacks(list)) => list.clone(),
        None => provider.default_model.clone().into_iter().collect(),
    };
    let models: Vec<String> = models
        .into_iter()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    if models.is_empty() {
        return Err(NodeError::fatal(format!(
            "no model: set `model` on the node or default_model in [llm.providers.{}]",
            provider.name
        )));
    }
    Ok(models)
}

fn render_messages(node: &LlmNode, ctx: &NodeContext) -> Result<Vec<Message>, NodeError> {
    let mut messages = Vec::with_capacity(node.messages.len() + 2);
    if let Some(system) = &node.system {
        messages.push(Message {
            role: "system",
            content: render(ctx, "system", system, Escape::Text)?,
        });
    }
    if let Some(prompt) = &node.prompt {
        messages.push(Message {
            role: "user",
            content: render(ctx, "prompt", prompt, Escape::Text)?,
        });
    }
    for (i, m) in node.messages.iter().enumerate() {
        let role = match m.role {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        };
        messages.push(Message {
            role,
            content: render(
                ctx,
                &format!("messages[{i}].content"),
                &m.content,
                Escape::Text,
            )?,
        });
    }
    if messages.is_empty() {
        return Err(NodeError::fatal("an llm node needs `prompt` or `messages`"));
    }
    Ok(messages)
}

/// Applies `max_input_chars`: an error, or with `truncate` the end of the
/// input cut (the last message first, where templates put the data).
/// Returns whether anything was cut.
async fn fit(
    node: &LlmNode,
    messages: &mut [Message],
    ctx: &NodeContext,
) -> Result<bool, NodeError> {
    let Some(max) = node.max_input_chars.map(|m| m as usize) else {
        return Ok(false);
    };
    let total: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if total <= max {
        return Ok(false);
    }
    if !node.truncate {
        return Err(NodeError::fatal(format!(
            "the rendered prompt is {total} characters, over max_input_chars ({max}); \
             shorten the input or set `truncate: true` to cut it"
        )));
    }
    let mut excess = total - max;
    for m in messages.iter_mut().rev() {
        if excess == 0 {
            break;
        }
        let chars = m.content.chars().count();
        let keep = chars.saturating_sub(excess);
        excess -= chars - keep;
        let cut = m
            .content
            .char_indices()
            .nth(keep)
            .map_or(m.content.len(), |(i, _)| i);
        m.content.truncate(cut);
    }
    ctx.log
        .note(&format!(
            "the prompt was truncated from {total} to {max} characters (max_input_chars); its end was cut"
        ))
        .await;
    Ok(true)
}

fn estimate(chars: usize) -> u64 {
    (chars as u64).div_ceil(CHARS_PER_TOKEN)
}

/// The output of a reply so far, for a failure (its tokens still count).
fn partial_output(provider: &Provider, model: &str, text: &str, chars_in: usize) -> Value {
    json!({
        "text": text,
        "provider": provider.name,
        "model": model,
        "tokens_in": estimate(chars_in),
        "tokens_out": estimate(text.chars().count()),
        "tokens_estimated": true,
    })
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    node: &LlmNode,
    ctx: &NodeContext,
    provider: &Provider,
    model: &str,
    reply: Reply,
    chars_in: usize,
    truncated: bool,
    started: Instant,
) -> Result<Outcome, NodeError> {
    let estimated = reply.usage.is_none();
    let (tokens_in, tokens_out) = reply
        .usage
        .unwrap_or_else(|| (estimate(chars_in), estimate(reply.text.chars().count())));
    let finish_reason = reply.finish.unwrap_or_else(|| "stop".into());
    ctx.log
        .note(&format!(
            "{model} finished ({finish_reason}) in {:.1} s: {tokens_in} tokens in, {tokens_out} out{}",
            started.elapsed().as_secs_f64(),
            if estimated {
                " (estimated: the provider reported no usage)"
            } else {
                ""
            }
        ))
        .await;
    if finish_reason == "length" {
        ctx.log
            .note("the reply was cut short by the token limit (max_tokens or the model's context)")
            .await;
    }
    let mut output = json!({
        "text": reply.text,
        "provider": provider.name,
        "model": model,
        "finish_reason": finish_reason,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "tokens_estimated": estimated,
    });
    if truncated {
        output["input_truncated"] = true.into();
    }
    if node.format == LlmFormat::Json {
        let text = output["text"].as_str().unwrap_or_default().to_owned();
        let parsed: Value = match serde_json::from_str(strip_fence(&text)) {
            Ok(v) => v,
            Err(e) => {
                return Err(NodeError::retryable(format!(
                    "the reply is not valid JSON ({e}): {}",
                    ctx.redactor.redact(&wire::snippet(&text))
                ))
                .with_output(output));
            }
        };
        if let Some(schema) = &node.schema {
            let problems = schema::mismatches(schema, &parsed);
            if !problems.is_empty() {
                let more = if problems.more > 0 {
                    format!(" (and {} more)", problems.more)
                } else {
                    String::new()
                };
                return Err(NodeError::retryable(format!(
                    "the reply does not match `schema`: {}{more}",
                    ctx.redactor.redact(&problems.listed.join("; "))
                ))
                .with_output(output));
            }
        }
        output["json"] = parsed;
    }
    Ok(Outcome::Done(output))
}

/// A reply wrapped in a Markdown code fence (some models add one even in JSON mode).
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    let Some(inner) = inner.strip_suffix("```") else {
        return t;
    };
    // Drop the info string ("json") on the opening line.
    inner
        .split_once('\n')
        .map_or(inner, |(_, body)| body)
        .trim()
}

/// Asks one model and streams its reply into the log.
async fn ask(
    provider: &Provider,
    model: &str,
    node: &LlmNode,
    messages: &[Message],
    ctx: &NodeContext,
    timeout: Duration,
    chars_in: usize,
) -> Result<Reply, Failure> {
    let url = provider.chat_url();
    let shown = ctx.redactor.redact(url.as_str()).into_owned();
    let who = format!("provider '{}' ({shown})", provider.name);
    let body = wire::request_body(provider.kind, model, messages, node);
    let mut builder = ctx.http.post(url).timeout(timeout).json(&body);
    if let Some(key) = provider.api_key() {
        // Checked when the providers were resolved; a failure here means no header.
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {key}")) {
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
    }

    let response = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => {
            ctx.log.note(&format!("cancelled: the request to {who} was dropped")).await;
            return Err(Failure::Failed(NodeError::fatal("cancelled")));
        }
        r = builder.send() => r,
    };
    let mut response = response
        .map_err(|e| Failure::Failed(transport_error(ctx, &who, model, timeout, e, None)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(refusal(ctx, &who, model, &mut response).await);
    }

    let mut decoder = Decoder::new(provider.kind);
    let mut reply = Reply::default();
    let mut lines = LineBuffer::default();
    let partial = |reply: &Reply| partial_output(provider, model, &reply.text, chars_in);
    loop {
        let chunk = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => {
                lines.flush(ctx).await;
                ctx.log
                    .note(&format!("cancelled: the reply from {model} was dropped mid-stream"))
                    .await;
                return Err(Failure::Failed(
                    NodeError::fatal("cancelled").with_output(partial(&reply)),
                ));
            }
            c = response.chunk() => c,
        };
        let (pieces, end) = match chunk {
            Ok(Some(bytes)) => (decoder.push(&bytes), false),
            Ok(None) => (decoder.finish(), true),
            Err(e) => {
                lines.flush(ctx).await;
                let error = transport_error(ctx, &who, model, timeout, e, Some(&reply.text));
                return Err(Failure::Failed(error.with_output(partial(&reply))));
            }
        };
        let pieces = match pieces {
            Ok(p) => p,
            Err(wire::Malformed(detail)) => {
                lines.flush(ctx).await;
                // A protocol mismatch (wrong `kind`, a proxy's error page) does
                // not heal on its own: not retryable.
                return Err(Failure::Failed(
                    NodeError::fatal(format!(
                        "{who} sent a malformed stream for {model}: {}; is kind = \"{}\" right for this server?",
                        ctx.redactor.redact(&detail),
                        provider.kind
                    ))
                    .with_output(partial(&reply)),
                ));
            }
        };
        for piece in pieces {
            match piece {
                Piece::Text(text) => {
                    reply.text.push_str(&text);
                    lines.push(&text, ctx).await;
                }
                Piece::Finish(reason) => reply.finish = Some(reason),
                Piece::Usage {
                    tokens_in,
                    tokens_out,
                } => reply.usage = Some((tokens_in, tokens_out)),
                Piece::Done => reply.done = true,
                Piece::Model(_) => {}
                Piece::Error(message) => {
                    lines.flush(ctx).await;
                    let message = ctx.redactor.redact(&message).into_owned();
                    let error = NodeError::retryable(format!(
                        "{who} reported an error for {model}: {message}"
                    ));
                    // Before any text the model itself failed (e.g. could not load): try the next.
                    return Err(if reply.text.is_empty() {
                        Failure::Refused(error)
                    } else {
                        Failure::Failed(error.with_output(partial(&reply)))
                    });
                }
            }
        }
        if reply.text.len() > MAX_REPLY_BYTES {
            lines.flush(ctx).await;
            return Err(Failure::Failed(
                NodeError::fatal(format!(
                    "the reply from {model} is longer than {} MiB",
                    MAX_REPLY_BYTES / (1024 * 1024)
                ))
                .with_output(partial(&reply)),
            ));
        }
        // Stop at the end marker rather than wait for the server to close.
        if reply.done || end {
            break;
        }
    }
    lines.flush(ctx).await;
    // Some OpenAI-compatible servers omit `[DONE]`; a finish reason is as good an end.
    let complete =
        reply.done || (provider.kind == crate::llm::ProviderKind::Openai && reply.finish.is_some());
    if !complete {
        let got = reply.text.chars().count();
        return Err(Failure::Failed(
            NodeError::retryable(format!(
                "{who} closed the stream for {model} before the reply was complete (after {got} characters)"
            ))
            .with_output(partial(&reply)),
        ));
    }
    Ok(reply)
}

/// A non-2xx answer: which failure it is, with the provider's own message.
async fn refusal(
    ctx: &NodeContext,
    who: &str,
    model: &str,
    response: &mut reqwest::Response,
) -> Failure {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    // Best effort: the status alone already says what happened.
    while body.len() < MAX_ERROR_BODY {
        let chunk = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => break,
            c = response.chunk() => c,
        };
        match chunk {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let detail = wire::error_message(&text);
    let status_text = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    let mut message = format!("{who} returned {status_text} for {model}");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    let message = ctx.redactor.redact(&message).into_owned();
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let mut error = NodeError::retryable(message);
            error.retry_after = retry_after(&headers, jiff::Timestamp::now());
            Failure::Failed(error)
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Failed(NodeError::fatal(
            format!("{message} (check the provider's api_key)"),
        )),
        s if s.is_server_error() => {
            let mut error = NodeError::retryable(message);
            error.retry_after = retry_after(&headers, jiff::Timestamp::now());
            Failure::Refused(error)
        }
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => {
            Failure::Refused(NodeError::fatal(message))
        }
        _ => Failure::Failed(NodeError::fatal(message)),
    }
}

/// A transport failure before (`partial` is `None`) or during the stream.
fn transport_error(
    ctx: &NodeContext,
    who: &str,
    model: &str,
    timeout: Duration,
    error: reqwest::Error,
    partial: Option<&str>,
) -> NodeError {
    let error = error.without_url();
    let detail = ctx.redactor.redact(&error_chain(&error)).into_owned();
    if error.is_timeout() {
        return NodeError::retryable(format!(
            "the request to {who} for {model} timed out after {}",
            sluice_shared::Duration(timeout)
        ));
    }
    match partial {
        Some(text) => NodeError::retryable(format!(
            "the connection to {who} dropped mid-reply from {model} (after {} characters): {detail}",
            text.chars().count()
        )),
        None if error.is_connect() => {
            NodeError::retryable(format!("cannot connect to {who}: {detail}"))
        }
        None => NodeError::retryable(format!("the request to {who} for {model} failed: {detail}")),
    }
}

/// Streamed text cut into log lines: whole lines as they complete, so the
/// console shows the reply growing line by line.
///
/// The log redacts each line on its own, so a secret value must never be
/// split across two lines. Completed text is redacted as a whole before it is
/// split at its newlines, and a line longer than [`SOFT_LINE_BYTES`] is
/// written in parts cut from its redacted text. An unfinished line keeps its
/// last (longest secret − 1) bytes back until more text or the end of the
/// stream arrives: a value not yet complete can only start there.
#[derive(Default)]
struct LineBuffer {
    /// The unfinished line (never holds a newline between calls).
    partial: String,
}

impl LineBuffer {
    async fn push(&mut self, text: &str, ctx: &NodeContext) {
        let before = self.partial.len();
        self.partial.push_str(text);
        if let Some(last) = text.rfind('\n') {
            let rest = self.partial.split_off(before + last + 1);
            let done = std::mem::replace(&mut self.partial, rest);
            let done = done.strip_suffix('\n').unwrap_or(&done);
            let done = ctx.redactor.redact(done).into_owned();
            for line in done.split('\n') {
                write_parts(line.trim_end_matches('\r'), None, ctx).await;
            }
        }
        let hold = ctx.redactor.longest().saturating_sub(1);
        if self.partial.len() > SOFT_LINE_BYTES.saturating_add(hold) {
            let redacted = ctx.redactor.redact(&self.partial).into_owned();
            let written = write_parts(&redacted, Some(hold), ctx).await;
            self.partial = redacted[written..].to_owned();
        }
    }

    async fn flush(&mut self, ctx: &NodeContext) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            let rest = ctx.redactor.redact(&rest).into_owned();
            write_parts(rest.trim_end_matches('\r'), None, ctx).await;
        }
    }
}

/// Writes redacted `text` as lines of at most [`SOFT_LINE_BYTES`], cut after
/// a space where there is one, and returns how many bytes were written: all
/// of a finished line (`hold` is `None`); of an unfinished one, parts only
/// while more than `SOFT_LINE_BYTES + hold` bytes are left.
async fn write_parts(text: &str, hold: Option<usize>, ctx: &NodeContext) -> usize {
    let mut at = 0;
    while text.len() - at > SOFT_LINE_BYTES.saturating_add(hold.unwrap_or(0)) {
        let rest = &text[at..];
        let mut limit = SOFT_LINE_BYTES;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let cut = rest[..limit]
            .rfind(' ')
            .filter(|&i| i > 0)
            .map_or(limit, |i| i + 1);
        ctx.log.line("stdout", rest[..cut].trim_end()).await;
        at += cut;
    }
    if hold.is_none() {
        ctx.log.line("stdout", &text[at..]).await;
        at = text.len();
    }
    at
}

#[cfg(test)]
mod tests;
