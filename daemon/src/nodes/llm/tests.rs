//! Node-level tests that need no provider server (those live in tests/llm.rs).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_shared::model::node::{ChatMessage, ChatRole, LlmNode, ModelChoice};

use super::*;
use crate::llm::{LlmProviders, Provider, ProviderKind};
use crate::nodes::test_support::{ATTEMPT_SECS, Deadline, context, lines_of};

fn with_provider(ctx: &mut NodeContext, base: &str) {
    ctx.llm = Arc::new(LlmProviders::from_providers(vec![Provider::new(
        "local",
        ProviderKind::Ollama,
        reqwest::Url::parse(base).unwrap(),
        None,
        Some("llama3.2".into()),
        Duration::from_secs(5),
    )]));
}

fn prompt_node(prompt: &str) -> LlmNode {
    LlmNode {
        prompt: Some(prompt.into()),
        ..LlmNode::default()
    }
}

#[tokio::test]
async fn no_provider_and_unknown_provider_are_clear_errors() {
    let (mut ctx, _rx) = context(json!({}), &[]);
    let err = prompt_node("hi")
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert!(!err.retryable);
    assert!(
        err.message.starts_with("no LLM provider is configured"),
        "{}",
        err.message
    );
    with_provider(&mut ctx, "http://127.0.0.1:9");
    let node = LlmNode {
        provider: Some("locl".into()),
        ..prompt_node("hi")
    };
    let err = node
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "unknown LLM provider 'locl' (did you mean 'local'?)"
    );
    // A name like none of them lists every configured provider.
    let provider = |name: &str| {
        Provider::new(
            name,
            ProviderKind::Ollama,
            reqwest::Url::parse("http://127.0.0.1:9").unwrap(),
            None,
            Some("m".into()),
            Duration::from_secs(5),
        )
    };
    ctx.llm = Arc::new(LlmProviders::from_providers(vec![
        provider("local"),
        provider("hosted"),
    ]));
    let node = LlmNode {
        provider: Some("gpu-box".into()),
        ..prompt_node("hi")
    };
    let err = node
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert!(!err.retryable);
    assert_eq!(
        err.message,
        "unknown LLM provider 'gpu-box' (configured: local, hosted)"
    );
    // Naming a provider when none is configured says so.
    ctx.llm = Arc::new(LlmProviders::default());
    let err = node
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "unknown LLM provider 'gpu-box' (none is configured in sluiced.toml)"
    );
}

#[tokio::test]
async fn an_over_long_prompt_fails_before_any_request() {
    let (mut ctx, _rx) = context(json!({ "inputs": { "doc": "x".repeat(50) } }), &[]);
    // Port 9 (discard) is never reached: the error comes first.
    with_provider(&mut ctx, "http://127.0.0.1:9");
    let node = LlmNode {
        max_input_chars: Some(20),
        ..prompt_node("Summarise: {{ inputs.doc }}")
    };
    let err = node
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert!(!err.retryable);
    assert_eq!(
        err.message,
        "the rendered prompt is 61 characters, over max_input_chars (20); shorten the input or set `truncate: true` to cut it"
    );
}

#[tokio::test]
async fn truncation_cuts_the_end_and_says_so() {
    let (ctx, mut rx) = context(json!({}), &[]);
    let node = LlmNode {
        max_input_chars: Some(12),
        truncate: true,
        ..LlmNode::default()
    };
    let mut messages = vec![
        Message {
            role: "system",
            content: "Be brief".into(),
        },
        Message {
            role: "user",
            content: "héllo wörld".into(),
        },
    ];
    assert!(fit(&node, &mut messages, &ctx).await.unwrap());
    assert_eq!(messages[0].content, "Be brief");
    assert_eq!(messages[1].content, "héll");
    let notes = lines_of(&mut rx, "sluice");
    assert_eq!(
        notes,
        ["the prompt was truncated from 19 to 12 characters (max_input_chars); its end was cut"]
    );
    // Cutting reaches earlier messages when the last is not enough.
    let node = LlmNode {
        max_input_chars: Some(3),
        truncate: true,
        ..LlmNode::default()
    };
    assert!(fit(&node, &mut messages, &ctx).await.unwrap());
    assert_eq!(
        (messages[0].content.as_str(), messages[1].content.as_str()),
        ("Be ", "")
    );
}

