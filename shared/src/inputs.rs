//! A run's inputs, in one place for every caller: reading `name=value` text as
//! the type each input declares (`sluice trigger -i`, the console's trigger
//! form, `sluiced run-once -i`), and checking given values
//! against the declarations, defaults filled (the engine when a run is
//! created; validation of a cron trigger's inputs and a template's params).
//!
//! Declared types win: a string input takes the text exactly as typed
//! (`-i version=2.0` stays `"2.0"`), numbers, integers and booleans parse,
//! objects and arrays are JSON. Only a value whose type is not known (no
//! definition at hand, or a type newer than this build) is read loosely: JSON
//! where it parses, else text.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::model::{InputSpec, InputType};
use crate::suggest;

/// One input a pipeline declares, as a reader of `name=value` text needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredInput {
    /// Its name.
    pub name: String,
    /// Its type; None for a type this build does not know (a newer daemon),
    /// whose values are read loosely (JSON where they parse, else text).
    pub ty: Option<InputType>,
    /// Its default, if any.
    pub default: Option<Value>,
}

impl DeclaredInput {
    /// The inputs of a loaded pipeline, in declaration order.
    pub fn from_specs(specs: &IndexMap<String, InputSpec>) -> Vec<Self> {
        specs
            .iter()
            .map(|(name, spec)| Self {
                name: name.clone(),
                ty: Some(spec.ty),
                default: spec.default.clone(),
            })
            .collect()
    }
}

/// The inputs a stored pipeline definition (JSON, as `pipelines.get` returns
/// it) declares, in order; None when the definition says nothing about them.
pub fn declared(definition: &Value) -> Option<Vec<DeclaredInput>> {
    let inputs = definition.get("inputs")?.as_object()?;
    Some(
        inputs
            .iter()
            .map(|(name, spec)| {
                let ty = match spec.get("type") {
                    // The model's default type.
                    None | Some(Value::Null) => Some(InputType::default()),
                    Some(t) => serde_json::from_value::<InputType>(t.clone()).ok(),
                };
                DeclaredInput {
                    name: name.clone(),
                    ty,
                    default: spec.get("default").filter(|d| !d.is_null()).cloned(),
                }
            })
            .collect(),
    )
}

/// `name=value` (a command line's `-i`) split at its first `=`, or why it is
/// not one.
pub fn split_assignment(pair: &str) -> Result<(&str, &str), String> {
    let (name, value) = pair
        .split_once('=')
        .ok_or_else(|| format!("--input '{pair}': expected NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("--input '{pair}': no name before '='"));
    }
    Ok((name, value))
}

/// `-i name=value` pairs as inputs, each value read with [`input_value`]
/// (never quoted: the shell took the quotes).
pub fn from_assignments(
    pairs: &[String],
    declared: Option<&[DeclaredInput]>,
) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for pair in pairs {
        let (name, text) = split_assignment(pair)?;
        map.insert(name.to_owned(), input_value(name, text, false, declared)?);
    }
    Ok(map)
}

/// One input's value from its text. With the pipeline's declared inputs
/// (`declared`), `text` is read as the input's type ([`typed`]), a name the
/// pipeline does not declare is refused with a did-you-mean hint, and an
/// input of a type this build does not know is read loosely. Without them (the
/// definition was not available) the value is read loosely: JSON where it
/// parses, else text; `quoted` (the console form's `name='3'`) keeps it text
/// unless it is a JSON array or object. The error names the input, the type
/// and the value.
pub fn input_value(
    name: &str,
    text: &str,
    quoted: bool,
    declared: Option<&[DeclaredInput]>,
) -> Result<Value, String> {
    let Some(declared) = declared else {
        return Ok(loose(text, quoted));
    };
    let Some(input) = declared.iter().find(|i| i.name == name) else {
        let names = declared.iter().map(|i| i.name.as_str());
        return Err(format!(
            "unknown input '{name}' ({})",
            unknown_hint(name, names, "input")
        ));
    };
    match input.ty {
        Some(ty) => typed(name, ty, text),
        None => Ok(loose(text, quoted)),
    }
}

/// A value of an unknown type: JSON where a bare value parses, else text.
fn loose(v: &str, quoted: bool) -> Value {
    match serde_json::from_str::<Value>(v) {
        Ok(j) if !quoted || j.is_array() || j.is_object() => j,
        _ => Value::String(v.to_string()),
    }
}

