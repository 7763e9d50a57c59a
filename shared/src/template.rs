//! Templates (`{{ ... }}`) and expressions (`when:`, `condition:`) on minijinja.
//!
//! Undefined names are errors, never empty strings. Every render is bounded by
//! fuel, a recursion limit and an output cap, so a pathological template fails
//! fast instead of hanging the daemon. In shell scripts every interpolated value
//! is shell-quoted unless marked `| safe`.

use std::collections::BTreeSet;
use std::io;

use minijinja::value::{Serde, Value as JinjaValue};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde_json::Value;

/// Instructions a single render or evaluation may execute.
pub const FUEL: u64 = 200_000;
/// Nesting depth of templates and data a render may reach.
pub const RECURSION_LIMIT: usize = 64;
/// Largest output a render may produce.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

const SHELL: &str = "shell";

/// How interpolated values are written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As text.
    Text,
    /// Shell-quoted, so data cannot become code.
    Shell,
}

/// Why a template or expression could not be compiled or evaluated.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What went wrong, in words.
    pub message: String,
    /// The 1-based line within the template, when known.
    pub line: Option<usize>,
}

impl TemplateError {
    fn from_jinja(err: &Error) -> Self {
        let message = match (err.kind(), err.detail()) {
            (ErrorKind::OutOfFuel, _) => {
                "template is too expensive to evaluate (fuel limit reached)".to_owned()
            }
            (ErrorKind::UndefinedError, _) => {
                "undefined value (a name or attribute in the template does not exist)".to_owned()
            }
            (kind, Some(detail)) => format!("{kind}: {detail}"),
            (kind, None) => kind.to_string(),
        };
        Self {
            message,
            line: err.line(),
        }
    }

    fn too_large() -> Self {
        Self {
            message: format!("template output exceeds {} MiB", MAX_OUTPUT / (1024 * 1024)),
            line: None,
        }
    }
}

/// Data a template is rendered against (inputs, nodes, trigger, run, ...).
#[derive(Clone, Debug)]
pub struct Context(JinjaValue);

impl Context {
    /// A context from a JSON object.
    pub fn from_json(value: &Value) -> Self {
        Self(JinjaValue::from(Serde(value)))
    }

    /// A context from a JSON object with `key` set to `extra`, made without
    /// copying the object first (a run's context can hold a large trigger body).
    pub fn from_json_with(value: &Value, key: &str, extra: &Value) -> Self {
        Self(JinjaValue::from(Serde(With { value, key, extra })))
    }
}

/// Serializes `value` (an object) with `key` set to `extra`; see [`Context::from_json_with`].
struct With<'a> {
    value: &'a Value,
    key: &'a str,
    extra: &'a Value,
}

impl serde::Serialize for With<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(map) = self.value else {
            return self.value.serialize(s);
        };
        let mut m = s.serialize_map(Some(map.len() + 1))?;
        for (k, v) in map.iter().filter(|(k, _)| k.as_str() != self.key) {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry(self.key, self.extra)?;
        m.end()
    }
}

/// The configured template engine. Cheap to share; create once.
pub struct TemplateEngine {
    env: Environment<'static>,
    globals: BTreeSet<String>,
}

impl Default for TemplateEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TemplateEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateEngine").finish_non_exhaustive()
    }
}

impl TemplateEngine {
    /// An engine with strict undefined, bounded rendering and sluice's filters.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_auto_escape_callback(|name| {
            if name == SHELL {
                AutoEscape::Custom(SHELL.into())
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if *state.auto_escape() == AutoEscape::Custom(SHELL.into()) {
                if value.is_safe() {
                    return write!(out, "{value}").map_err(Error::from);
                }
                let text = if value.is_none() {
                    String::new()
                } else {
                    value.to_string()
                };
                let quoted = shell_quote(&text)?;
                out.write_str(&quoted).map_err(Error::from)
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        env.add_filter("truncate", truncate);
        // Already quoted: marked safe so shell mode does not quote it twice.
        env.add_filter("quote", |s: String| {
            shell_quote(&s).map(JinjaValue::from_safe_string)
        });
        // minijinja's own tojson marks its result safe (for HTML), which would let
        // JSON text through shell quoting unquoted; ours returns plain text.
        env.add_filter(
            "tojson",
            |v: JinjaValue, indent: Option<usize>| -> Result<String, Error> {
                let r = match indent {
                    Some(_) => serde_json::to_string_pretty(&v),
                    None => serde_json::to_string(&v),
                };
                r.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
            },
        );
        env.add_filter("fromjson", |s: String| -> Result<JinjaValue, Error> {
            serde_json::from_str::<Value>(&s)
                .map(|v| JinjaValue::from(Serde(v)))
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}")))
        });
        let globals = env.globals().map(|(name, _)| name.to_owned()).collect();
        Self { env, globals }
    }

