//! Prints how long validating a generated 1,000-node pipeline takes, in each syntax.
//! Target: well under 100 ms. Run with `cargo bench -p sluice-shared --bench validate`.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_shared::load_source;
use sluice_shared::validate::ValidateOptions;

/// A 1,000-node DAG: 10 layers of 100, each node needing two nodes of the layer
/// before and reading one of them in a template.
fn generated_yaml(nodes: usize) -> String {
    let width = 100;
    let mut s = String::from("inputs:\n  topic: { type: string, default: rust }\nnodes:\n");
    for i in 0..nodes {
        s.push_str(&format!("  - id: n{i}\n"));
        if i < width {
            s.push_str("    kind: shell\n    run: echo {{ inputs.topic }}\n");
        } else {
            let a = i - width;
            let b = i - width + usize::from(i % width + 1 < width);
            s.push_str(&format!(
                "    kind: transform\n    needs: [n{a}, n{b}]\n    when: \"nodes.n{a}.output.ok\"\n    output: {{ v: \"{{{{ nodes.n{a}.output.v }}}}-{{{{ inputs.topic }}}}\" }}\n"
            ));
        }
    }
    s
}

fn measure(name: &str, text: &str, runs: usize) {
    let opts = ValidateOptions::default();
    let file = format!("gen.{name}");
    let path = Path::new(&file);
    let first = load_source(path, text, &opts);
    assert!(
        first.is_valid(),
        "{:#?}",
        &first.diagnostics[..first.diagnostics.len().min(3)]
    );
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let f = load_source(path, text, &opts);
            let elapsed = t.elapsed();
            assert!(f.is_valid());
            elapsed
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "validate 1000-node {name:<5} {:>7} bytes: median {:6.2} ms, p95 {:6.2} ms, max {:6.2} ms ({runs} runs)",
        text.len(),
        ms(times[runs / 2]),
        ms(times[runs * 95 / 100]),
        ms(times[runs - 1]),
    );
}

fn main() {
    let yaml = generated_yaml(1000);
    let file = load_source(Path::new("gen.yaml"), &yaml, &ValidateOptions::default());
    let pipeline = file.pipeline.expect("generated pipeline is valid");
    let json = serde_json::to_string_pretty(&pipeline).expect("serialises");
    let mut doc = serde_json::to_value(&pipeline).expect("serialises");
    // The TOML form: the same document, with the runtime-only keys removed.
    if let Some(obj) = doc.as_object_mut() {
        obj.retain(|k, v| !(v.is_null() || k == "params" || k == "concurrency" || k == "triggers"));
    }
    let toml = toml::to_string(&doc).expect("toml");
    measure("yaml", &yaml, 30);
    measure("json", &json.replace("\"name\": \"gen\",", ""), 30);
    measure("toml", &toml.replace("name = \"gen\"\n", ""), 30);
}
