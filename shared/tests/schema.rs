//! `config/pipeline.schema.json` must be exactly what the model generates.
//! Regenerate with `SLUICE_UPDATE_SCHEMA=1 cargo test -p sluice-shared --test schema`
//! (or `sluice schema > config/pipeline.schema.json`).

use std::path::Path;

use serde_json::Value;

#[test]
fn committed_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pipeline.schema.json");
    let generated = sluice_shared::schema::pipeline_schema_json();
    if std::env::var_os("SLUICE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "config/pipeline.schema.json is out of date; run SLUICE_UPDATE_SCHEMA=1 cargo test -p sluice-shared --test schema"
    );
}

#[test]
fn schema_describes_every_node_kind_and_refuses_unknown_fields() {
    let schema: Value =
        serde_json::from_str(&sluice_shared::schema::pipeline_schema_json()).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let node = &schema["$defs"]["Node"];
    let variants = node["oneOf"].as_array().unwrap();
    let kinds: Vec<&Value> = variants.iter().map(|v| &v["properties"]["kind"]).collect();
    for k in sluice_shared::model::node::BUILTIN_KINDS {
        assert!(
            kinds.iter().any(|x| x["const"] == *k),
            "no schema for kind {k}"
        );
    }
    for v in variants {
        assert_eq!(v["additionalProperties"], false);
        let required: Vec<&str> = v["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(required.contains(&"id") && required.contains(&"kind"));
        assert!(!required.contains(&"needs"), "needs is optional");
    }
    let http = variants
        .iter()
        .find(|v| v["properties"]["kind"]["const"] == "http")
        .unwrap();
    assert!(http["properties"]["url"].is_object() && http["properties"]["needs"].is_object());
}
