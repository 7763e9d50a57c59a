//! The JSON Schema of pipeline files, generated from the model so editors can
//! validate and complete them. `config/pipeline.schema.json` is this output.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use crate::model::PipelineDoc;
use crate::model::node::{
    ApprovalNode, BUILTIN_KINDS, CommonFieldsSchema, DelayNode, FilterNode, HttpNode, LlmNode,
    NotifyNode, ShellNode, TransformNode,
};

/// The schema of a pipeline file, as pretty JSON with a trailing newline.
pub fn pipeline_schema_json() -> String {
    let schema = schemars::schema_for!(PipelineDoc);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn object_parts(schema: &Schema) -> (Map<String, Value>, Vec<Value>) {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (props, required)
}

fn variant(common: &Schema, kind_schema: Schema, kind: Value, description: Option<&str>) -> Value {
    let (mut props, mut required) = object_parts(common);
    let (own, own_required) = object_parts(&kind_schema);
    props.extend(own);
    props.insert("kind".into(), kind);
    required.retain(|r| r != "kind");
    required.extend(own_required);
    required.push(Value::String("kind".into()));
    let mut v = serde_json::json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    if let (Some(d), Some(obj)) = (description, v.as_object_mut()) {
        obj.insert("description".into(), Value::String(d.into()));
    }
    v
}

/// The schema of one node: one alternative per kind, each with the common fields.
pub(crate) fn node_schema(generator: &mut SchemaGenerator) -> Schema {
    let common = CommonFieldsSchema::json_schema(generator);
    let mut variants = Vec::new();
    let kinds: [(&str, Schema, &str); 8] = [
        (
            "shell",
            ShellNode::json_schema(generator),
            "Run a shell script in its own process group",
        ),
        (
            "http",
            HttpNode::json_schema(generator),
            "Make an HTTP request",
        ),
        (
            "filter",
            FilterNode::json_schema(generator),
            "Continue only when a condition holds",
        ),
        (
            "transform",
            TransformNode::json_schema(generator),
            "Build a value from templates",
        ),
        (
            "delay",
            DelayNode::json_schema(generator),
            "Wait durably (survives restarts)",
        ),
        (
            "llm",
            LlmNode::json_schema(generator),
            "Ask a language model",
        ),
        (
            "approval",
            ApprovalNode::json_schema(generator),
            "Wait for a person to approve or reject",
        ),
        (
            "notify",
            NotifyNode::json_schema(generator),
            "Send a webhook message or an email",
        ),
    ];
    for (name, schema, description) in kinds {
        variants.push(variant(
            &common,
            schema,
            serde_json::json!({ "const": name }),
            Some(description),
        ));
    }
    let plugin = json_schema!({
        "type": "object",
        "properties": {
            "config": { "description": "Settings passed to the plugin (every string templated)" }
        }
    });
    variants.push(variant(
        &common,
        plugin,
        serde_json::json!({
            "type": "string",
            "not": { "enum": BUILTIN_KINDS },
            "description": "An exec plugin: runs sluice-node-<kind> from the plugins directory"
        }),
        Some("An exec plugin node"),
    ));
    json_schema!({
        "description": "One step of the pipeline",
        "oneOf": variants
    })
}
