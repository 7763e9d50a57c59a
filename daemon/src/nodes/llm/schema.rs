//! A small JSON Schema checker for `llm` replies.
//!
//! Why not a full validator: the maintained crates (jsonschema, boon) bring
//! regex engines, URI and IDN handling, and remote `$ref` resolution — minutes
//! of build on our 2-core machines for schemas that, for model replies, are
//! nearly always a few typed properties. This covers that common subset
//! (draft 2020-12 semantics) and refuses any other keyword up front, so a
//! schema is never checked only in part without anyone knowing.

use serde_json::Value;

/// Keywords that only describe and never constrain.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "format",
];

/// Keywords checked here.
const SUPPORTED: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
];

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// Most mismatches listed in one error message.
pub const MAX_REPORTED: usize = 5;

/// Checks that `schema` uses only what this checker understands, so that a
/// reply is never judged against part of a schema. Errors name the place.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    check_at(schema, "")
}

fn check_at(schema: &Value, at: &str) -> Result<(), String> {
    let place = if at.is_empty() { "/" } else { at };
    let map = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(map) => map,
        _ => {
            return Err(format!(
                "the schema at {place} must be an object or a boolean"
            ));
        }
    };
    for (key, value) in map {
        if ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if !SUPPORTED.contains(&key.as_str()) {
            return Err(format!(
                "the schema keyword `{key}` (at {place}) is not supported; supported: {}",
                SUPPORTED.join(", ")
            ));
        }
        let here = format!("{at}/{key}");
        match key.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(list) => list.iter().collect(),
                    other => vec![other],
                };
                for name in names {
                    if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(format!(
                            "`type` at {here} must name one of: {}",
                            TYPES.join(", ")
                        ));
                    }
                }
            }
            "enum" if !value.is_array() => {
                return Err(format!("`enum` at {here} must be a list"));
            }
            "properties" => {
                let Some(props) = value.as_object() else {
                    return Err(format!("`properties` at {here} must be an object"));
                };
                for (name, sub) in props {
                    check_at(sub, &format!("{here}/{name}"))?;
                }
            }
            "required"
                if !value
                    .as_array()
                    .is_some_and(|l| l.iter().all(Value::is_string)) =>
            {
                return Err(format!("`required` at {here} must be a list of names"));
            }
            "additionalProperties" | "items" | "not" => check_at(value, &here)?,
            "allOf" | "anyOf" | "oneOf" => {
                let Some(list) = value.as_array().filter(|l| !l.is_empty()) else {
                    return Err(format!("`{key}` at {here} must be a non-empty list"));
                };
                for (i, sub) in list.iter().enumerate() {
                    check_at(sub, &format!("{here}/{i}"))?;
                }
            }
            "minProperties" | "maxProperties" | "minItems" | "maxItems" | "minLength"
            | "maxLength"
                if value.as_u64().is_none() =>
            {
                return Err(format!("`{key}` at {here} must be a whole number"));
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if !value.is_number() =>
            {
                return Err(format!("`{key}` at {here} must be a number"));
            }
            "multipleOf" if !value.as_f64().is_some_and(|n| n > 0.0) => {
                return Err(format!("`multipleOf` at {here} must be a positive number"));
            }
            "uniqueItems" if !value.is_boolean() => {
                return Err(format!("`uniqueItems` at {here} must be true or false"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The places where `value` does not match `schema` (a schema that passed
/// [`check_schema`]), each as "<JSON pointer>: <what is wrong>"; empty when it matches.
pub fn mismatches(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, "", &mut out);
    out
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match (name, value) {
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        ("number", Value::Number(_)) => true,
        _ => type_name(value) == name,
    }
}

fn walk(schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let place = if at.is_empty() { "/" } else { at };
    let map = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            out.push(format!("{place}: no value is allowed here"));
            return;
        }
        Value::Object(map) => map,
        _ => return,
    };
    let mut fail = |message: String| out.push(format!("{place}: {message}"));

    if let Some(ty) = map.get("type") {
        let names: Vec<&str> = match ty {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !names.iter().any(|n| has_type(value, n)) {
            fail(format!(
                "expected {}, got {}",
                names.join(" or "),
                type_name(value)
            ));
            // Other keywords would only repeat the mismatch.
            return;
        }
    }
    if let Some(Value::Array(choices)) = map.get("enum")
        && !choices.iter().any(|c| json_eq(c, value))
    {
        fail(format!(
            "{} is not one of {}",
            short(value),
            Value::Array(choices.clone())
        ));
    }
    if let Some(expected) = map.get("const")
        && !json_eq(expected, value)
    {
        fail(format!("expected {expected}, got {}", short(value)));
    }
    match value {
        Value::Object(obj) => {
            let props = map.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = map.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(name) {
                        fail(format!("missing required property '{name}'"));
                    }
                }
            }
            let count = obj.len() as u64;
            if let Some(min) = map.get("minProperties").and_then(Value::as_u64)
                && count < min
            {
                fail(format!("has {count} properties; at least {min} required"));
            }
            if let Some(max) = map.get("maxProperties").and_then(Value::as_u64)
                && count > max
            {
                fail(format!("has {count} properties; at most {max} allowed"));
            }
            for (name, item) in obj {
                let sub_at = format!("{at}/{}", pointer_escape(name));
                match props.and_then(|p| p.get(name)) {
                    Some(sub) => walk(sub, item, &sub_at, out),
                    None => {
                        if let Some(extra) = map.get("additionalProperties") {
                            if extra == &Value::Bool(false) {
                                out.push(format!("{place}: unexpected property '{name}'"));
                            } else {
                                walk(extra, item, &sub_at, out);
                            }
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            let count = items.len() as u64;
            if let Some(min) = map.get("minItems").and_then(Value::as_u64)
                && count < min
            {
                fail(format!("has {count} items; at least {min} required"));
            }
            if let Some(max) = map.get("maxItems").and_then(Value::as_u64)
                && count > max
            {
                fail(format!("has {count} items; at most {max} allowed"));
            }
            if map.get("uniqueItems") == Some(&Value::Bool(true)) {
                let repeated = items
                    .iter()
                    .enumerate()
                    .any(|(i, a)| items[..i].iter().any(|b| json_eq(a, b)));
                if repeated {
                    fail("items are not unique".into());
                }
            }
            if let Some(sub) = map.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(sub, item, &format!("{at}/{i}"), out);
                }
            }
        }
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(min) = map.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                fail(format!(
                    "is {chars} characters long; at least {min} required"
                ));
            }
            if let Some(max) = map.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                fail(format!("is {chars} characters long; at most {max} allowed"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let bound = |k: &str| map.get(k).and_then(Value::as_f64);
            if let Some(min) = bound("minimum")
                && x < min
            {
                fail(format!("{n} is less than the minimum {min}"));
            }
            if let Some(max) = bound("maximum")
                && x > max
            {
                fail(format!("{n} is more than the maximum {max}"));
            }
            if let Some(min) = bound("exclusiveMinimum")
                && x <= min
            {
                fail(format!("{n} must be more than {min}"));
            }
            if let Some(max) = bound("exclusiveMaximum")
                && x >= max
            {
                fail(format!("{n} must be less than {max}"));
            }
            if let Some(step) = bound("multipleOf")
                && step > 0.0
            {
                let q = x / step;
                if (q - q.round()).abs() > 1e-9 {
                    fail(format!("{n} is not a multiple of {step}"));
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Array(all)) = map.get("allOf") {
        for sub in all {
            walk(sub, value, at, out);
        }
    }
    if let Some(Value::Array(any)) = map.get("anyOf")
        && !any
            .iter()
            .any(|sub| mismatches_at(sub, value, at).is_empty())
    {
        out.push(format!("{place}: matches none of `anyOf`"));
    }
    if let Some(Value::Array(one)) = map.get("oneOf") {
        let matching = one
            .iter()
            .filter(|sub| mismatches_at(sub, value, at).is_empty())
            .count();
        if matching != 1 {
            out.push(format!(
                "{place}: matches {matching} of `oneOf`; exactly one required"
            ));
        }
    }
    if let Some(not) = map.get("not")
        && mismatches_at(not, value, at).is_empty()
    {
        out.push(format!("{place}: matches the schema under `not`"));
    }
}

fn mismatches_at(schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, at, &mut out);
    out
}

/// JSON equality where 1 and 1.0 are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A value as quoted in a message, cut short.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(60).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resume_schema() -> Value {
        json!({
            "type": "object",
            "required": ["name", "skills", "score"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "minLength": 1 },
                "skills": { "type": "array", "items": { "type": "string" }, "maxItems": 3 },
                "score": { "type": "integer", "minimum": 0, "maximum": 10 },
                "level": { "enum": ["junior", "senior"] },
                "note": { "type": ["string", "null"] }
            }
        })
    }

    #[test]
    fn a_matching_value_has_no_mismatches() {
        let schema = resume_schema();
        check_schema(&schema).unwrap();
        let value = json!({ "name": "Ada", "skills": ["rust"], "score": 7, "level": "senior", "note": null });
        assert_eq!(mismatches(&schema, &value), Vec::<String>::new());
        assert!(mismatches(&schema, &json!({"name": "A", "skills": [], "score": 7.0})).is_empty());
    }

    #[test]
    fn mismatches_name_the_place() {
        let value = json!({ "name": "", "skills": ["a", 2, "c", "d"], "score": 11, "level": "cto", "x": 1 });
        let mut got = mismatches(&resume_schema(), &value);
        got.sort();
        assert_eq!(
            got,
            [
                "/: unexpected property 'x'",
                "/level: \"cto\" is not one of [\"junior\",\"senior\"]",
                "/name: is 0 characters long; at least 1 required",
                "/score: 11 is more than the maximum 10",
                "/skills/1: expected string, got integer",
                "/skills: has 4 items; at most 3 allowed",
            ]
            .map(String::from)
        );
        assert_eq!(
            mismatches(&resume_schema(), &json!([1])),
            ["/: expected object, got array"]
        );
        assert_eq!(
            mismatches(&resume_schema(), &json!({})),
            [
                "/: missing required property 'name'",
                "/: missing required property 'skills'",
                "/: missing required property 'score'"
            ]
        );
    }

    #[test]
    fn combinators_work() {
        let schema = json!({ "oneOf": [{ "type": "string" }, { "type": "integer" }], "not": { "const": 3 } });
        check_schema(&schema).unwrap();
        assert!(mismatches(&schema, &json!("x")).is_empty());
        assert_eq!(
            mismatches(&schema, &json!(3)),
            ["/: matches the schema under `not`"]
        );
        assert_eq!(
            mismatches(&schema, &json!(true)),
            ["/: matches 0 of `oneOf`; exactly one required"]
        );
    }

    #[test]
    fn unsupported_keywords_are_refused_up_front() {
        let err =
            check_schema(&json!({ "properties": { "id": { "type": "string", "pattern": "^a" } } }))
                .unwrap_err();
        assert!(
            err.starts_with("the schema keyword `pattern` (at /properties/id) is not supported"),
            "{err}"
        );
        assert!(check_schema(&json!({ "$ref": "#/$defs/x" })).is_err());
        assert!(check_schema(&json!({ "type": "text" })).is_err());
        assert!(check_schema(&json!({ "title": "ok", "format": "email" })).is_ok());
    }
}