/// `text` read as an input of type `ty`, or why it cannot be.
pub fn typed(name: &str, ty: InputType, text: &str) -> Result<Value, String> {
    let json = || serde_json::from_str::<Value>(text);
    let value = match ty {
        InputType::String => return Ok(Value::String(text.to_string())),
        InputType::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        InputType::Number => json().ok().filter(Value::is_number),
        InputType::Integer => json().ok().and_then(integral),
        InputType::Object | InputType::Array => match json() {
            Ok(v) => Some(v).filter(|v| ty.accepts(v)),
            Err(e) => {
                return Err(format!("{}, not {}: {e}", expected(name, ty), shown(text)));
            }
        },
    };
    value.ok_or_else(|| format!("{}, not {}", expected(name, ty), shown(text)))
}

/// A whole number as an integer (`3`, `3.0`, `1e3`), or None.
fn integral(v: Value) -> Option<Value> {
    if v.is_i64() || v.is_u64() {
        return Some(v);
    }
    let f = v.as_f64()?;
    // Beyond 2^53 an f64 no longer holds every whole number exactly.
    (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then(|| Value::from(f as i64))
}

/// "input 'n' must be an integer (a whole number)".
fn expected(name: &str, ty: InputType) -> String {
    let example = match ty {
        InputType::String => "",
        InputType::Number => " (like 3 or 2.5)",
        InputType::Integer => " (a whole number)",
        InputType::Boolean => " (true or false)",
        InputType::Object => r#" (JSON like {"a": 1})"#,
        InputType::Array => " (JSON like [1, 2])",
    };
    format!("input '{name}' must be {}{example}", ty.with_article())
}

/// The value in a message, cut short when long.
fn shown(text: &str) -> String {
    const MAX: usize = 24;
    if text.chars().count() > MAX {
        let head: String = text.chars().take(MAX - 1).collect();
        format!("'{head}…'")
    } else {
        format!("'{text}'")
    }
}

/// What to say about a name nobody declared: the closest declared name, or
/// the declared names, or that there are none.
fn unknown_hint<'a>(
    name: &str,
    declared: impl Iterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    if let Some(h) = suggest::did_you_mean(name, declared.clone()) {
        return h;
    }
    let names: Vec<&str> = declared.collect();
    if names.is_empty() {
        format!("no {what}s are declared")
    } else {
        format!("declared: {}", names.join(", "))
    }
}

/// What is wrong with one given value, or with one that is missing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", self.display())]
pub struct Problem {
    /// The input (or param) concerned.
    pub name: String,
    /// What is wrong.
    pub kind: ProblemKind,
    /// "input" or "param", for messages.
    pub what: &'static str,
}

/// The ways a given value can fail its declaration.
#[derive(Clone, Debug, PartialEq)]
pub enum ProblemKind {
    /// Nothing of that name is declared; the hint names the closest or all.
    Unknown {
        /// "did you mean 'x'?", "declared: a, b" or "no inputs are declared".
        hint: String,
    },
    /// The value is not of the declared type.
    WrongType(InputType),
    /// The value is not one of the declared choices.
    NotAChoice,
    /// A required input (one without a default) was not given.
    Missing,
}

impl Problem {
    /// The message without its hint: "input 'n' must be an integer".
    pub fn message(&self) -> String {
        let (what, name) = (self.what, &self.name);
        match &self.kind {
            ProblemKind::Unknown { .. } => format!("unknown {what} '{name}'"),
            ProblemKind::WrongType(ty) => format!("{what} '{name}' must be {}", ty.with_article()),
            ProblemKind::NotAChoice => format!("{what} '{name}' is not one of its choices"),
            ProblemKind::Missing => format!("required {what} '{name}' is missing"),
        }
    }

    /// The hint for an unknown name, if this is one.
    pub fn hint(&self) -> Option<&str> {
        match &self.kind {
            ProblemKind::Unknown { hint } => Some(hint),
            _ => None,
        }
    }

    /// The message with its hint in parentheses, as triggers answer it.
    fn display(&self) -> String {
        match self.hint() {
            Some(h) => format!("{} ({h})", self.message()),
            None => self.message(),
        }
    }
}

