//! A small JSON Schema checker for `llm` replies.
//!
//! Why not a full validator: the maintained crates (jsonschema, boon) bring
//! regex engines, URI and IDN handling, and remote `$ref` resolution — minutes
//! of build on our 2-core machines for schemas that, for model replies, are
//! nearly always a few typed properties. This covers that common subset
//! (draft 2020-12 semantics) and refuses any other keyword up front, so a
//! schema is never checked only in part without anyone knowing.

use std::collections::HashSet;

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

/// What [`mismatches`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatches {
    /// The first [`MAX_REPORTED`], each as "<JSON pointer>: <what is wrong>".
    pub listed: Vec<String>,
    /// How many more there are.
    pub more: usize,
}

impl Mismatches {
    /// Whether the value matches.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.more == 0
    }
}

/// Where a walk puts what it finds: the first `limit` messages, a count of
/// the rest; a probe (limit 0) stops the walk at the first.
struct Found {
    listed: Vec<String>,
    more: usize,
    limit: usize,
}

impl Found {
    fn new(limit: usize) -> Self {
        Self {
            listed: Vec::new(),
            more: 0,
            limit,
        }
    }

    /// Records a mismatch at `place`; the message is only made when it is kept.
    fn add(&mut self, place: &str, message: impl FnOnce() -> String) {
        if self.listed.len() < self.limit {
            self.listed.push(format!("{place}: {}", message()));
        } else {
            self.more += 1;
        }
    }

    /// Whether a probe has its answer (nothing more is worth walking).
    fn settled(&self) -> bool {
        self.limit == 0 && self.more > 0
    }
}

/// The places where `value` does not match `schema` (a schema that passed
/// [`check_schema`]); empty when it matches.
pub fn mismatches(schema: &Value, value: &Value) -> Mismatches {
    let mut out = Found::new(MAX_REPORTED);
    walk(schema, value, "", &mut out);
    Mismatches {
        listed: out.listed,
        more: out.more,
    }
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

fn walk(schema: &Value, value: &Value, at: &str, out: &mut Found) {
    if out.settled() {
        return;
    }
    let place = if at.is_empty() { "/" } else { at };
    let map = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => {
            out.add(place, || "no value is allowed here".into());
            return;
        }
        Value::Object(map) => map,
        _ => return,
    };

    if let Some(ty) = map.get("type") {
        let names: Vec<&str> = match ty {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !names.iter().any(|n| has_type(value, n)) {
            out.add(place, || {
                format!("expected {}, got {}", names.join(" or "), type_name(value))
            });
            // Other keywords would only repeat the mismatch.
            return;
        }
    }
    if let Some(Value::Array(choices)) = map.get("enum")
        && !choices.iter().any(|c| json_eq(c, value))
    {
        out.add(place, || {
            format!(
                "{} is not one of {}",
                short(value),
                Value::Array(choices.clone())
            )
        });
    }
    if let Some(expected) = map.get("const")
        && !json_eq(expected, value)
    {
        out.add(place, || {
            format!("expected {expected}, got {}", short(value))
        });
    }
    match value {
        Value::Object(obj) => walk_object(map, obj, at, place, out),
        Value::Array(items) => walk_array(map, items, at, place, out),
        Value::String(text) => check_string(map, text, place, out),
        Value::Number(n) => check_number(map, n, place, out),
        _ => {}
    }
    if out.settled() {
        return;
    }
    if let Some(Value::Array(all)) = map.get("allOf") {
        for sub in all {
            walk(sub, value, at, out);
        }
    }
    if let Some(Value::Array(any)) = map.get("anyOf")
        && !any.iter().any(|sub| matches_at(sub, value, at))
    {
        out.add(place, || "matches none of `anyOf`".into());
    }
    if let Some(Value::Array(one)) = map.get("oneOf") {
        let matching = one.iter().filter(|sub| matches_at(sub, value, at)).count();
        if matching != 1 {
            out.add(place, || {
                format!("matches {matching} of `oneOf`; exactly one required")
            });
        }
    }
    if let Some(not) = map.get("not")
        && matches_at(not, value, at)
    {
        out.add(place, || "matches the schema under `not`".into());
    }
}

/// Object keywords: required, property counts, properties and additionalProperties.
fn walk_object(
    map: &serde_json::Map<String, Value>,
    obj: &serde_json::Map<String, Value>,
    at: &str,
    place: &str,
    out: &mut Found,
) {
    let props = map.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = map.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(name) {
                out.add(place, || format!("missing required property '{name}'"));
            }
        }
    }
    let count = obj.len() as u64;
    if let Some(min) = map.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        out.add(place, || {
            format!("has {count} properties; at least {min} required")
        });
    }
    if let Some(max) = map.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        out.add(place, || {
            format!("has {count} properties; at most {max} allowed")
        });
    }
    for (name, item) in obj {
        if out.settled() {
            return;
        }
        let sub_at = format!("{at}/{}", pointer_escape(name));
        match props.and_then(|p| p.get(name)) {
            Some(sub) => walk(sub, item, &sub_at, out),
            None => {
                if let Some(extra) = map.get("additionalProperties") {
                    if extra == &Value::Bool(false) {
                        out.add(place, || format!("unexpected property '{name}'"));
                    } else {
                        walk(extra, item, &sub_at, out);
                    }
                }
            }
        }
    }
}

