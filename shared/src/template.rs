//! Templates (`{{ ... }}`) and expressions (`when:`, `condition:`) on minijinja.
//!
//! Undefined names are errors, never empty strings. Every render is bounded by
//! fuel, a recursion limit and an output cap, so a pathological template fails
//! fast instead of hanging the daemon.
//!
//! Shell scripts are rendered with [`TemplateEngine::render_shell`]: values never
//! become script text. Each `{{ value }}` turns into a reference to an environment
//! variable that carries the value, so the shell expands it without parsing it.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use minijinja::value::{Serde, Value as JinjaValue};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, UndefinedBehavior};
use serde_json::Value;

use crate::shell_script::QuotingMap;

/// Instructions a single render or evaluation may execute.
pub const FUEL: u64 = 200_000;
/// Nesting depth of templates and data a render may reach.
pub const RECURSION_LIMIT: usize = 64;
/// Compiled expressions kept per engine; the cache starts over when full, so
/// edits and reloads cannot grow it without bound.
const CACHED_EXPRESSIONS: usize = 4096;
/// Largest output a render may produce.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

mod view;

pub use view::Layer;

const SHELL: &str = "shell";

/// Prefix of the environment variables that carry values into shell scripts
/// (`SLUICE_T_0`, `SLUICE_T_1`, ...); reserved, so a node's own `env` cannot use it.
pub const SHELL_VALUE_PREFIX: &str = "SLUICE_T_";

// Unicode noncharacters: never meaningful in a script, so they can delimit the
// placeholder a value leaves in the text until the quoting around it is known.
const OPEN: char = '\u{FDD0}';
const CLOSE: char = '\u{FDD1}';

/// How interpolated values are written out by [`TemplateEngine::render_str`].
/// (Shell scripts have their own entry point, [`TemplateEngine::render_shell`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// As text.
    Text,
}

/// A shell script rendered with its values kept out of the text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShellScript {
    /// The script, with `"${SLUICE_T_<n>}"` (or `${SLUICE_T_<n>}` inside
    /// double quotes and heredocs) where each value goes.
    pub script: String,
    /// The variables the script references, to pass in the shell's environment.
    pub env: Vec<(String, String)>,
}

/// Values collected while a shell script renders (a render-local extension).
#[derive(Default)]
struct ShellValues {
    values: Vec<String>,
    index: HashMap<String, usize>,
    bytes: usize,
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
/// The JSON is shared, not converted: templates read it through a view.
#[derive(Clone, Debug)]
pub struct Context(JinjaValue);

impl Context {
    /// A context from a JSON object.
    pub fn from_json(value: &Value) -> Self {
        Self::layered(Arc::new(value.clone()), Vec::new())
    }

    /// A context over `value` (an object) with `key` set to `extra`, made
    /// without copying either (a run's context can hold a large trigger body).
    pub fn shared_with(value: Arc<Value>, key: &str, extra: Arc<Value>) -> Self {
        Self::layered(value, vec![Layer::new(key, extra)])
    }

    /// A context over `value` (an object) with `layers` set over its keys,
    /// made without copying any of them.
    pub fn layered(value: Arc<Value>, layers: Vec<Layer>) -> Self {
        Self(view::JsonView::root(value, layers))
    }

    /// The context as plain JSON, its layers merged in, without the one at
    /// `key` (the secrets, for what plugins receive).
    pub fn to_json_without(&self, key: &str) -> Value {
        match self.0.downcast_object_ref::<view::JsonView>() {
            Some(view) => view.to_json_without(key),
            None => serde_json::to_value(&self.0).unwrap_or(Value::Null),
        }
    }

