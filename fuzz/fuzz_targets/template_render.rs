//! Template rendering: any template text and expression against a context
//! holding hostile values. Rendering must return text or an error (bounded by
//! the engine's output cap and fuel), never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sluice_shared::template::{Context, Escape, TemplateEngine};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    thread_local! {
        static ENGINE: TemplateEngine = TemplateEngine::new();
    }
    let ctx = Context::from_json(&json!({
        "inputs": { "who": "$(id); `id` 'q' \"d\"\n{{ x }}", "n": 3, "list": [1, "two", null] },
        "nodes": { "a": { "output": { "body": { "k": "v" }, "status": 200 } } },
        "trigger": { "kind": "webhook", "body": text, "headers": {} },
        "secrets": { "token": "s3cret" },
    }));
    let (template, expr) = text.split_once('\u{0}').unwrap_or((text, text));
    ENGINE.with(|engine| {
        if let Ok(out) = engine.render_str(template, &ctx, Escape::Text) {
            assert!(out.len() <= sluice_shared::template::MAX_OUTPUT);
        }
        // Shell scripts: the lexer and the substitution of values by
        // environment references must not panic on any script.
        let _ = engine.render_shell(template, &ctx);
        let _ = engine.render_json(&json!({ "a": template, "b": [template] }), &ctx);
        let _ = engine.eval(expr, &ctx);
        let _ = engine.eval_condition(expr, &ctx);
        let _ = engine.template_refs(template);
        let _ = engine.expression_refs(expr);
    });
});