/// Array keywords: item counts, uniqueItems and items.
fn walk_array(
    map: &serde_json::Map<String, Value>,
    items: &[Value],
    at: &str,
    place: &str,
    out: &mut Found,
) {
    let count = items.len() as u64;
    if let Some(min) = map.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        out.add(place, || {
            format!("has {count} items; at least {min} required")
        });
    }
    if let Some(max) = map.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        out.add(place, || {
            format!("has {count} items; at most {max} allowed")
        });
    }
    if map.get("uniqueItems") == Some(&Value::Bool(true)) {
        let mut seen = HashSet::with_capacity(items.len());
        let repeated = items.iter().any(|item| {
            let mut key = String::new();
            canonical(item, &mut key);
            !seen.insert(key)
        });
        if repeated {
            out.add(place, || "items are not unique".into());
        }
    }
    if let Some(sub) = map.get("items") {
        for (i, item) in items.iter().enumerate() {
            if out.settled() {
                return;
            }
            walk(sub, item, &format!("{at}/{i}"), out);
        }
    }
}

/// String keywords: minLength and maxLength (in characters).
fn check_string(map: &serde_json::Map<String, Value>, text: &str, place: &str, out: &mut Found) {
    let chars = text.chars().count() as u64;
    if let Some(min) = map.get("minLength").and_then(Value::as_u64)
        && chars < min
    {
        out.add(place, || {
            format!("is {chars} characters long; at least {min} required")
        });
    }
    if let Some(max) = map.get("maxLength").and_then(Value::as_u64)
        && chars > max
    {
        out.add(place, || {
            format!("is {chars} characters long; at most {max} allowed")
        });
    }
}

/// Number keywords: the bounds and multipleOf.
fn check_number(
    map: &serde_json::Map<String, Value>,
    n: &serde_json::Number,
    place: &str,
    out: &mut Found,
) {
    let x = n.as_f64().unwrap_or(f64::NAN);
    let bound = |k: &str| map.get(k).and_then(Value::as_f64);
    if let Some(min) = bound("minimum")
        && x < min
    {
        out.add(place, || format!("{n} is less than the minimum {min}"));
    }
    if let Some(max) = bound("maximum")
        && x > max
    {
        out.add(place, || format!("{n} is more than the maximum {max}"));
    }
    if let Some(min) = bound("exclusiveMinimum")
        && x <= min
    {
        out.add(place, || format!("{n} must be more than {min}"));
    }
    if let Some(max) = bound("exclusiveMaximum")
        && x >= max
    {
        out.add(place, || format!("{n} must be less than {max}"));
    }
    if let Some(step) = bound("multipleOf")
        && step > 0.0
    {
        let q = x / step;
        if (q - q.round()).abs() > 1e-9 {
            out.add(place, || format!("{n} is not a multiple of {step}"));
        }
    }
}

