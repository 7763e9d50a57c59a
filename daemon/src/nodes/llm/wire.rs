//! The providers' wire formats: request bodies, and decoders that turn the
//! streamed bytes into pieces of a reply.
//!
//! - Ollama `POST /api/chat` answers with NDJSON: one JSON object per line,
//!   `{"message":{"content":"..."},"done":false}` chunks, then one with
//!   `"done":true`, `done_reason`, `prompt_eval_count` and `eval_count`.
//! - OpenAI `POST /chat/completions` answers with server-sent events: `data:`
//!   lines holding `chat.completion.chunk` objects (`choices[0].delta.content`,
//!   `finish_reason`), a last chunk with `usage` when `stream_options.include_usage`
//!   is set, then `data: [DONE]`.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sluice_shared::model::node::{LlmFormat, LlmNode};

use crate::llm::ProviderKind;

/// Longest line (NDJSON) or event (SSE) accepted; a longer one is a protocol error.
pub const MAX_LINE: usize = 1024 * 1024;

/// One rendered chat message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// The rendered text.
    pub content: String,
}

/// The body of a streamed chat request for `model`.
pub fn request_body(
    kind: ProviderKind,
    model: &str,
    messages: &[Message],
    node: &LlmNode,
) -> Value {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert("messages".into(), messages.into());
    body.insert("stream".into(), true.into());
    match kind {
        ProviderKind::Ollama => {
            let mut options = Map::new();
            if let Some(t) = node.temperature {
                options.insert("temperature".into(), t.into());
            }
            if let Some(n) = node.max_tokens {
                options.insert("num_predict".into(), n.into());
            }
            if !options.is_empty() {
                body.insert("options".into(), options.into());
            }
            if node.format == LlmFormat::Json {
                // Ollama (0.5+) constrains the reply to a schema given as `format`.
                let format = node.schema.clone().unwrap_or_else(|| "json".into());
                body.insert("format".into(), format);
            }
        }
        ProviderKind::Openai => {
            // Without this the stream carries no token counts.
            body.insert("stream_options".into(), json!({ "include_usage": true }));
            if let Some(t) = node.temperature {
                body.insert("temperature".into(), t.into());
            }
            if let Some(n) = node.max_tokens {
                body.insert("max_tokens".into(), n.into());
            }
            if node.format == LlmFormat::Json {
                let format = match &node.schema {
                    Some(schema) => json!({
                        "type": "json_schema",
                        "json_schema": { "name": "reply", "schema": schema },
                    }),
                    None => json!({ "type": "json_object" }),
                };
                body.insert("response_format".into(), format);
            }
        }
    }
    Value::Object(body)
}

/// What one decoded unit of a stream said.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// More reply text.
    Text(String),
    /// The model that answers (as the provider names it).
    Model(String),
    /// Why generation stopped.
    Finish(String),
    /// Token counts from the provider.
    Usage {
        /// Prompt tokens.
        tokens_in: u64,
        /// Generated tokens.
        tokens_out: u64,
    },
    /// The provider marked the end of the reply.
    Done,
    /// The provider reported an error inside the stream.
    Error(String),
}

/// A stream that does not follow the provider's format.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Turns streamed bytes into [`Piece`]s, whatever the chunk boundaries.
pub struct Decoder {
    kind: ProviderKind,
    /// Bytes of a line not yet ended.
    pending: Vec<u8>,
    /// How many bytes of `pending` are known to hold no newline.
    searched: usize,
    /// SSE: the data lines of the event being read.
    data: Option<String>,
    /// SSE: the event's type, when given.
    event: Option<String>,
}

impl Decoder {
    /// A decoder for a provider's stream.
    pub fn new(kind: ProviderKind) -> Self {
        Self {
            kind,
            pending: Vec::new(),
            searched: 0,
            data: None,
            event: None,
        }
    }