/// Every problem of `values` against `specs`: names nobody declared, values
/// of the wrong type or outside their choices (in the order given), then
/// required ones missing (in declaration order). `what` is "input" or "param".
pub fn check<'a>(
    specs: &IndexMap<String, InputSpec>,
    values: impl IntoIterator<Item = (&'a String, &'a Value)>,
    what: &'static str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut given = std::collections::BTreeSet::new();
    let problem = |name: &str, kind| Problem {
        name: name.to_owned(),
        kind,
        what,
    };
    for (name, value) in values {
        given.insert(name.as_str());
        let kind = match specs.get(name) {
            None => Some(ProblemKind::Unknown {
                hint: unknown_hint(name, specs.keys().map(String::as_str), what),
            }),
            Some(spec) if !spec.ty.accepts(value) => Some(ProblemKind::WrongType(spec.ty)),
            Some(spec) if !spec.choices.is_empty() && !spec.choices.contains(value) => {
                Some(ProblemKind::NotAChoice)
            }
            Some(_) => None,
        };
        problems.extend(kind.map(|k| problem(name, k)));
    }
    for (name, spec) in specs {
        if spec.is_required() && !given.contains(name.as_str()) {
            problems.push(problem(name, ProblemKind::Missing));
        }
    }
    problems
}