    /// Renders a template string.
    pub fn render_str(
        &self,
        source: &str,
        ctx: &Context,
        escape: Escape,
    ) -> Result<String, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(source.to_owned());
        }
        let name = match escape {
            Escape::Text => "text",
            Escape::Shell => SHELL,
        };
        let tmpl = self
            .env
            .template_from_named_str(name, source)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        let mut out = LimitedWriter::default();
        match tmpl.render_captured_to(ctx.0.clone(), &mut out) {
            Ok(_) => String::from_utf8(out.buf).map_err(|_| TemplateError {
                message: "template produced invalid UTF-8".into(),
                line: None,
            }),
            Err(_) if out.overflowed => Err(TemplateError::too_large()),
            Err(e) => Err(TemplateError::from_jinja(&e)),
        }
    }

    /// Renders every string inside a JSON structure. A string that is a single
    /// `{{ expression }}` keeps the expression's type (a number stays a number,
    /// an object stays an object); other strings render to strings.
    pub fn render_json(&self, value: &Value, ctx: &Context) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => match whole_expression(s) {
                Some(expr) => self.eval(expr, ctx)?,
                None => Value::String(self.render_str(s, ctx, Escape::Text)?),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_json(v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(k.clone(), self.render_json(v, ctx)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Evaluates an expression to a JSON value.
    pub fn eval(&self, expr: &str, ctx: &Context) -> Result<Value, TemplateError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        let value = compiled
            .eval(ctx.0.clone())
            .map_err(|e| TemplateError::from_jinja(&e))?;
        if value.is_undefined() {
            return Err(undefined());
        }
        serde_json::to_value(&value).map_err(|e| TemplateError {
            message: format!("expression result is not data: {e}"),
            line: None,
        })
    }

    /// Evaluates a `when:`/`condition:` expression to true or false.
    pub fn eval_condition(&self, expr: &str, ctx: &Context) -> Result<bool, TemplateError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        let value = compiled
            .eval(ctx.0.clone())
            .map_err(|e| TemplateError::from_jinja(&e))?;
        if value.is_undefined() {
            return Err(undefined());
        }
        Ok(value.is_true())
    }

    /// Compiles a template and returns the variables it reads, as dotted paths
    /// (`inputs.topic`, `nodes.fetch.output.body`), without globals like `range`.
    pub fn template_refs(&self, source: &str) -> Result<BTreeSet<String>, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok(BTreeSet::new());
        }
        let tmpl = self
            .env
            .template_from_str(source)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        Ok(self.without_globals(tmpl.undeclared_variables(true)))
    }

    /// Compiles an expression and returns the variables it reads (see [`Self::template_refs`]).
    pub fn expression_refs(&self, expr: &str) -> Result<BTreeSet<String>, TemplateError> {
        if expr.contains("{{") {
            return Err(TemplateError {
                message: "expressions are written without {{ }}".into(),
                line: None,
            });
        }
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        Ok(self.without_globals(compiled.undeclared_variables(true)))
    }

    fn without_globals(&self, vars: std::collections::HashSet<String>) -> BTreeSet<String> {
        vars.into_iter()
            .filter(|v| {
                let root = v.split('.').next().unwrap_or(v);
                !self.globals.contains(root)
            })
            .collect()
    }
}

fn undefined() -> TemplateError {
    TemplateError {
        message: "undefined value (a name or attribute in the template does not exist)".into(),
        line: None,
    }
}

/// The inside of a string that is exactly one `{{ expression }}`.
pub fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

fn shell_quote(s: &str) -> Result<String, Error> {
    shlex::try_quote(s).map(|q| q.into_owned()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "cannot shell-quote a value containing a NUL byte",
        )
    })
}

