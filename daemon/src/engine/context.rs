//! The data templates see for one node of one run.

use std::sync::Arc;

use serde_json::Value;
use sluice_shared::Pipeline;
use sluice_shared::run::TriggerKind;
use sluice_shared::template::{Context, Layer};

/// What is known about the run, for templates.
pub struct RunFacts<'a> {
    /// Run id.
    pub id: i64,
    /// Started at (ms).
    pub started_at: Option<i64>,
    /// The retried run.
    pub retry_of: Option<i64>,
    /// What started it.
    pub trigger_kind: TriggerKind,
    /// Whose run it is.
    pub user: Option<&'a str>,
    /// The trigger's details (body, headers, ...), shared rather than copied.
    pub trigger_details: &'a Arc<Value>,
    /// Input values.
    pub inputs: &'a Value,
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// Its stored version number.
    pub version: i64,
}

fn ms_to_rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// The template context: inputs, upstream outputs, the run, the pipeline and
/// its params, with the trigger (its details with `kind` and `user` over them)
/// and `secrets` set over it as shared layers, not copies: a trigger can hold
/// a large body, and every node gets a context. Without the secrets, as plain
/// JSON (`Context::to_json_without("secrets")`), it is what exec plugins get.
/// `upstream` holds `(node id, output)` of every node upstream of the one rendered.
pub fn build(
    facts: &RunFacts<'_>,
    upstream: Vec<(String, Value)>,
    secrets: &Arc<Value>,
) -> Context {
    let nodes = upstream
        .into_iter()
        .map(|(id, output)| (id, object([("output", output)])))
        .collect();
    let user = Value::from(facts.user);
    let params = facts
        .pipeline
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let root = object([
        ("inputs", facts.inputs.clone()),
        ("nodes", Value::Object(nodes)),
        // Set by the layer below; held here so plain JSON keeps this key order.
        ("trigger", Value::Null),
        (
            "run",
            object([
                ("id", Value::from(facts.id)),
                ("user", user.clone()),
                ("started_at", ms_to_rfc3339(facts.started_at)),
                ("retry_of", Value::from(facts.retry_of)),
            ]),
        ),
        (
            "pipeline",
            object([
                ("name", Value::from(facts.pipeline.name.as_str())),
                ("version", Value::from(facts.version)),
                (
                    "description",
                    Value::from(facts.pipeline.description.clone()),
                ),
            ]),
        ),
        ("params", Value::Object(params)),
    ]);
    // The trigger's own `kind` and `user` win over keys of the same name in its details.
    let trigger = Layer {
        key: "trigger".to_owned(),
        value: Arc::clone(facts.trigger_details),
        over: vec![
            Layer::new("kind", Arc::new(Value::from(facts.trigger_kind.as_str()))),
            Layer::new("user", Arc::new(user)),
        ],
    };
    Context::layered(
        Arc::new(root),
        vec![trigger, Layer::new("secrets", Arc::clone(secrets))],
    )
}

/// A JSON object of `entries`, in their order.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_shared::run::{TriggerInfo, TriggerKind};

    #[test]
    fn the_context_has_every_part_and_the_trigger_keeps_its_own_kind() {
        let file = sluice_shared::load_source(
            std::path::Path::new("p.yaml"),
            "description: d\nnodes:\n  - { id: a, kind: transform, output: 1 }\n",
            &Default::default(),
        );
        let Some(mut pipeline) = file.pipeline else {
            panic!("{:?}", file.diagnostics);
        };
        // As a pipeline made from a library template has them.
        pipeline.params.insert("region".into(), json!("eu"));
        pipeline.params.insert("n".into(), json!(2));
        let trigger = TriggerInfo {
            kind: TriggerKind::Webhook,
            user: Some("alice".into()),
            details: json!({ "body": { "x": [1, "two"] }, "kind": "forged", "request_id": "r1" }),
        };
        let inputs = json!({ "n": 3 });
        let details = Arc::new(trigger.details.clone());
        let facts = RunFacts {
            id: 42,
            started_at: Some(0),
            retry_of: Some(41),
            trigger_kind: trigger.kind,
            user: trigger.user.as_deref(),
            trigger_details: &details,
            inputs: &inputs,
            pipeline: &pipeline,
            version: 7,
        };
        let secrets = Arc::new(json!({ "k": "v" }));
        let ctx = build(&facts, vec![("up".into(), json!({ "v": true }))], &secrets);
        let engine = sluice_shared::template::TemplateEngine::new();
        assert_eq!(
            engine.eval("trigger.kind", &ctx).unwrap(),
            json!("webhook"),
            "the trigger's own kind wins over its details'"
        );
        assert_eq!(engine.eval("secrets.k", &ctx).unwrap(), json!("v"));
        assert_eq!(
            engine
                .render_str(
                    "{{ trigger | tojson }}",
                    &ctx,
                    sluice_shared::template::Escape::Text
                )
                .unwrap(),
            r#"{"body":{"x":[1,"two"]},"kind":"webhook","request_id":"r1","user":"alice"}"#
        );
        assert_eq!(
            ctx.to_json_without("secrets"),
            json!({
                "inputs": { "n": 3 },
                "nodes": { "up": { "output": { "v": true } } },
                "trigger": { "kind": "webhook", "user": "alice", "body": { "x": [1, "two"] }, "request_id": "r1" },
                "run": { "id": 42, "user": "alice", "started_at": "1970-01-01T00:00:00Z", "retry_of": 41 },
                "pipeline": { "name": "p", "version": 7, "description": "d" },
                "params": { "region": "eu", "n": 2 },
            })
        );
    }
}
