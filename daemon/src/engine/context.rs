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
    // Built by hand: `json!` would serialize every borrowed value into a new
    // tree, where a clone copies it directly.
    let mut nodes = Map::with_capacity(upstream.len());
    for (id, output) in upstream {
        let mut node = Map::with_capacity(1);
        node.insert("output".into(), output);
        nodes.insert(id, Value::Object(node));
    }
    let details = match &facts.trigger.details {
        Value::Object(d) => d.len(),
        _ => 0,
    };
    let mut trigger = Map::with_capacity(2 + details);
    trigger.insert(
        "kind".into(),
        Value::String(facts.trigger.kind.as_str().into()),
    );
    let user = facts
        .trigger
        .user
        .clone()
        .map_or(Value::Null, Value::String);
    trigger.insert("user".into(), user.clone());
    if let Value::Object(details) = &facts.trigger.details {
        for (k, v) in details {
            trigger.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let mut run = Map::with_capacity(4);
    run.insert("id".into(), Value::from(facts.id));
    run.insert("user".into(), user);
    run.insert("started_at".into(), ms_to_rfc3339(facts.started_at));
    run.insert(
        "retry_of".into(),
        facts.retry_of.map_or(Value::Null, Value::from),
    );
    let mut pipeline = Map::with_capacity(3);
    pipeline.insert("name".into(), Value::String(facts.pipeline.name.clone()));
    pipeline.insert("version".into(), Value::from(facts.version));
    pipeline.insert(
        "description".into(),
        facts
            .pipeline
            .description
            .clone()
            .map_or(Value::Null, Value::String),
    );
    let mut context = Map::with_capacity(6);
    context.insert("inputs".into(), facts.inputs.clone());
    context.insert("nodes".into(), Value::Object(nodes));
    context.insert("trigger".into(), Value::Object(trigger));
    context.insert("run".into(), Value::Object(run));
    context.insert("pipeline".into(), Value::Object(pipeline));
    let params = facts
        .pipeline
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    context.insert("params".into(), Value::Object(params));
    Value::Object(context)
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