/// The inputs a run starts with: `given` checked against `specs`, every
/// declared input without a value set to its default. The first problem
/// (in [`check`]'s order) refuses the run.
pub fn resolve(
    specs: &IndexMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Problem> {
    if let Some(first) = check(specs, given, "input").into_iter().next() {
        return Err(first);
    }
    let mut out = given.clone();
    for (name, spec) in specs {
        if !out.contains_key(name)
            && let Some(d) = &spec.default
        {
            out.insert(name.clone(), d.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs(v: Value) -> IndexMap<String, InputSpec> {
        serde_json::from_value(v).expect("specs")
    }

    fn declared_of(ty: &str) -> Vec<DeclaredInput> {
        declared(&json!({ "inputs": { "x": { "type": ty } } })).expect("declared")
    }

    #[test]
    fn values_are_read_as_their_declared_type() {
        let one = |ty: &str, text: &str| input_value("x", text, false, Some(&declared_of(ty)));
        // A string stays text exactly as typed, however it looks.
        assert_eq!(one("string", "42"), Ok(json!("42")));
        assert_eq!(one("string", "true"), Ok(json!("true")));
        assert_eq!(one("string", "[1,2]"), Ok(json!("[1,2]")));
        assert_eq!(one("string", r#""q""#), Ok(json!(r#""q""#)));
        // No type is a string (the model's default).
        let untyped = declared(&json!({ "inputs": { "x": {} } })).expect("declared");
        assert_eq!(input_value("x", "3", false, Some(&untyped)), Ok(json!("3")));
        assert_eq!(one("number", "2.5"), Ok(json!(2.5)));
        assert_eq!(one("number", "-3"), Ok(json!(-3)));
        assert_eq!(one("number", "1e3"), Ok(json!(1000.0)));
        assert_eq!(one("integer", "42"), Ok(json!(42)));
        assert_eq!(one("integer", "4.0"), Ok(json!(4)));
        assert_eq!(one("boolean", "true"), Ok(json!(true)));
        assert_eq!(one("boolean", "false"), Ok(json!(false)));
        assert_eq!(one("object", r#"{"a":[1]}"#), Ok(json!({"a": [1]})));
        assert_eq!(one("array", "[]"), Ok(json!([])));
        // A type this build does not know is read loosely.
        assert_eq!(one("enum", "3"), Ok(json!(3)));
        assert_eq!(one("enum", "abc"), Ok(json!("abc")));
    }

    #[test]
    fn a_value_that_does_not_fit_its_type_names_the_input_and_the_type() {
        for (ty, text, says) in [
            ("number", "abc", "input 'x' must be a number"),
            ("number", "", "input 'x' must be a number"),
            ("number", "NaN", "input 'x' must be a number"),
            ("integer", "3.5", "input 'x' must be an integer"),
            ("integer", "1e300", "input 'x' must be an integer"),
            (
                "boolean",
                "yes",
                "input 'x' must be a boolean (true or false)",
            ),
            ("boolean", "1", "input 'x' must be a boolean"),
            ("object", "[1]", "input 'x' must be an object"),
            ("object", "{a:1}", "input 'x' must be an object"),
            ("array", r#"{"a":1}"#, "input 'x' must be an array"),
            ("array", "[1,", "input 'x' must be an array"),
        ] {
            let err = input_value("x", text, false, Some(&declared_of(ty))).expect_err(text);
            assert!(err.starts_with(says), "{text}: {err}");
        }
        // JSON that does not parse says where.
        let err = typed("x", InputType::Object, "{a:1}").expect_err("not JSON");
        assert!(err.contains("line 1 column 2"), "{err}");
        // Long values are cut in the message.
        let long = "9".repeat(100);
        assert!(
            typed("x", InputType::Boolean, &long)
                .expect_err("long")
                .len()
                < 100
        );
    }

    #[test]
    fn without_declarations_values_are_json_where_they_parse() {
        assert_eq!(input_value("n", "5", false, None), Ok(json!(5)));
        assert_eq!(input_value("n", "abc", false, None), Ok(json!("abc")));
        // The console form's quoted '3' stays text, a quoted JSON list does not.
        assert_eq!(input_value("n", "3", true, None), Ok(json!("3")));
        assert_eq!(input_value("n", "[1]", true, None), Ok(json!([1])));
    }

    #[test]
    fn assignments_split_at_the_first_equals_sign() {
        assert_eq!(split_assignment("a=b=c"), Ok(("a", "b=c")));
        assert_eq!(split_assignment("a="), Ok(("a", "")));
        assert!(
            split_assignment("ab")
                .expect_err("no =")
                .contains("NAME=VALUE")
        );
        assert!(
            split_assignment("=b")
                .expect_err("no name")
                .contains("no name")
        );
        let declared = DeclaredInput::from_specs(&specs(json!({
            "n": { "type": "integer" }, "who": {}
        })));
        let m = from_assignments(&["n=5".into(), "who=5".into()], Some(&declared)).expect("typed");
        assert_eq!(Value::Object(m), json!({ "n": 5, "who": "5" }));
        let err = from_assignments(&["nn=5".into()], Some(&declared)).expect_err("unknown");
        assert_eq!(err, "unknown input 'nn' (did you mean 'n'?)");
    }

    #[test]
    fn unknown_names_get_the_closest_or_every_declared_name() {
        let declared = DeclaredInput::from_specs(&specs(json!({ "count": {}, "who": {} })));
        let err = |n: &str, d: &[DeclaredInput]| input_value(n, "3", false, Some(d)).expect_err(n);
        assert_eq!(
            err("cuont", &declared),
            "unknown input 'cuont' (did you mean 'count'?)"
        );
        assert_eq!(
            err("zzz", &declared),
            "unknown input 'zzz' (declared: count, who)"
        );
        assert_eq!(err("a", &[]), "unknown input 'a' (no inputs are declared)");
    }

    #[test]
    fn resolution_checks_every_value_and_fills_defaults() {
        let s = specs(json!({
            "n": { "type": "integer" },
            "mode": { "default": "fast", "choices": ["fast", "slow"] },
        }));
        let ok = resolve(&s, json!({ "n": 3 }).as_object().expect("map")).expect("valid");
        assert_eq!(Value::Object(ok), json!({ "n": 3, "mode": "fast" }));
        let err = |given: Value| {
            resolve(&s, given.as_object().expect("map"))
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(err(json!({})), "required input 'n' is missing");
        assert_eq!(err(json!({ "n": "3" })), "input 'n' must be an integer");
        assert_eq!(
            err(json!({ "n": 1, "mode": "warp" })),
            "input 'mode' is not one of its choices"
        );
        assert_eq!(
            err(json!({ "m": 1, "n": 1 })),
            "unknown input 'm' (did you mean 'n'?)"
        );
        // check reports all of them, values first, missing ones last.
        let given = json!({ "zz": 1, "mode": "warp" });
        let kinds: Vec<String> = check(&s, given.as_object().expect("map"), "param")
            .iter()
            .map(Problem::message)
            .collect();
        assert_eq!(
            kinds,
            [
                "unknown param 'zz'",
                "param 'mode' is not one of its choices",
                "required param 'n' is missing"
            ]
        );
    }
}
