//! The data templates see for one node of one run.

use serde_json::{Map, Value, json};
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
    let mut nodes = Map::new();
    for (id, output) in upstream {
        nodes.insert(id, json!({ "output": output }));
    }
    let mut trigger = Map::new();
    trigger.insert(
        "kind".into(),
        Value::String(facts.trigger.kind.as_str().into()),
    );
    trigger.insert(
        "user".into(),
        facts
            .trigger
            .user
            .clone()
            .map_or(Value::Null, Value::String),
    );
    if let Value::Object(details) = &facts.trigger.details {
        for (k, v) in details {
            trigger.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    json!({
        "inputs": facts.inputs,
        "nodes": nodes,
        "trigger": trigger,
        "run": {
            "id": facts.id,
            "user": facts.trigger.user,
            "started_at": ms_to_rfc3339(facts.started_at),
            "retry_of": facts.retry_of,
        },
        "pipeline": {
            "name": facts.pipeline.name,
            "version": facts.version,
            "description": facts.pipeline.description,
        },
        "params": facts.pipeline.params,
    })
}