    /// Decodes what `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Piece>, Malformed> {
        self.pending.extend_from_slice(bytes);
        let mut pieces = Vec::new();
        // Each byte is searched once: the lines are read in place and drained
        // together, and a line still open is not searched again.
        let pending = std::mem::take(&mut self.pending);
        let mut start = 0;
        let mut from = self.searched;
        let mut result = Ok(());
        while let Some(offset) = pending[from..].iter().position(|&b| b == b'\n') {
            let end = from + offset;
            result = self.line(&pending[start..end], &mut pieces);
            start = end + 1;
            from = start;
            if result.is_err() {
                break;
            }
        }
        self.pending = pending;
        self.pending.drain(..start);
        self.searched = self.pending.len();
        result?;
        if self.pending.len() > MAX_LINE {
            return Err(Malformed(format!(
                "a line of the stream is longer than {} KiB",
                MAX_LINE / 1024
            )));
        }
        Ok(pieces)
    }

    /// Decodes what is left when the stream ends.
    pub fn finish(&mut self) -> Result<Vec<Piece>, Malformed> {
        let mut pieces = Vec::new();
        let rest = std::mem::take(&mut self.pending);
        self.searched = 0;
        // NDJSON may omit the last newline; an SSE event without its blank
        // line is incomplete and, as the SSE spec says, dropped.
        if self.kind == ProviderKind::Ollama && !rest.iter().all(u8::is_ascii_whitespace) {
            self.line(&rest, &mut pieces)?;
        }
        Ok(pieces)
    }

    fn line(&mut self, raw: &[u8], pieces: &mut Vec<Piece>) -> Result<(), Malformed> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw)
            .map_err(|_| Malformed("the stream is not valid UTF-8".into()))?;
        match self.kind {
            ProviderKind::Ollama => ollama_line(text, pieces),
            ProviderKind::Openai => self.sse_line(text, pieces),
        }
    }

    fn sse_line(&mut self, line: &str, pieces: &mut Vec<Piece>) -> Result<(), Malformed> {
        if line.is_empty() {
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                openai_event(event.as_deref(), &data, pieces)?;
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(()); // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
                if data.len() > MAX_LINE {
                    return Err(Malformed(format!(
                        "an event of the stream is longer than {} KiB",
                        MAX_LINE / 1024
                    )));
                }
            }
            "event" => self.event = Some(value.to_owned()),
            // `id`, `retry` and unknown fields carry nothing for us.
            _ => {}
        }
        Ok(())
    }
}