    /// The scalar a plain dotted path (`trigger.body.after`) names, read
    /// straight from the JSON; `None` when `expr` is anything else or does not
    /// name a scalar (see `JsonView::scalar_at`).
    fn scalar_path(&self, expr: &str) -> Option<Value> {
        let expr = expr.trim();
        // At least two steps: a lone name could be a literal (`true`, `none`).
        if !expr.contains('.') {
            return None;
        }
        let mut path = [""; 16];
        let mut n = 0;
        let first = expr.split('.').next().unwrap_or_default();
        // minijinja reads these as literals, not names.
        if ["true", "false", "none", "True", "False", "None"].contains(&first) {
            return None;
        }
        for step in expr.split('.') {
            let mut chars = step.chars();
            let ident = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident || n == path.len() {
                return None;
            }
            path[n] = step;
            n += 1;
        }
        self.0
            .downcast_object_ref::<view::JsonView>()?
            .scalar_at(&path[..n])
    }
}

/// A compiled expression that lives as long as the process's environment.
type Compiled = Arc<Expression<'static, 'static>>;

/// The configured template engine. Cheap to share; create once.
pub struct TemplateEngine {
    env: &'static Environment<'static>,
    globals: BTreeSet<String>,
    /// Expressions by source: compiling one cost more than evaluating it
    /// (a third of a transform node's work at webhook intake).
    expressions: Mutex<HashMap<Box<str>, Compiled>>,
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

/// The one environment. Its configuration never varies, and a compiled
/// expression borrows the environment it came from, so a `'static` one is
/// what lets compiled expressions be kept.
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(configured)
}

/// An environment with strict undefined, bounded rendering and sluice's filters.
fn configured() -> Environment<'static> {
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
        if *state.auto_escape() != AutoEscape::Custom(SHELL.into()) {
            return minijinja::escape_formatter(out, state, value);
        }
        let text = if value.is_none() {
            String::new()
        } else {
            value.to_string()
        };
        if text.contains('\0') {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "a value contains a NUL byte, which cannot be passed to a shell",
            ));
        }
        if value.is_safe() {
            // `| safe` opts out: the text is script. So are blocks and macro
            // calls rendered here, which carry their values' placeholders.
            return out.write_str(&text).map_err(Error::from);
        }
        let values = state.get_or_insert_extension_with(ShellValues::default);
        let n = match values.index.get(&text) {
            Some(&n) => n,
            None => {
                values.bytes += text.len();
                if values.bytes > MAX_OUTPUT {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!(
                            "the script's values exceed {} MiB",
                            MAX_OUTPUT / (1024 * 1024)
                        ),
                    ));
                }
                let n = values.values.len();
                values.values.push(text.clone());
                values.index.insert(text, n);
                n
            }
        };
        write!(out, "{OPEN}{n}{CLOSE}").map_err(Error::from)
    });
    env.add_filter("truncate", truncate);
    // Quoted text for a shell that parses it again (`ssh host ...`, `sh -c`);
    // in `run:` it is still passed as a value, quotes and all.
    env.add_filter("quote", |s: String| shell_quote(&s));
    // minijinja's own tojson marks its result safe (for HTML), which would
    // write JSON text into shell scripts as code; ours returns plain text.
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
    env
}

impl TemplateEngine {
    /// An engine with strict undefined, bounded rendering and sluice's filters.
    pub fn new() -> Self {
        let env = environment();
        let globals = env.globals().map(|(name, _)| name.to_owned()).collect();
        Self {
            env,
            globals,
            expressions: Mutex::new(HashMap::new()),
        }
    }

    /// `expr` compiled, from the cache when it was compiled before.
    fn compiled(&self, expr: &str) -> Result<Compiled, TemplateError> {
        let cache = || {
            self.expressions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(c) = cache().get(expr) {
            return Ok(Arc::clone(c));
        }
        let compiled = Arc::new(
            self.env
                .compile_expression_owned(expr.to_owned())
                .map_err(|e| TemplateError::from_jinja(&e))?,
        );
        let mut cached = cache();
        if cached.len() >= CACHED_EXPRESSIONS {
            cached.clear();
        }
        cached.insert(expr.into(), Arc::clone(&compiled));
        Ok(compiled)
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

    /// Renders a shell script so that no value becomes script text: each
    /// `{{ value }}` turns into a reference to an environment variable holding
    /// it, quoted to suit where it stands (see [`crate::shell_script`]). A value
    /// where no reference can expand (single quotes, `$'…'`, a quoted heredoc,
    /// after a backslash, arithmetic) is an error. `| safe` text is written as is.
    pub fn render_shell(&self, source: &str, ctx: &Context) -> Result<ShellScript, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(ShellScript {
                script: source.to_owned(),
                env: Vec::new(),
            });
        }
        if let Some(c) = source.chars().find(|&c| c == OPEN || c == CLOSE) {
            return Err(TemplateError {
                message: format!(
                    "the script contains U+{:04X}, a character sluice reserves for its own use",
                    u32::from(c)
                ),
                line: None,
            });
        }
        let tmpl = self
            .env
            .template_from_named_str(SHELL, source)
            .map_err(|e| TemplateError::from_jinja(&e))?;
        let mut out = LimitedWriter::default();
        let values = match tmpl.render_captured_to(ctx.0.clone(), &mut out) {
            Ok(captured) => captured
                .state()
                .get_extension::<ShellValues>()
                .map(|v| v.values.clone())
                .unwrap_or_default(),
            Err(_) if out.overflowed => return Err(TemplateError::too_large()),
            Err(e) => return Err(TemplateError::from_jinja(&e)),
        };
        let text = String::from_utf8(out.buf).map_err(|_| TemplateError {
            message: "template produced invalid UTF-8".into(),
            line: None,
        })?;
        substitute(&text, &values)
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
        // Most values in pipelines are plain paths to a scalar: read directly,
        // they cost a tenth of an evaluation (which converts every step).
        if let Some(v) = ctx.scalar_path(expr) {
            return Ok(v);
        }
        self.eval_full(expr, ctx)
    }

