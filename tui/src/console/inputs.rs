//! The trigger form's text and the inputs it sends: `who='you & me' n=3`,
//! split into words like a shell, each value read as the type its pipeline
//! declares (a string input stays text exactly as typed, an object input is
//! JSON, ...), and a pipeline's defaults written back as such text.

use serde_json::{Map, Value};
// Reading one value as its declared type is shared with `sluiced -i` and the CLI.
pub use sluice_shared::inputs::{DeclaredInput, declared, input_value};

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

/// [`form_inputs`] without declared types.
pub fn parse_inputs(text: &str) -> Result<Map<String, Value>, String> {
    form_inputs(text, None)
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

    /// The form's quoting comes off before the value is read as its declared
    /// type (the reading itself is `sluice_shared::inputs`', tested there).
    #[test]
    fn quoted_values_are_read_as_their_declared_type() {
        assert_eq!(one("string", "x=' 007 '"), Ok(json!(" 007 ")));
        assert_eq!(one("string", "x=42"), Ok(json!("42")));
        assert_eq!(one("number", "x='1e3'"), Ok(json!(1000.0)));
        assert_eq!(one("array", r#"x='["a b", 2]'"#), Ok(json!(["a b", 2])));
        assert!(
            one("number", "x=''")
                .unwrap_err()
                .starts_with("input 'x' must be a number")
        );
        assert!(
            one("integer", "x=\"4\"x")
                .unwrap_err()
                .starts_with("input 'x' must be an integer")
        );
        // A bare empty value is left out (the default applies), not refused.
        let number = declared(&json!({ "inputs": { "x": { "type": "number" } } })).unwrap();
        assert!(form_inputs("x=", Some(&number)).unwrap().is_empty());
        // A name the pipeline does not declare is refused with a hint.
        let def = json!({ "inputs": { "count": { "type": "integer" } } });
        let err = form_inputs("cuont=3", Some(&declared(&def).unwrap())).unwrap_err();
        assert_eq!(err, "unknown input 'cuont' (did you mean 'count'?)");
    }
}