#[tokio::test]
async fn messages_render_in_order_with_their_roles() {
    let (ctx, _rx) = context(json!({ "inputs": { "who": "Ada" } }), &[]);
    let node = LlmNode {
        system: Some("You are terse.".into()),
        messages: vec![
            ChatMessage {
                role: ChatRole::User,
                content: "Hi, I am {{ inputs.who }}".into(),
            },
            ChatMessage {
                role: ChatRole::Assistant,
                content: "Hello.".into(),
            },
        ],
        ..LlmNode::default()
    };
    let messages = render_messages(&node, &ctx).unwrap();
    let pairs: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("system", "You are terse."),
            ("user", "Hi, I am Ada"),
            ("assistant", "Hello.")
        ]
    );
    let err = render_messages(&prompt_node("{{ inputs.nope }}"), &ctx).unwrap_err();
    assert!(
        err.message.starts_with("cannot render `prompt`"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_model_is_required_somewhere() {
    let (mut ctx, _rx) = context(json!({}), &[]);
    ctx.llm = Arc::new(LlmProviders::from_providers(vec![Provider::new(
        "bare",
        ProviderKind::Openai,
        reqwest::Url::parse("http://127.0.0.1:9/v1").unwrap(),
        None,
        None,
        Duration::from_secs(5),
    )]));
    let err = prompt_node("hi")
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "no model: set `model` on the node or default_model in [llm.providers.bare]"
    );
    let node = LlmNode {
        model: Some(ModelChoice::Fallbacks(vec!["a".into(), " ".into()])),
        ..prompt_node("hi")
    };
    let provider = ctx.llm.get(None).unwrap().clone();
    assert_eq!(models_of(&node, &provider).unwrap(), ["a"]);
}

#[tokio::test]
async fn unsupported_schemas_fail_before_any_request() {
    let (mut ctx, _rx) = context(json!({}), &[]);
    with_provider(&mut ctx, "http://127.0.0.1:9");
    let node = LlmNode {
        format: LlmFormat::Json,
        schema: Some(json!({ "type": "object", "patternProperties": {} })),
        ..prompt_node("hi")
    };
    let err = node
        .execute(&ctx)
        .deadline(ATTEMPT_SECS, "the node attempt")
        .await
        .unwrap_err();
    assert!(
        err.message.starts_with(
            "`schema`: the schema keyword `patternProperties` (at /) is not supported"
        ),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn streamed_text_is_logged_line_by_line() {
    let (ctx, mut rx) = context(json!({}), &[("key", "s3cret-key")]);
    let mut lines = LineBuffer::default();
    lines.push("first li", &ctx).await;
    assert!(lines_of(&mut rx, "stdout").is_empty(), "no partial lines");
    lines.push("ne\nsecond s3cr", &ctx).await;
    lines.push("et-key line\nthird", &ctx).await;
    lines.flush(&ctx).await;
    assert_eq!(
        lines_of(&mut rx, "stdout"),
        ["first line", "second *** line", "third"],
        "a secret split across tokens is still masked"
    );
    let long = "word ".repeat(300);
    lines.push(&long, &ctx).await;
    let written = lines_of(&mut rx, "stdout");
    assert_eq!(written.len(), 1);
    assert!(written[0].len() <= SOFT_LINE_BYTES && written[0].ends_with("word"));
    lines.flush(&ctx).await;
    let rest = lines_of(&mut rx, "stdout");
    assert_eq!(
        written[0].len() + 1 + rest[0].len(),
        long.len(),
        "nothing lost at the cut"
    );
}

#[tokio::test]
async fn a_secret_is_never_split_across_log_lines() {
    let secret = "SECRET-VALUE-0123456789";
    let (ctx, mut rx) = context(json!({}), &[("key", secret), ("other", "shorter")]);
    for lead in (SOFT_LINE_BYTES - 30)..=SOFT_LINE_BYTES {
        for (step, filler) in [(1, 'x'), (3, 'x'), (7, ' '), (64, 'x'), (4096, 'x')] {
            let head = filler.to_string().repeat(lead);
            let text = format!("{head}{secret}{}", "y".repeat(1500));
            let mut lines = LineBuffer::default();
            let bytes = text.as_bytes();
            for piece in bytes.chunks(step) {
                lines.push(std::str::from_utf8(piece).unwrap(), &ctx).await;
            }
            lines.flush(&ctx).await;
            let written = lines_of(&mut rx, "stdout");
            assert!(written.len() > 1, "the line was cut");
            for line in &written {
                assert!(line.len() <= SOFT_LINE_BYTES, "{}", line.len());
                for n in 4..secret.len() {
                    // Neither half of the value may appear at a cut.
                    assert!(
                        !line.ends_with(&secret[..n]) && !line.starts_with(&secret[n..]),
                        "lead {lead}, step {step}: {line:?}"
                    );
                }
            }
            if filler == 'x' {
                // Without spaces nothing is trimmed at the cuts.
                assert_eq!(
                    written.concat(),
                    format!("{head}***{}", "y".repeat(1500)),
                    "lead {lead}, step {step}"
                );
            } else {
                assert!(written.iter().any(|l| l.contains("***")));
            }
            assert!(!written.concat().contains(secret));
        }
    }
    // Completed lines are redacted whole, and a value at the very end is still
    // masked when the stream ends.
    let mut lines = LineBuffer::default();
    let long = "z".repeat(2 * SOFT_LINE_BYTES - 5);
    lines.push(&format!("{long}{}", &secret[..9]), &ctx).await;
    lines
        .push(&format!("{}\nend {}", &secret[9..], &secret[..3]), &ctx)
        .await;
    lines.push(&secret[3..], &ctx).await;
    lines.flush(&ctx).await;
    let written = lines_of(&mut rx, "stdout");
    assert_eq!(written.concat(), format!("{long}***end ***"));
}

#[test]
fn fences_are_stripped_and_usage_is_read_back() {
    assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
    assert_eq!(strip_fence(" {\"a\":1} "), "{\"a\":1}");
    let out = json!({ "provider": "p", "model": "m", "tokens_in": 3, "tokens_out": 4, "tokens_estimated": true });
    assert_eq!(
        usage_of(&Ok(Outcome::Done(out.clone()))),
        Some(Usage {
            provider: "p".into(),
            model: "m".into(),
            tokens_in: 3,
            tokens_out: 4,
            estimated: true
        })
    );
    assert!(usage_of(&Err(NodeError::fatal("x").with_output(out))).is_some());
    assert_eq!(usage_of(&Err(NodeError::fatal("x"))), None);
}
