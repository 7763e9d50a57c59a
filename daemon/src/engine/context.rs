//! The data templates see for one node of one run.

use serde_json::{Map, Value};
use sluice_shared::Pipeline;
use sluice_shared::run::TriggerInfo;

/// What is known about the run, for templates.
pub struct RunFacts<'a> {
    /// Run id.
    pub id: i64,
    /// Started at (ms).
    pub started_at: Option<i64>,
    /// The retried run.
    pub retry_of: Option<i64>,
    /// What started it.
    pub trigger: &'a TriggerInfo,
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

/// The template context without secrets (also what exec plugins receive).
/// `upstream` holds `(node id, output)` of every node upstream of the one rendered.
pub fn build(facts: &RunFacts<'_>, upstream: Vec<(String, Value)>) -> Value {
    // Built from owned values: `json!` would serialize every borrowed value
    // into a new tree, where a clone copies it directly.
    let nodes = upstream
        .into_iter()
        .map(|(id, output)| (id, object([("output", output)])))
        .collect();
    let user = Value::from(facts.trigger.user.clone());
    let mut trigger = Map::new();
    trigger.insert("kind".into(), Value::from(facts.trigger.kind.as_str()));
    trigger.insert("user".into(), user.clone());
    if let Value::Object(details) = &facts.trigger.details {
        for (k, v) in details {
            trigger.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let params = facts
        .pipeline
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    object([
        ("inputs", facts.inputs.clone()),
        ("nodes", Value::Object(nodes)),
        ("trigger", Value::Object(trigger)),
        (
            "run",
            object([
                ("id", Value::from(facts.id)),
                ("user", user),
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
    ])
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
    use sluice_shared::run::TriggerKind;

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
        let facts = RunFacts {
            id: 42,
            started_at: Some(0),
            retry_of: Some(41),
            trigger: &trigger,
            inputs: &inputs,
            pipeline: &pipeline,
            version: 7,
        };
        let ctx = build(&facts, vec![("up".into(), json!({ "v": true }))]);
        assert_eq!(
            ctx,
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