/// The start of a bad chunk, on one line, for an error message.
pub fn snippet(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = one_line.chars().take(120).collect();
    if cut.len() < one_line.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[derive(Deserialize)]
struct OllamaChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<OllamaMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct OllamaMessage {
    #[serde(default)]
    content: String,
}

fn ollama_line(line: &str, pieces: &mut Vec<Piece>) -> Result<(), Malformed> {
    if line.trim().is_empty() {
        return Ok(());
    }
    let chunk: OllamaChunk = serde_json::from_str(line).map_err(|e| {
        Malformed(format!(
            "a chunk is not the JSON Ollama sends ({e}): {}",
            snippet(line)
        ))
    })?;
    if let Some(error) = chunk.error {
        pieces.push(Piece::Error(error));
        return Ok(());
    }
    if let Some(model) = chunk.model {
        pieces.push(Piece::Model(model));
    }
    if let Some(message) = chunk.message
        && !message.content.is_empty()
    {
        pieces.push(Piece::Text(message.content));
    }
    if chunk.done {
        pieces.push(Piece::Finish(
            chunk.done_reason.unwrap_or_else(|| "stop".into()),
        ));
        if let (Some(tokens_in), Some(tokens_out)) = (chunk.prompt_eval_count, chunk.eval_count) {
            pieces.push(Piece::Usage {
                tokens_in,
                tokens_out,
            });
        }
        pieces.push(Piece::Done);
    }
    Ok(())
}

#[derive(Deserialize)]
struct OpenaiChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<OpenaiChoice>,
    #[serde(default)]
    usage: Option<OpenaiUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct OpenaiChoice {
    #[serde(default)]
    delta: Option<OpenaiDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct OpenaiDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct OpenaiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

fn openai_event(event: Option<&str>, data: &str, pieces: &mut Vec<Piece>) -> Result<(), Malformed> {
    if data.trim() == "[DONE]" {
        pieces.push(Piece::Done);
        return Ok(());
    }
    if event == Some("error") {
        pieces.push(Piece::Error(error_message(data)));
        return Ok(());
    }
    let chunk: OpenaiChunk = serde_json::from_str(data).map_err(|e| {
        Malformed(format!(
            "an event is not an OpenAI chat.completion.chunk ({e}): {}",
            snippet(data)
        ))
    })?;
    if let Some(error) = chunk.error {
        pieces.push(Piece::Error(error_text(&error)));
        return Ok(());
    }
    if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
        pieces.push(Piece::Model(model));
    }
    // Only the first choice is asked for (`n` is never set).
    if let Some(choice) = chunk.choices.into_iter().next() {
        if let Some(text) = choice.delta.and_then(|d| d.content)
            && !text.is_empty()
        {
            pieces.push(Piece::Text(text));
        }
        if let Some(reason) = choice.finish_reason {
            pieces.push(Piece::Finish(reason));
        }
    }
    if let Some(usage) = chunk.usage
        && let (Some(tokens_in), Some(tokens_out)) = (usage.prompt_tokens, usage.completion_tokens)
    {
        pieces.push(Piece::Usage {
            tokens_in,
            tokens_out,
        });
    }
    Ok(())
}

/// The message of an error body, whichever provider wrote it:
/// Ollama `{"error": "..."}`, OpenAI `{"error": {"message": "..."}}`, or text.
pub fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => match map.get("error") {
            Some(error) => error_text(error),
            None => snippet(body),
        },
        _ => snippet(body),
    }
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(s) => snippet(s),
        Value::Object(o) => match o.get("message").and_then(Value::as_str) {
            Some(m) => snippet(m),
            None => snippet(&error.to_string()),
        },
        other => snippet(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(kind: ProviderKind, stream: &str, step: usize) -> Vec<Piece> {
        let mut d = Decoder::new(kind);
        let mut out = Vec::new();
        for chunk in stream.as_bytes().chunks(step) {
            out.extend(d.push(chunk).unwrap());
        }
        out.extend(d.finish().unwrap());
        out
    }

    fn text_of(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    const OLLAMA: &str = concat!(
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"Hé"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"llo"},"done":false}"#,
        "\n",
        r#"{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}"#,
        "\n"
    );

    const OPENAI: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé\"},\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
        "data: [DONE]\n\n"
    );

    #[test]
    fn ollama_ndjson_decodes_whatever_the_chunking() {
        for step in [1, 3, 7, 64, OLLAMA.len()] {
            let pieces = decode_in_pieces(ProviderKind::Ollama, OLLAMA, step);
            assert_eq!(text_of(&pieces), "Héllo", "step {step}");
            assert!(pieces.contains(&Piece::Finish("stop".into())));
            assert!(pieces.contains(&Piece::Usage {
                tokens_in: 26,
                tokens_out: 282
            }));
            assert_eq!(pieces.last(), Some(&Piece::Done));
        }
    }

    #[test]
    fn long_and_many_lines_decode_in_linear_time() {
        use std::time::{Duration, Instant};
        let limit = Duration::from_secs(10);
        // A line near the cap, a few bytes at a time: searched once, not on every chunk.
        let content = "a".repeat(MAX_LINE - 100);
        let line = format!("{{\"message\":{{\"content\":\"{content}\"}},\"done\":false}}\n");
        let mut d = Decoder::new(ProviderKind::Ollama);
        let mut text = String::new();
        let started = Instant::now();
        for (i, chunk) in line.as_bytes().chunks(8).enumerate() {
            text.push_str(&text_of(&d.push(chunk).unwrap()));
            if i % 4096 == 0 {
                assert!(
                    started.elapsed() < limit,
                    "too slow: {:?}",
                    started.elapsed()
                );
            }
        }
        assert_eq!(text.len(), content.len());
        // Many lines in one chunk: not drained one by one from the front.
        let short = "{\"message\":{\"content\":\"x\"},\"done\":false}\n";
        let many = short.repeat(200_000);
        let started = Instant::now();
        let pieces = d.push(many.as_bytes()).unwrap();
        assert!(
            started.elapsed() < limit,
            "too slow: {:?}",
            started.elapsed()
        );
        assert_eq!(text_of(&pieces).len(), 200_000);
        // A split line is still whole after lines were read ahead of it.
        let pieces = d.push(&short.as_bytes()[..10]).unwrap();
        assert!(pieces.is_empty());
        let pieces = d.push(&short.as_bytes()[10..]).unwrap();
        assert_eq!(text_of(&pieces), "x");
    }

    #[test]
    fn openai_sse_decodes_whatever_the_chunking() {
        for step in [1, 5, 13, 100, OPENAI.len()] {
            let pieces = decode_in_pieces(ProviderKind::Openai, OPENAI, step);
            assert_eq!(text_of(&pieces), "Héllo", "step {step}");
            assert!(pieces.contains(&Piece::Model("gpt-4o-mini".into())));
            assert!(pieces.contains(&Piece::Finish("stop".into())));
            assert!(pieces.contains(&Piece::Usage {
                tokens_in: 9,
                tokens_out: 12
            }));
            assert_eq!(pieces.last(), Some(&Piece::Done));
        }
    }

    #[test]
    fn bad_chunks_and_stream_errors_are_reported() {
        let mut d = Decoder::new(ProviderKind::Ollama);
        let err = d
            .push(b"{\"message\":{\"content\":\"a\"},\"done\":fal\n")
            .unwrap_err();
        assert!(
            err.0.starts_with("a chunk is not the JSON Ollama sends"),
            "{err}"
        );
        let mut d = Decoder::new(ProviderKind::Ollama);
        assert_eq!(
            d.push(b"{\"error\":\"model runner has unexpectedly stopped\"}\n")
                .unwrap(),
            [Piece::Error("model runner has unexpectedly stopped".into())]
        );
        let mut d = Decoder::new(ProviderKind::Openai);
        let err = d.push(b"data: {not json}\n\n").unwrap_err();
        assert!(err.0.contains("chat.completion.chunk"), "{err}");
        let mut d = Decoder::new(ProviderKind::Openai);
        assert_eq!(
            d.push(b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n")
                .unwrap(),
            [Piece::Error("overloaded".into())]
        );
    }

    #[test]
    fn request_bodies_follow_each_api() {
        let node = LlmNode {
            temperature: Some(0.2),
            max_tokens: Some(100),
            format: LlmFormat::Json,
            ..LlmNode::default()
        };
        let messages = [Message {
            role: "user",
            content: "hi".into(),
        }];
        assert_eq!(
            request_body(ProviderKind::Ollama, "llama3.2", &messages, &node),
            json!({
                "model": "llama3.2",
                "messages": [{ "role": "user", "content": "hi" }],
                "stream": true,
                "options": { "temperature": 0.2, "num_predict": 100 },
                "format": "json",
            })
        );
        assert_eq!(
            request_body(ProviderKind::Openai, "gpt-4o-mini", &messages, &node),
            json!({
                "model": "gpt-4o-mini",
                "messages": [{ "role": "user", "content": "hi" }],
                "stream": true,
                "stream_options": { "include_usage": true },
                "temperature": 0.2,
                "max_tokens": 100,
                "response_format": { "type": "json_object" },
            })
        );
    }

    #[test]
    fn error_bodies_of_both_providers_are_read() {
        assert_eq!(
            error_message(r#"{"error":"model \"nope\" not found, try pulling it first"}"#),
            "model \"nope\" not found, try pulling it first"
        );
        assert_eq!(
            error_message(
                r#"{"error":{"message":"The model `nope` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#
            ),
            "The model `nope` does not exist"
        );
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
    }
}