fn truncate(s: String, length: Option<usize>, end: Option<String>) -> String {
    let length = length.unwrap_or(255);
    if s.chars().count() <= length {
        return s;
    }
    let end = end.unwrap_or_else(|| "...".to_owned());
    let keep = length.saturating_sub(end.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(&end);
    out
}

#[derive(Default)]
struct LimitedWriter {
    buf: Vec<u8>,
    overflowed: bool,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT {
            self.overflowed = true;
            return Err(io::Error::other("template output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context::from_json(&json!({
            "inputs": {"topic": "rust; rm -rf /", "n": 3},
            "nodes": {"fetch": {"output": {"status": 200, "body": {"items": [1, 2]}}}}
        }))
    }

    #[test]
    fn a_context_with_an_added_key_sees_both_and_the_added_key_wins() {
        let e = TemplateEngine::new();
        let base = json!({"inputs": {"n": 3}, "secrets": {"k": "stale"}});
        let ctx = Context::from_json_with(&base, "secrets", &json!({"k": "fresh"}));
        assert_eq!(
            e.render_str("{{ inputs.n }} {{ secrets.k }}", &ctx, Escape::Text)
                .unwrap(),
            "3 fresh"
        );
    }

    #[test]
    fn renders_text_and_fails_on_undefined() {
        let e = TemplateEngine::new();
        assert_eq!(
            e.render_str("n={{ inputs.n }}", &ctx(), Escape::Text)
                .unwrap(),
            "n=3"
        );
        let err = e
            .render_str("{{ inputs.nope }}", &ctx(), Escape::Text)
            .unwrap_err();
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn shell_mode_quotes_unless_safe() {
        let e = TemplateEngine::new();
        let out = e
            .render_str("echo {{ inputs.topic }}", &ctx(), Escape::Shell)
            .unwrap();
        assert_eq!(out, "echo 'rust; rm -rf /'");
        let out = e
            .render_str("echo {{ inputs.topic | safe }}", &ctx(), Escape::Shell)
            .unwrap();
        assert_eq!(out, "echo rust; rm -rf /");
        let out = e
            .render_str("echo {{ inputs.topic | tojson }}", &ctx(), Escape::Shell)
            .unwrap();
        assert_eq!(out, "echo '\"rust; rm -rf /\"'");
        let out = e
            .render_str("echo {{ inputs.topic | quote }}", &ctx(), Escape::Shell)
            .unwrap();
        assert_eq!(out, "echo 'rust; rm -rf /'");
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let e = TemplateEngine::new();
        let v = e
            .render_json(
                &json!({"items": "{{ nodes.fetch.output.body.items }}", "s": "x{{ inputs.n }}"}),
                &ctx(),
            )
            .unwrap();
        assert_eq!(v, json!({"items": [1, 2], "s": "x3"}));
    }

    #[test]
    fn conditions_are_booleans() {
        let e = TemplateEngine::new();
        assert!(
            e.eval_condition("nodes.fetch.output.status == 200", &ctx())
                .unwrap()
        );
        assert!(!e.eval_condition("inputs.n > 5", &ctx()).unwrap());
        assert!(e.eval_condition("inputs.missing == 1", &ctx()).is_err());
        assert!(e.eval_condition("inputs.missing", &ctx()).is_err());
        assert!(
            e.render_json(&json!("{{ inputs.missing }}"), &ctx())
                .is_err()
        );
    }

    #[test]
    fn pathological_templates_fail_fast() {
        let e = TemplateEngine::new();
        let err = e
            .render_str(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                &ctx(),
                Escape::Text,
            )
            .unwrap_err();
        assert!(
            err.message.contains("fuel") || err.message.contains("too large"),
            "{}",
            err.message
        );
        let err = e
            .render_str(
                "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
                &ctx(),
                Escape::Text,
            )
            .unwrap_err();
        assert!(!err.message.is_empty());
    }

    #[test]
    fn refs_are_dotted_paths_without_globals() {
        let e = TemplateEngine::new();
        let refs = e
            .template_refs("{% for i in range(2) %}{{ nodes.fetch.output.body }}{{ i }}{% endfor %}{{ inputs.topic }}")
            .unwrap();
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            vec![
                "inputs.topic".to_string(),
                "nodes.fetch.output.body".to_string()
            ]
        );
        assert!(e.template_refs("{{ unclosed").is_err());
    }

    #[test]
    fn useful_filters_exist() {
        let e = TemplateEngine::new();
        let out = e
            .render_str("{{ 'abcdefghij' | truncate(5) }} {{ nodes.fetch.output.body | tojson }} {{ inputs.x | default('d') }}", &ctx(), Escape::Text)
            .unwrap();
        assert_eq!(out, "ab... {\"items\":[1,2]} d");
    }
}
