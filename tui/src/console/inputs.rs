//! The trigger form's text and the inputs it sends: `who='you & me' n=3`,
//! split into words like a shell, each value read as the type its pipeline
//! declares (a string input stays text exactly as typed, an object input is
//! JSON, ...), and a pipeline's defaults written back as such text.

use serde_json::{Map, Value};
use sluice_shared::model::InputType;

/// One input a pipeline declares, as the trigger form needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredInput {
    /// Its name.
    pub name: String,
    /// Its type; None for a type this console does not know (a newer daemon),
    /// whose values are read loosely (JSON where they parse, else text).
    pub ty: Option<InputType>,
    /// Its default, if any.
    pub default: Option<Value>,
}

/// The inputs a stored pipeline definition (`pipelines.get`) declares, in
/// order; None when the definition says nothing about its inputs.
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

/// The form's first text: `who=world n=3 cfg='{"a":1}'`, every declared input
/// with its default (empty without one), quoted so that [`form_inputs`] reads
/// each back as the same value.
pub fn form_text(inputs: &[DeclaredInput]) -> String {
    inputs
        .iter()
        .map(|i| {
            let value = match &i.default {
                Some(Value::String(s)) => quote_text(s),
                Some(other) => shell_word(&other.to_string()),
                None => String::new(),
            };
            format!("{}={value}", i.name)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`form_text`] for a stored pipeline definition.
pub fn default_inputs(definition: &Value) -> String {
    declared(definition)
        .map(|d| form_text(&d))
        .unwrap_or_default()
}

/// A word as [`split_words`] reads it back: bare when it can be, in single
/// quotes when it has spaces, quotes or backslashes, in double quotes when it
/// holds a single quote itself.
fn shell_word(s: &str) -> String {
    let special = |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '\\');
    if !s.is_empty() && !s.contains(special) {
        s.to_string()
    } else {
        quoted(s)
    }
}

fn quoted(s: &str) -> String {
    if !s.contains('\'') {
        format!("'{s}'")
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A text value: as [`shell_word`], but quoted too when it would read as
/// JSON bare (`'3'`, `'true'`), so that it looks like the text it is.
fn quote_text(s: &str) -> String {
    let reads_as_json = serde_json::from_str::<Value>(s).is_ok_and(|v| !v.is_string());
    if reads_as_json {
        quoted(s)
    } else {
        shell_word(s)
    }
}

/// One `name=value` of the form: the value unquoted, and whether any of it
/// was quoted or escaped.
#[derive(Clone, Debug, PartialEq)]
struct Word {
    text: String,
    quoted: bool,
}

/// Splits the form's text into words like a shell: `'...'` is literal,
/// `"..."` takes `\"` and `\\` escapes, a backslash outside quotes escapes
/// the next character.
fn split_words(text: &str) -> Result<Vec<Word>, String> {
    #[derive(PartialEq)]
    enum Q {
        None,
        Single,
        Double,
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut started = false;
    let mut q = Q::None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (&q, c) {
            (Q::Single, '\'') | (Q::Double, '"') => q = Q::None,
            (Q::Single, c) => cur.push(c),
            (Q::Double, '\\') => match chars.next() {
                Some(n @ ('"' | '\\')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            (Q::Double, c) => cur.push(c),
            (Q::None, '\'') => {
                q = Q::Single;
                quoted = true;
                started = true;
            }
            (Q::None, '"') => {
                q = Q::Double;
                quoted = true;
                started = true;
            }
            (Q::None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                quoted = true;
                started = true;
            }
            (Q::None, c) if c.is_whitespace() => {
                if started {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                }
                quoted = false;
                started = false;
            }
            (Q::None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    match q {
        Q::Single => return Err("unterminated ' quote".into()),
        Q::Double => return Err("unterminated \" quote".into()),
        Q::None => {}
    }
    if started {
        words.push(Word { text: cur, quoted });
    }
    Ok(words)
}

/// The inputs to send for the form's text. With the pipeline's declared
/// inputs (`declared`), each value is read as its input's type: a string
/// stays text exactly as typed, numbers, integers and booleans parse, objects
/// and arrays are JSON; a value that does not fit, or a name the pipeline
/// does not declare, is an error naming the input. Without them (the
/// definition was not available), bare values are JSON where they parse and
/// quoted ones stay text unless they are a JSON array or object. A bare
/// empty value (`name=`) is left out, so the input's default applies.
pub fn form_inputs(
    text: &str,
    declared: Option<&[DeclaredInput]>,
) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for Word { text: w, quoted } in split_words(text)? {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "'{w}' is not name=value (quote values with spaces: name='a b')"
            ));
        };
        if k.is_empty() {
            return Err(format!("'{w}' has no name before '='"));
        }
        if v.is_empty() && !quoted {
            continue;
        }
        map.insert(k.to_string(), input_value(k, v, quoted, declared)?);
    }
    Ok(map)
}

/// One input's value as the console's form and the CLI's `-i name=value`
/// both read it. With the pipeline's declared inputs (`declared`), `text` is
/// read as the input's type ([`typed`]), a name the pipeline does not declare
/// is refused with a did-you-mean hint, and an input of a type this console
/// does not know is read loosely. Without them (the definition was not
/// available) the value is read loosely: JSON where it parses, else text;
/// `quoted` (the form's `name='3'`) keeps it text unless it is a JSON array
/// or object. The error names the input, the type and the value.
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
        return Err(unknown_input(name, declared));
    };
    match input.ty {
        Some(ty) => typed(name, ty, text),
        None => Ok(loose(text, quoted)),
    }
}

/// [`form_inputs`] without declared types.
pub fn parse_inputs(text: &str) -> Result<Map<String, Value>, String> {
    form_inputs(text, None)
}

/// A value of an unknown type: JSON where a bare value parses, else text.
fn loose(v: &str, quoted: bool) -> Value {
    match serde_json::from_str::<Value>(v) {
        Ok(j) if !quoted || j.is_array() || j.is_object() => j,
        _ => Value::String(v.to_string()),
    }
}

fn unknown_input(name: &str, declared: &[DeclaredInput]) -> String {
    let names = declared.iter().map(|i| i.name.as_str());
    let hint = match sluice_shared::suggest::did_you_mean(name, names.clone()) {
        Some(h) => h,
        None if declared.is_empty() => "it declares no inputs".to_string(),
        None => format!("declared: {}", names.collect::<Vec<_>>().join(", ")),
    };
    format!("unknown input '{name}' ({hint})")
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_parse_with_quotes_and_json_values() {
        let m = parse_inputs(r#"who="two words" n=3 ok=true s=plain"#).unwrap();
        assert_eq!(m["who"], json!("two words"));
        assert_eq!(m["n"], json!(3));
        assert_eq!(m["ok"], json!(true));
        assert_eq!(m["s"], json!("plain"));
        assert!(parse_inputs("oops").is_err());
        assert!(parse_inputs("a=\"x").is_err());
    }

    #[test]
    fn defaults_fill_the_trigger_form() {
        let def = json!({ "inputs": { "who": { "type": "string", "default": "world" }, "n": { "type": "integer", "default": 3 }, "req": { "type": "number" } } });
        assert_eq!(default_inputs(&def), "who=world n=3 req=");
        assert_eq!(default_inputs(&json!({})), "");
    }

    #[test]
    fn inputs_take_single_and_double_quotes_like_a_shell() {
        let m = parse_inputs(r#"who='you & me' say="a \"b\" c" n=3 s='3' e='' x=a\ b"#).unwrap();
        assert_eq!(m["who"], json!("you & me"));
        assert_eq!(m["say"], json!("a \"b\" c"));
        assert_eq!(m["n"], json!(3));
        assert_eq!(m["s"], json!("3"), "quoted stays a string");
        assert_eq!(m["e"], json!(""));
        assert_eq!(m["x"], json!("a b"));
        // Inside single quotes nothing is special.
        let m = parse_inputs(r#"p='C:\dir "x"'"#).unwrap();
        assert_eq!(m["p"], json!(r#"C:\dir "x""#));
        assert!(parse_inputs("a='x").unwrap_err().contains("unterminated"));
        // Defaults round-trip through the form.
        let def = json!({ "inputs": {
            "a": { "default": "you & me" }, "b": { "default": "it's" },
            "c": { "default": "3" }, "d": { "default": "plain" } } });
        let text = default_inputs(&def);
        let m = parse_inputs(&text).unwrap();
        assert_eq!(
            (
                m["a"].clone(),
                m["b"].clone(),
                m["c"].clone(),
                m["d"].clone()
            ),
            (json!("you & me"), json!("it's"), json!("3"), json!("plain")),
            "{text}"
        );
    }

    /// Every default, of every type, comes back from the form as the same
    /// value, read with the declared types or without them.
    #[test]
    fn every_default_round_trips_as_its_own_type() {
        let def = json!({ "inputs": {
            "obj": { "type": "object", "default": { "a": 1, "b": [true, null], "s": "x y" } },
            "quote": { "type": "object", "default": { "it's": "say \"hi\" \\ ok" } },
            "empty": { "type": "object", "default": {} },
            "arr": { "type": "array", "default": ["x", 2, { "k": "v w" }] },
            "num": { "type": "number", "default": 2.5 },
            "int": { "type": "integer", "default": -7 },
            "flag": { "type": "boolean", "default": false },
            "text": { "type": "string", "default": "42" },
            "tru": { "type": "string", "default": "true" },
            "blank": { "type": "string", "default": "" },
        } });
        let declared = declared(&def).unwrap();
        let text = form_text(&declared);
        for typed in [true, false] {
            let m = form_inputs(&text, typed.then_some(&declared[..])).unwrap();
            for i in &declared {
                assert_eq!(
                    m.get(&i.name),
                    i.default.as_ref(),
                    "{} (typed: {typed}) from {text}",
                    i.name
                );
            }
        }
    }

    fn one(ty: &str, text: &str) -> Result<Value, String> {
        let def = json!({ "inputs": { "x": { "type": ty } } });
        let declared = declared(&def).unwrap();
        form_inputs(text, Some(&declared)).map(|m| m["x"].clone())
    }

    #[test]
    fn values_are_read_as_their_declared_type() {
        // A string stays text exactly as typed, however it looks.
        assert_eq!(one("string", "x=42"), Ok(json!("42")));
        assert_eq!(one("string", "x=true"), Ok(json!("true")));
        assert_eq!(one("string", "x=[1,2]"), Ok(json!("[1,2]")));
        assert_eq!(one("string", "x=' 007 '"), Ok(json!(" 007 ")));
        // No type is a string (the model's default).
        let declared = declared(&json!({ "inputs": { "x": {} } })).unwrap();
        assert_eq!(
            form_inputs("x=3", Some(&declared)).unwrap()["x"],
            json!("3")
        );
        assert_eq!(one("number", "x=2.5"), Ok(json!(2.5)));
        assert_eq!(one("number", "x=-3"), Ok(json!(-3)));
        assert_eq!(one("number", "x='1e3'"), Ok(json!(1000.0)));
        assert_eq!(one("integer", "x=42"), Ok(json!(42)));
        assert_eq!(one("integer", "x=4.0"), Ok(json!(4)));
        assert_eq!(one("boolean", "x=true"), Ok(json!(true)));
        assert_eq!(one("boolean", "x=false"), Ok(json!(false)));
        assert_eq!(one("object", r#"x='{"a":[1]}'"#), Ok(json!({"a": [1]})));
        assert_eq!(one("array", "x=[]"), Ok(json!([])));
        assert_eq!(one("array", r#"x='["a b", 2]'"#), Ok(json!(["a b", 2])));
        // A type this console does not know is read loosely.
        assert_eq!(one("enum", "x=3"), Ok(json!(3)));
        assert_eq!(one("enum", "x=abc"), Ok(json!("abc")));
    }

    #[test]
    fn a_value_that_does_not_fit_its_type_names_the_input_and_the_type() {
        for (ty, text, says) in [
            ("number", "x=abc", "input 'x' must be a number"),
            ("number", "x=''", "input 'x' must be a number"),
            ("number", "x=NaN", "input 'x' must be a number"),
            ("integer", "x=3.5", "input 'x' must be an integer"),
            ("integer", "x=1e300", "input 'x' must be an integer"),
            ("integer", "x=\"4\"x", "input 'x' must be an integer"),
            (
                "boolean",
                "x=yes",
                "input 'x' must be a boolean (true or false)",
            ),
            ("boolean", "x=1", "input 'x' must be a boolean"),
            ("object", "x=[1]", "input 'x' must be an object"),
            ("object", "x={a:1}", "input 'x' must be an object"),
            ("array", r#"x='{"a":1}'"#, "input 'x' must be an array"),
            ("array", "x=[1,", "input 'x' must be an array"),
        ] {
            let err = one(ty, text).expect_err(text);
            assert!(err.starts_with(says), "{text}: {err}");
        }
        // A bare empty value is left out (the default applies), not refused.
        let number = declared(&json!({ "inputs": { "x": { "type": "number" } } })).unwrap();
        assert!(form_inputs("x=", Some(&number)).unwrap().is_empty());
        // JSON that does not parse says where.
        assert!(
            one("object", "x={a:1}")
                .unwrap_err()
                .contains("line 1 column 2")
        );
        // Long values are cut in the message.
        let long = format!("x={}", "9".repeat(100));
        assert!(one("boolean", &long).unwrap_err().len() < 100);
    }

    #[test]
    fn a_name_the_pipeline_does_not_declare_is_refused_with_a_hint() {
        let def = json!({ "inputs": { "count": { "type": "integer" }, "who": {} } });
        let declared = declared(&def).unwrap();
        let err = form_inputs("cuont=3", Some(&declared)).unwrap_err();
        assert_eq!(err, "unknown input 'cuont' (did you mean 'count'?)");
        let err = form_inputs("zzz=3", Some(&declared)).unwrap_err();
        assert_eq!(err, "unknown input 'zzz' (declared: count, who)");
        let none = declared_none();
        let err = form_inputs("a=1", Some(&none)).unwrap_err();
        assert_eq!(err, "unknown input 'a' (it declares no inputs)");
    }

    /// One value as the CLI's `-i name=value` reads it (never quoted: the
    /// shell took the quotes).
    #[test]
    fn one_value_reads_as_the_form_does() {
        let def = json!({ "inputs": { "n": { "type": "integer" }, "who": {} } });
        let declared = declared(&def).unwrap();
        let d = Some(&declared[..]);
        assert_eq!(input_value("n", "5", false, d), Ok(json!(5)));
        assert_eq!(
            input_value("n", "abc", false, d),
            Err("input 'n' must be an integer (a whole number), not 'abc'".into())
        );
        assert_eq!(input_value("who", "5", false, d), Ok(json!("5")));
        assert_eq!(input_value("who", "", false, d), Ok(json!("")));
        assert!(
            input_value("nn", "5", false, d)
                .unwrap_err()
                .contains("did you mean 'n'")
        );
        // Without the definition: JSON where it parses, else text.
        assert_eq!(input_value("n", "5", false, None), Ok(json!(5)));
        assert_eq!(input_value("n", "abc", false, None), Ok(json!("abc")));
    }

    fn declared_none() -> Vec<DeclaredInput> {
        declared(&json!({ "inputs": {} })).unwrap()
    }
}
