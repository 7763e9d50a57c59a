//! Parsing, validating and templating arbitrary input never panics. Bounded
//! property tests run in every `cargo test`; raise PROPTEST_CASES to dig deeper.

use std::path::Path;

use proptest::prelude::*;
use sluice_shared::load_source;
use sluice_shared::template::{Context, Escape, TemplateEngine};
use sluice_shared::validate::ValidateOptions;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn examples() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pipelines");
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn check_all_formats(text: &str) {
    let opts = ValidateOptions::default();
    for name in ["f.yaml", "f.toml", "f.json"] {
        let f = load_source(Path::new(name), text, &opts);
        // Whatever came in, the answer is consistent: valid with a pipeline, or invalid with reasons.
        assert_eq!(
            f.is_valid(),
            f.pipeline.is_some(),
            "{name}: {:?}",
            f.diagnostics
        );
        assert!(f.is_valid() || !f.diagnostics.is_empty());
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_all_formats(&text);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[a-z_:\\-\\[\\]{}()\"'#*&!|>0-9.,@%= \n\t]{0,400}") {
        check_all_formats(&text);
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..64,
        edits in proptest::collection::vec((0usize..10_000, 0u8..3, proptest::char::any()), 1..8),
    ) {
        let ex = examples();
        let (name, text) = &ex[which % ex.len()];
        let mut chars: Vec<char> = text.chars().collect();
        for (pos, op, ch) in edits {
            let at = pos % (chars.len() + 1);
            match op {
                0 => chars.insert(at, ch),
                1 if at < chars.len() => { chars.remove(at); }
                _ if at < chars.len() => chars[at] = ch,
                _ => {}
            }
        }
        let mutated: String = chars.into_iter().collect();
        let f = load_source(Path::new(name), &mutated, &ValidateOptions::default());
        prop_assert_eq!(f.is_valid(), f.pipeline.is_some());
    }

    #[test]
    fn arbitrary_templates_never_panic(src in "([a-z. |()\\[\\]'0-9*+~-]|\\{\\{|\\}\\}|\\{%|%\\}| for | in | if | endfor | endif | range| loop| inputs| nodes){0,60}") {
        let engine = TemplateEngine::new();
        let ctx = Context::from_json(&serde_json::json!({"inputs": {"a": "x'y", "n": 3}, "nodes": {}}));
        let _ = engine.template_refs(&src);
        let _ = engine.expression_refs(&src);
        let _ = engine.render_str(&src, &ctx, Escape::Text);
        let _ = engine.render_shell(&src, &ctx);
        let _ = engine.eval_condition(&src, &ctx);
        let _ = engine.render_json(&serde_json::Value::String(src.clone()), &ctx);
    }
}

#[test]
fn deeply_nested_input_is_refused_not_overflowed() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    check_all_formats(&deep);
    let deep_map = format!("{}x{}", "{a: ".repeat(50_000), "}".repeat(50_000));
    check_all_formats(&deep_map);
}

#[test]
fn billion_laughs_is_bounded() {
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    doc.push_str("nodes: *a9\n");
    let f = load_source(Path::new("laughs.yaml"), &doc, &ValidateOptions::default());
    assert!(!f.is_valid());
}