/// Whether `value` matches `schema` (the walk stops at the first mismatch).
fn matches_at(schema: &Value, value: &Value, at: &str) -> bool {
    let mut probe = Found::new(0);
    walk(schema, value, at, &mut probe);
    probe.more == 0
}

/// Writes `value` so that values equal under [`json_eq`] (and only they)
/// read the same: object keys sorted, numbers as their `f64`.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            // -0.0 == 0.0, as json_eq has it.
            let x = if x == 0.0 { 0.0 } else { x };
            out.push_str(&format!("{x:?}"));
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(item, out);
            }
            out.push('}');
        }
        // Strings, booleans and null: their JSON text.
        other => out.push_str(&other.to_string()),
    }
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
        assert_eq!(mismatches(&schema, &value), Mismatches::default());
        assert!(mismatches(&schema, &json!({"name": "A", "skills": [], "score": 7.0})).is_empty());
    }

    #[test]
    fn mismatches_name_the_place() {
        let value = json!({ "name": "", "skills": ["a", 2, "c", "d"], "score": 11, "level": "cto", "x": 1 });
        let reported = mismatches(&resume_schema(), &value);
        assert_eq!((reported.listed.len(), reported.more), (MAX_REPORTED, 1));
        let mut got = every_mismatch(&resume_schema(), &value);
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
            mismatches(&resume_schema(), &json!([1])).listed,
            ["/: expected object, got array"]
        );
        assert_eq!(
            mismatches(&resume_schema(), &json!({})).listed,
            [
                "/: missing required property 'name'",
                "/: missing required property 'skills'",
                "/: missing required property 'score'"
            ]
        );
    }

    fn every_mismatch(schema: &Value, value: &Value) -> Vec<String> {
        let mut out = Found::new(usize::MAX);
        walk(schema, value, "", &mut out);
        out.listed
    }

    #[test]
    fn many_mismatches_are_counted_not_kept() {
        let schema = json!({ "type": "array", "items": { "type": "string" } });
        let value = Value::Array((0..100_000).map(Value::from).collect());
        let found = mismatches(&schema, &value);
        assert_eq!(found.listed.len(), MAX_REPORTED);
        assert_eq!(found.listed[0], "/0: expected string, got integer");
        assert_eq!(found.more, 100_000 - MAX_REPORTED);
        assert!(!found.is_empty());
    }

    #[test]
    fn unique_items_compare_as_json_values() {
        let schema = json!({ "uniqueItems": true });
        let repeated = ["/: items are not unique"];
        for dup in [
            json!([{ "a": 1, "b": [1, { "c": null }] }, { "b": [1.0, { "c": null }], "a": 1 }]),
            json!([1, 2, 1.0]),
            json!([0, -0.0]),
            json!(["x", [true], ["x"], [true]]),
        ] {
            assert_eq!(mismatches(&schema, &dup).listed, repeated, "{dup}");
        }
        for distinct in [
            json!([1, "1", [1], { "1": 1 }, true, null, 1.5]),
            json!([{ "a": 1 }, { "a": 1, "b": 1 }, { "a": "1" }]),
            json!(["a,b", ["a", "b"], "[\"a\",\"b\"]"]),
        ] {
            assert!(mismatches(&schema, &distinct).is_empty(), "{distinct}");
        }
        // Many items are checked in linear time, not by comparing every pair.
        let many = Value::Array((0..30_000).map(|i| json!({ "id": i })).collect());
        let started = std::time::Instant::now();
        assert!(mismatches(&schema, &many).is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn combinators_work() {
        let schema = json!({ "oneOf": [{ "type": "string" }, { "type": "integer" }], "not": { "const": 3 } });
        check_schema(&schema).unwrap();
        assert!(mismatches(&schema, &json!("x")).is_empty());
        assert_eq!(
            mismatches(&schema, &json!(3)).listed,
            ["/: matches the schema under `not`"]
        );
        assert_eq!(
            mismatches(&schema, &json!(true)).listed,
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