    /// [`Self::eval`] through minijinja, always.
    fn eval_full(&self, expr: &str, ctx: &Context) -> Result<Value, TemplateError> {
        let compiled = self.compiled(expr)?;
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
        let compiled = self.compiled(expr)?;
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

/// Replaces each value placeholder in a rendered script by a reference to the
/// variable that will carry the value, as the quoting at that spot requires.
fn substitute(text: &str, values: &[String]) -> Result<ShellScript, TemplateError> {
    let map = QuotingMap::new(text);
    let mut script = String::with_capacity(text.len());
    let mut used = BTreeSet::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(OPEN) {
        let digits_at = start + OPEN.len_utf8();
        let index = rest[digits_at..].find(CLOSE).and_then(|len| {
            let digits = &rest[digits_at..digits_at + len];
            let n = digits
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| digits.parse::<usize>().ok())
                .flatten()
                .filter(|&n| n < values.len())?;
            Some((n, digits_at + len + CLOSE.len_utf8()))
        });
        let Some((n, end)) = index else {
            return Err(mangled());
        };
        let pos = offset + start;
        let name = format!("{SHELL_VALUE_PREFIX}{n}");
        let quoting = map.at(pos);
        let Some(reference) = quoting.reference(&name) else {
            let line = text[..pos].matches('\n').count() + 1;
            return Err(TemplateError {
                message: format!(
                    "a template value would land {} (line {line} of the rendered script)",
                    quoting.describe()
                ),
                line: None,
            });
        };
        script.push_str(&rest[..start]);
        script.push_str(&reference);
        used.insert(n);
        offset += end;
        rest = &rest[end..];
    }
    if rest.contains(CLOSE) {
        return Err(mangled());
    }
    script.push_str(rest);
    let env = used
        .into_iter()
        .map(|n| (format!("{SHELL_VALUE_PREFIX}{n}"), values[n].clone()))
        .collect();
    Ok(ShellScript { script, env })
}

/// A placeholder was cut or altered by a filter applied to rendered script text.
fn mangled() -> TemplateError {
    TemplateError {
        message: "a filter cut or changed the text of a rendered value (e.g. truncate on a \
                  block that contains one); apply filters to values, not to script text"
            .into(),
        line: None,
    }
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
    fn a_cached_expression_is_evaluated_afresh_against_each_context() {
        let e = TemplateEngine::new();
        let a = Context::from_json(&json!({ "inputs": { "n": 1 } }));
        let b = Context::from_json(&json!({ "inputs": { "n": 2 } }));
        for _ in 0..3 {
            assert_eq!(e.eval("inputs.n * 10", &a).unwrap(), json!(10));
            assert_eq!(e.eval("inputs.n * 10", &b).unwrap(), json!(20));
            assert!(e.eval_condition("inputs.n > 1", &b).unwrap());
            assert!(!e.eval_condition("inputs.n > 1", &a).unwrap());
        }
        // A failed compile is reported every time, not cached as a success.
        for _ in 0..2 {
            assert!(e.eval("inputs.n +", &a).is_err());
        }
        // Past the bound the cache starts over rather than growing.
        for i in 0..CACHED_EXPRESSIONS + 10 {
            assert_eq!(
                e.eval(&format!("{i} + inputs.n"), &a).unwrap(),
                json!(i + 1)
            );
        }
        let held = e.expressions.lock().unwrap().len();
        assert!(held <= CACHED_EXPRESSIONS, "{held} expressions held");
        // Strict undefined and fuel still apply to cached expressions.
        assert!(e.eval("inputs.missing", &a).is_err());
        assert!(e.eval("inputs.missing", &a).is_err());
    }

    #[test]
    fn a_context_with_an_added_key_sees_both_and_the_added_key_wins() {
        let e = TemplateEngine::new();
        let base = json!({"inputs": {"n": 3}, "secrets": {"k": "stale"}});
        let ctx = Context::shared_with(Arc::new(base), "secrets", Arc::new(json!({"k": "fresh"})));
        assert_eq!(
            e.render_str("{{ inputs.n }} {{ secrets.k }}", &ctx, Escape::Text)
                .unwrap(),
            "3 fresh"
        );
        assert_eq!(
            e.render_str(
                "{{ secrets | tojson }} {{ secrets | length }}",
                &ctx,
                Escape::Text
            )
            .unwrap(),
            r#"{"k":"fresh"} 1"#,
            "the added key replaces the object's own"
        );
        let top = Context::shared_with(
            Arc::new(json!({"a": 1})),
            "secrets",
            Arc::new(json!({"k": 2})),
        );
        assert_eq!(
            e.eval("[a, secrets.k]", &top).unwrap(),
            json!([1, 2]),
            "an added key that the object lacks is there too"
        );
    }

    /// Templates read a context through a view over its JSON; whatever they
    /// do with it must come out as it did when the JSON was converted whole.
    #[test]
    fn a_plain_path_reads_what_a_full_evaluation_reads() {
        let e = TemplateEngine::new();
        let data = json!({
            "inputs": {"topic": "a \"b\" $(c) {{ x }}", "n": 3, "neg": -7, "big": 18446744073709551615u64,
                       "f": 2.5, "whole": 2.0, "t": true, "none": null, "empty": {}, "list": [1]},
            "nodes": {"fetch": {"output": {"body": {"m": "\u{0}nul \u{202e}rtl 🦀", "deep": {"er": {"est": 1}}}}}},
            "trigger": {"body": {"repository": {"full_name": "acme/web"}}, "kind": "webhook"}
        });
        let secrets = Arc::new(json!({ "token": "s3cret", "trigger": "shadow" }));
        let ctx = Context::shared_with(Arc::new(data), "secrets", secrets);
        let exprs = [
            // Read directly: scalars at plain paths.
            "inputs.topic",
            " inputs.n ",
            "inputs.neg",
            "inputs.big",
            "inputs.f",
            "inputs.whole",
            "inputs.t",
            "inputs.none",
            "nodes.fetch.output.body.m",
            "nodes.fetch.output.body.deep.er.est",
            "trigger.body.repository.full_name",
            "trigger.kind",
            "secrets.token",
            // Evaluated in full: containers, misses, steps that are not keys, other syntax.
            "inputs.empty",
            "inputs.list",
            "nodes.fetch.output.body",
            "inputs.missing",
            "inputs.topic.nope",
            "inputs.list.0",
            "missing.x",
            "secrets.nope",
            "inputs.n + 1",
            "inputs['n']",
            "inputs.n|string",
            "true",
            "none",
            "inputs",
            "inputs.",
            ".inputs",
            "inputs..n",
            "inputs.1n",
            "inputs.n.real",
            "range.x",
        ];
        for x in exprs {
            assert_eq!(
                e.eval(x, &ctx).map_err(|err| err.message),
                e.eval_full(x, &ctx).map_err(|err| err.message),
                "{x}"
            );
        }
        assert_eq!(
            ctx.scalar_path("inputs.topic"),
            Some(json!("a \"b\" $(c) {{ x }}"))
        );
        // Names minijinja reads as literals, and layers over layers.
        let odd = Context::layered(
            Arc::new(json!({ "true": { "x": 1 }, "none": { "x": 2 }, "a": { "b": { "c": 1 } } })),
            vec![Layer {
                key: "a".into(),
                value: Arc::new(json!({ "b": { "c": 1 }, "s": 5 })),
                over: vec![
                    Layer {
                        key: "b".into(),
                        value: Arc::new(json!({ "c": 1 })),
                        over: vec![Layer::new("c", Arc::new(json!(2)))],
                    },
                    Layer {
                        key: "n".into(),
                        value: Arc::new(Value::Null),
                        over: vec![Layer::new("k", Arc::new(json!("kv")))],
                    },
                ],
            }],
        );
        for x in [
            "true.x", "none.x", "True.x", "a.b.c", "a.b", "a.s", "a.n.k", "a.n", "a.n.z", "a.z",
        ] {
            assert_eq!(
                e.eval(x, &odd).map_err(|err| err.message),
                e.eval_full(x, &odd).map_err(|err| err.message),
                "{x}"
            );
        }
        assert_eq!(odd.scalar_path("a.b.c"), Some(json!(2)));
        assert_eq!(odd.scalar_path("true.x"), None);
        assert_eq!(ctx.scalar_path("secrets.token"), Some(json!("s3cret")));
        assert_eq!(ctx.scalar_path("inputs.list"), None);
        assert_eq!(ctx.scalar_path("inputs.missing"), None);
        assert_eq!(ctx.scalar_path("inputs.n + 1"), None);
    }

    #[test]
    fn layers_read_like_the_merged_data() {
        let e = TemplateEngine::new();
        let root = json!({ "inputs": { "n": 1 }, "run": { "id": 7 } });
        for details in [
            json!({ "body": { "x": [1, { "y": "z" }] }, "kind": "forged", "request_id": "r" }),
            Value::Null,
        ] {
            let layered = Context::layered(
                Arc::new(root.clone()),
                vec![
                    Layer {
                        key: "trigger".into(),
                        value: Arc::new(details.clone()),
                        over: vec![
                            Layer::new("kind", Arc::new(json!("webhook"))),
                            Layer::new("user", Arc::new(json!("alice"))),
                        ],
                    },
                    Layer::new("secrets", Arc::new(json!({ "k": "v" }))),
                ],
            );
            let mut trigger = details.as_object().cloned().unwrap_or_default();
            trigger.insert("kind".into(), json!("webhook"));
            trigger.insert("user".into(), json!("alice"));
            let mut merged = root.clone();
            merged["trigger"] = Value::Object(trigger);
            let plain = merged.clone();
            merged["secrets"] = json!({ "k": "v" });
            let converted = Context(JinjaValue::from(Serde(&merged)));
            for t in [
                "{{ trigger | tojson }}",
                "{% for k in trigger %}{{ k }},{% endfor %}",
                "{{ trigger | length }} {{ 'kind' in trigger }} {{ 'body' in trigger }}",
                "{{ trigger.kind }} {{ trigger.user }} {{ trigger.request_id | default('-') }}",
                "{{ trigger.body.x[1].y | default('-') }} {{ secrets.k }} {{ inputs.n }}",
                "{% for k in this %}{{ k }};{% endfor %}",
                "{{ trigger | dictsort }} {{ secrets | tojson }}",
            ] {
                assert_eq!(
                    e.render_str(t, &layered, Escape::Text)
                        .map_err(|x| x.message),
                    e.render_str(t, &converted, Escape::Text)
                        .map_err(|x| x.message),
                    "{t} over {details}"
                );
            }
            for x in [
                "trigger.kind",
                "trigger.user",
                "trigger.body.x",
                "secrets.k",
                "trigger.missing",
            ] {
                assert_eq!(
                    e.eval(x, &layered).map_err(|x| x.message),
                    e.eval(x, &converted).map_err(|x| x.message),
                    "{x} over {details}"
                );
            }
            assert_eq!(layered.to_json_without("secrets"), plain);
        }
    }

    #[test]
    fn a_view_renders_like_converted_data() {
        let e = TemplateEngine::new();
        let data = json!({
            "inputs": {"topic": "a \"b\" $(c)", "n": 3, "neg": -7, "big": 18446744073709551615u64,
                       "f": 2.5, "t": true, "none": null, "empty": {}, "list": []},
            "nodes": {"fetch": {"output": {"status": 200, "body": {"items": [1, {"x": "y"}, [2, 3]],
                                             "z": 1, "a": 2, "m": "\u{0}nul \u{202e}rtl 🦀"}}}},
            "trigger": {"body": {"repository": {"full_name": "acme/web"}, "after": "9f1c"}}
        });
        let converted = Context(JinjaValue::from(Serde(&data)));
        let viewed = Context::from_json(&data);
        let templates = [
            "{{ inputs.topic }} {{ inputs['n'] + 1 }} {{ inputs.neg }} {{ inputs.big }} {{ inputs.f }}",
            "{{ inputs.t }} {{ inputs.none }} {{ inputs.empty }} {{ inputs.list }} {{ inputs | length }}",
            "{{ nodes.fetch.output.body.items[1].x }} {{ nodes.fetch.output.body.items[-1][0] }}",
            "{{ nodes.fetch.output.body | tojson }}",
            "{{ nodes.fetch.output }}",
            "{% for k, v in nodes.fetch.output.body | items %}{{ k }}={{ v }};{% endfor %}",
            "{% for k in inputs %}{{ k }},{% endfor %}",
            "{% for i in nodes.fetch.output.body.items %}[{{ i }}]{% endfor %}",
            "{{ nodes.fetch.output.body | dictsort }} {{ inputs.list | length }} {{ inputs.empty | length }}",
            "{{ 'status' in nodes.fetch.output }} {{ 'nope' in nodes.fetch.output }} {{ 2 in nodes.fetch.output.body.items }}",
            "{{ inputs is mapping }} {{ nodes.fetch.output.body.items is sequence }} {{ inputs.empty is true }}",
            "{% if inputs.empty %}full{% else %}empty{% endif %} {% if inputs.list %}l{% else %}nl{% endif %}",
            "{{ nodes.fetch.output.body.items[1] == {'x': 'y'} }} {{ inputs.list == [] }}",
            "{{ nodes.fetch.output.body.items | first }} {{ nodes.fetch.output.body.items | last }}",
            "{{ trigger.body.repository.full_name | upper }} {{ trigger.body.missing | default('d') }}",
            "{{ nodes.fetch.output.body.items[1:] }} {{ nodes.fetch.output.body.items | reverse | list }}",
            "{% for k, v in inputs.items() %}{{ k }}:{{ v }},{% endfor %}",
            "{{ inputs.keys() | list }} {{ inputs.values() | list | length }} {{ inputs.get('n') }}",
            "{{ nodes.fetch.output.body.items.count(1) }} {{ nodes.fetch.output.body.items.index(1) }}",
            "{{ inputs | map('upper') | join(',') }} {{ nodes.fetch.output.body.items | select('number') | list }}",
            "{{ nodes.fetch.output.body | dictsort(reverse=true) | first }} {{ inputs | sort | first }}",
            "{{ nodes.fetch.output.body.items | unique | list | length }} {{ [inputs.n, 1] | max }}",
        ];
        for t in templates {
            assert_eq!(
                e.render_str(t, &viewed, Escape::Text)
                    .map_err(|x| x.message),
                e.render_str(t, &converted, Escape::Text)
                    .map_err(|x| x.message),
                "{t}"
            );
        }
        for x in [
            "nodes.fetch.output.body",
            "nodes.fetch.output.body.items",
            "inputs",
            "inputs.big",
            "nodes",
            "nodes.fetch.output.body.items[7]",
            "inputs.missing",
            "inputs.topic.nope",
        ] {
            assert_eq!(
                e.eval(x, &viewed).map_err(|x| x.message),
                e.eval(x, &converted).map_err(|x| x.message),
                "{x}"
            );
        }
        assert_eq!(
            e.render_shell(
                "echo {{ inputs.topic }} {{ nodes.fetch.output.body.m }}",
                &viewed
            )
            .map_err(|x| x.message),
            e.render_shell(
                "echo {{ inputs.topic }} {{ nodes.fetch.output.body.m }}",
                &converted
            )
            .map_err(|x| x.message),
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

    fn shell(source: &str) -> Result<ShellScript, TemplateError> {
        TemplateEngine::new().render_shell(source, &ctx())
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn shell_values_become_variable_references_quoted_for_their_place() {
        let out = shell(
            "echo {{ inputs.topic }} \"n={{ inputs.n }}\"\ncat <<EOF\n{{ inputs.topic }}\nEOF",
        )
        .unwrap();
        assert_eq!(
            out.script,
            "echo \"${SLUICE_T_0}\" \"n=${SLUICE_T_1}\"\ncat <<EOF\n${SLUICE_T_0}\nEOF"
        );
        assert_eq!(
            out.env,
            vars(&[("SLUICE_T_0", "rust; rm -rf /"), ("SLUICE_T_1", "3")])
        );
    }

    #[test]
    fn shell_scripts_without_templates_are_untouched() {
        let out = shell("echo '{ not a template }' $HOME").unwrap();
        assert_eq!(out.script, "echo '{ not a template }' $HOME");
        assert!(out.env.is_empty());
    }

    #[test]
    fn safe_is_script_text_and_quote_is_data() {
        let out = shell("echo {{ inputs.topic | safe }}").unwrap();
        assert_eq!(out.script, "echo rust; rm -rf /");
        assert!(out.env.is_empty());
        let out = shell("ssh host ls {{ inputs.topic | quote }} {{ none }}").unwrap();
        assert_eq!(
            out.script,
            "ssh host ls \"${SLUICE_T_0}\" \"${SLUICE_T_1}\""
        );
        assert_eq!(
            out.env,
            vars(&[("SLUICE_T_0", "'rust; rm -rf /'"), ("SLUICE_T_1", "")])
        );
        let out = shell("echo {{ inputs.topic | tojson }}").unwrap();
        assert_eq!(out.env, vars(&[("SLUICE_T_0", "\"rust; rm -rf /\"")]));
    }

    #[test]
    fn values_in_blocks_and_macros_still_become_references() {
        let out = shell(
            "{% macro say(x) %}echo {{ x }}{% endmacro %}{{ say(inputs.topic) }}\n{% for i in [1, 2] %}echo {{ i }}\n{% endfor %}",
        )
        .unwrap();
        assert_eq!(
            out.script,
            "echo \"${SLUICE_T_0}\"\necho \"${SLUICE_T_1}\"\necho \"${SLUICE_T_2}\"\n"
        );
        assert_eq!(out.env.len(), 3);
    }

    #[test]
    fn values_where_the_shell_cannot_expand_them_are_errors() {
        for (script, place) in [
            ("echo '{{ inputs.n }}'", "single quotes"),
            ("echo $'{{ inputs.n }}'", "$'"),
            ("cat <<'EOF'\n{{ inputs.n }}\nEOF", "quoted delimiter"),
            ("echo \\{{ inputs.n }}", "backslash"),
            ("echo $(( {{ inputs.n }} + 1 ))", "arithmetic"),
            ("echo $[ {{ inputs.n }} + 1 ]", "arithmetic"),
            ("echo \"${arr[ {{ inputs.n }} ]}\"", "arithmetic"),
            ("echo \"${s:{{ inputs.n }}}\"", "arithmetic"),
            ("arr[{{ inputs.n }}]=1", "arithmetic"),
            ("let \"n = {{ inputs.n }}\"", "arithmetic"),
            ("[[ \"{{ inputs.n }}\" -eq 1 ]]", "arithmetic"),
            // Logic can hide the quotes from validation; the render still sees them.
            (
                "echo {% if true %}'{% endif %}{{ inputs.n }}'",
                "single quotes",
            ),
        ] {
            let err = shell(script).unwrap_err();
            assert!(err.message.contains(place), "{script}: {}", err.message);
            let line = format!("line {} of", script.lines().count().min(2));
            assert!(err.message.contains(&line), "{script}: {}", err.message);
        }
    }

    #[test]
    fn hostile_text_around_values_is_refused_not_misread() {
        let err = shell("echo \u{FDD0}0\u{FDD1} {{ inputs.n }}").unwrap_err();
        assert!(err.message.contains("U+FDD0"), "{}", err.message);
        let err =
            shell("{% set b %}{{ inputs.topic }}{% endset %}echo {{ b | truncate(2, '') | safe }}")
                .unwrap_err();
        assert!(err.message.contains("cut or changed"), "{}", err.message);
        let nul = Context::from_json(&json!({ "inputs": { "v": "a\u{0}b" } }));
        let err = TemplateEngine::new()
            .render_shell("echo {{ inputs.v }}", &nul)
            .unwrap_err();
        assert!(err.message.contains("NUL"), "{}", err.message);
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
