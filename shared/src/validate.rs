//! Semantic checks of a pipeline: ids, needs, cycles, kinds, templates,
//! expressions, cron, time zones, inputs and webhook secrets. Every problem is
//! reported, each located in the source with a hint where one helps.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::cron;
use crate::diagnostic::Diagnostic;
use crate::document::{DocPath, Document};
use crate::graph::Graph;
use crate::inputs::{self, ProblemKind};
use crate::model::node::{BUILTIN_KINDS, FieldError};
use crate::model::trigger::{MisfirePolicy, WebhookAuth};
use crate::model::{InputSpec, Node, NodeKind, Pipeline, Trigger};
use crate::shell_script::{Quoting, QuotingMap};
use crate::suggest;
use crate::template::{SHELL_VALUE_PREFIX, TemplateEngine};

/// What validation needs to know beyond the file itself.
#[derive(Clone, Debug, Default)]
pub struct ValidateOptions {
    /// Kinds provided by exec plugins (`sluice-node-<kind>` in the plugins directory).
    pub plugin_kinds: BTreeSet<String>,
    /// The plugins directory searched, named in "unknown kind" errors.
    pub plugin_dir: Option<PathBuf>,
}

impl ValidateOptions {
    /// Options with the plugin kinds found in `dir` (a missing directory has none).
    pub fn with_plugin_dir(dir: &Path) -> Self {
        let mut plugin_kinds = BTreeSet::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if let Some(kind) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("sluice-node-"))
                {
                    plugin_kinds.insert(kind.to_owned());
                }
            }
        }
        Self {
            plugin_kinds,
            plugin_dir: Some(dir.to_owned()),
        }
    }
}

/// Names templates may read at the top level.
pub const CONTEXT_ROOTS: &[&str] = &[
    "inputs", "nodes", "trigger", "run", "pipeline", "secrets", "params",
];
const RUN_FIELDS: &[&str] = &["id", "user", "started_at", "retry_of"];
const PIPELINE_FIELDS: &[&str] = &["name", "version", "description"];
const TRIGGER_FIELDS: &[&str] = &[
    "kind",
    "body",
    "headers",
    "scheduled_at",
    "cron",
    "user",
    "request_id",
    "source",
    "inputs",
];

/// Which `params` templates may read.
#[derive(Clone, Copy, Debug)]
pub enum Params<'a> {
    /// An ordinary pipeline: no params.
    None,
    /// A template: the declared params.
    Declared(&'a IndexMap<String, InputSpec>),
}

/// Collects located diagnostics for one file.
pub struct Checker<'a> {
    doc: &'a Document,
    file: &'a Path,
    /// What was found so far.
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    /// A checker for `file`, locating paths in `doc`.
    pub fn new(doc: &'a Document, file: &'a Path) -> Self {
        Self {
            doc,
            file,
            diagnostics: Vec::new(),
        }
    }

    /// Records an error at `path` (pointing at its key when `at_key`).
    pub fn error(&mut self, path: &DocPath, at_key: bool, message: String, hint: Option<String>) {
        let d = Diagnostic::error(path, message).with_hint(hint);
        self.push(d, path, at_key);
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: &DocPath, at_key: bool, message: String, hint: Option<String>) {
        let d = Diagnostic::warning(path, message).with_hint(hint);
        self.push(d, path, at_key);
    }

    /// Records a field error found below `base`.
    pub fn field_error(&mut self, base: &DocPath, e: FieldError) {
        self.error(&base.join(&e.path), e.at_key, e.message, e.hint);
    }

    /// Records a diagnostic made elsewhere, locating it in this file.
    pub fn push(&mut self, mut d: Diagnostic, path: &DocPath, at_key: bool) {
        let pos = if at_key {
            self.doc.key_pos(path)
        } else {
            self.doc.value_pos(path)
        };
        d.file = self.file.to_owned();
        self.diagnostics.push(d.at(pos));
    }
}

fn nodes_path(i: usize) -> DocPath {
    DocPath::root().key("nodes").index(i)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` can be a pipeline or secret name (used in URLs and file names).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with('.')
}

/// A node's id and needs as written, read even when the rest of the node is invalid,
/// so that graph problems are found in every node.
#[derive(Clone, Debug)]
pub struct RawNode {
    /// Index in the file's `nodes` list.
    pub index: usize,
    /// The id, when it is a string.
    pub id: Option<String>,
    /// The string entries of `needs`.
    pub needs: Vec<String>,
}

impl RawNode {
    /// Reads id and needs from a node's document value.
    pub fn from_value(index: usize, value: &Value) -> Self {
        Self {
            index,
            id: value.get("id").and_then(Value::as_str).map(str::to_owned),
            needs: value
                .get("needs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Checks a pipeline's nodes: ids, needs, cycles, kinds, per-kind rules, templates.
/// `raw` has every node's id and needs as written; `nodes` the nodes that parsed,
/// each with its index in the file.
pub fn check_nodes(
    c: &mut Checker<'_>,
    raw: &[RawNode],
    nodes: &[(usize, Node)],
    inputs: &IndexMap<String, InputSpec>,
    params: Params<'_>,
    engine: &TemplateEngine,
) {
    // Ids: valid and unique.
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for r in raw {
        let Some(id) = &r.id else { continue };
        let path = nodes_path(r.index).key("id");
        if !is_identifier(id) {
            let mut fixed: String = id
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
                .collect();
            if !fixed.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                fixed.insert(0, '_');
            }
            c.error(
                &path,
                false,
                format!("invalid node id '{id}': ids are used in templates as nodes.<id>"),
                Some(format!(
                    "use letters, digits and _ (not starting with a digit), e.g. '{fixed}'"
                )),
            );
        }
        if let Some(&first) = first_seen.get(id.as_str()) {
            let line = c
                .doc
                .value_pos(&nodes_path(first).key("id"))
                .map_or(String::new(), |p| {
                    format!(" (first defined on line {})", p.line)
                });
            c.error(
                &path,
                false,
                format!("duplicate node id '{id}'{line}"),
                Some("node ids must be unique within a pipeline".into()),
            );
        } else {
            first_seen.insert(id, r.index);
        }
    }
    let known: BTreeSet<&str> = raw.iter().filter_map(|r| r.id.as_deref()).collect();

    // Needs: known nodes.
    for r in raw {
        for (j, need) in r.needs.iter().enumerate() {
            if !known.contains(need.as_str()) {
                let candidates = known
                    .iter()
                    .copied()
                    .filter(|k| Some(*k) != r.id.as_deref());
                c.error(
                    &nodes_path(r.index).key("needs").index(j),
                    false,
                    format!("unknown node '{need}' in needs"),
                    suggest::did_you_mean(need, candidates),
                );
            }
        }
    }

    // Cycles.
    let graph = Graph::new(raw.iter().map(|r| {
        (
            r.id.as_deref().unwrap_or(""),
            r.needs.iter().map(String::as_str),
        )
    }));
    let acyclic = match graph.find_cycle() {
        Some(cycle) => {
            let first = cycle.first().cloned().unwrap_or_default();
            let at = raw
                .iter()
                .find(|r| r.id.as_deref() == Some(first.as_str()))
                .map_or(DocPath::root(), |r| nodes_path(r.index).key("needs"));
            c.error(
                &at,
                true,
                format!("cycle in needs: {}", cycle.join(" -> ")),
                Some("remove one of these dependencies; nodes must form a DAG".into()),
            );
            false
        }
        None => true,
    };
    let upstream = if acyclic {
        Some(graph.upstream_sets())
    } else {
        None
    };
    // Graph index (position in `raw`) of each id's first occurrence.
    let index_of: HashMap<&str, usize> = raw
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(k, r)| r.id.as_deref().map(|id| (id, k)))
        .collect();
    let raw_pos: HashMap<usize, usize> =
        raw.iter().enumerate().map(|(k, r)| (r.index, k)).collect();

    for (i, node) in nodes {
        let base = nodes_path(*i);
        let k = raw_pos.get(i).copied().unwrap_or(usize::MAX);
        check_kind(c, &base, node);
        if node.timeout.is_some_and(|t| t.std().is_zero()) {
            c.error(
                &base.key("timeout"),
                false,
                "a timeout of zero would fail every attempt".into(),
                Some("leave `timeout` out for no limit".into()),
            );
        }
        check_retry(c, &base.key("retry"), node.retry.as_ref());
        // Templates and expressions.
        let scope = Scope {
            node: Some(&node.id),
            upstream: upstream.as_ref().and_then(|u| u.get(k)),
            index_of: &index_of,
            known: &known,
            inputs,
            params,
        };
        for (rel, source) in template_sites(node) {
            let path = base.join(&rel);
            match engine.template_refs(source) {
                Ok(refs) => check_refs(c, &path, &refs, &scope),
                Err(e) => c.error(
                    &path,
                    false,
                    format!("template error: {}", located(&e)),
                    None,
                ),
            }
        }
        if let NodeKind::Shell(shell) = &node.kind {
            check_shell_values(c, &base.key("run"), &shell.run);
        }
        for (rel, source) in expression_sites(node) {
            let path = base.join(&rel);
            match engine.expression_refs(source) {
                Ok(refs) => check_refs(c, &path, &refs, &scope),
                Err(e) => c.error(
                    &path,
                    false,
                    format!("expression error: {}", e.message),
                    source.contains("{{").then(|| {
                        "write the expression bare, e.g. `nodes.check.output.status == 200`".into()
                    }),
                ),
            }
        }
    }
}

fn located(e: &crate::template::TemplateError) -> String {
    match e.line {
        Some(line) if line > 1 => format!("{} (line {line} of the template)", e.message),
        _ => e.message.clone(),
    }
}

/// The error for a kind that is neither built in nor a known plugin, if `kind` is one.
pub fn unknown_kind(kind: &str, opts: &ValidateOptions) -> Option<FieldError> {
    if BUILTIN_KINDS.contains(&kind) || opts.plugin_kinds.contains(kind) {
        return None;
    }
    let candidates = BUILTIN_KINDS
        .iter()
        .copied()
        .chain(opts.plugin_kinds.iter().map(String::as_str));
    let where_ = opts
        .plugin_dir
        .as_ref()
        .map_or("no plugins directory given".to_owned(), |d| {
            format!("no plugin sluice-node-{kind} in {}", d.display())
        });
    let hint = suggest::did_you_mean(kind, candidates)
        .unwrap_or_else(|| format!("built-in kinds are {}; {where_}", BUILTIN_KINDS.join(", ")));
    Some(FieldError {
        path: DocPath::root().key("kind"),
        message: format!("unknown node kind '{kind}'"),
        hint: Some(hint),
        at_key: false,
    })
}

fn check_kind(c: &mut Checker<'_>, base: &DocPath, node: &Node) {
    match &node.kind {
        NodeKind::Plugin(_) => {}
        NodeKind::Http(h) => {
            if h.json.is_some() && h.body.is_some() {
                c.error(
                    &base.key("body"),
                    true,
                    "an http node takes `json` or `body`, not both".into(),
                    None,
                );
            }
        }
        NodeKind::Delay(d) => match (&d.duration, &d.until) {
            (None, None) => c.error(
                base,
                true,
                "a delay node needs `for` (a duration) or `until` (a time)".into(),
                Some("e.g. `for: 10m`".into()),
            ),
            (Some(_), Some(_)) => c.error(
                &base.key("until"),
                true,
                "a delay node takes `for` or `until`, not both".into(),
                None,
            ),
            _ => {}
        },
        NodeKind::Llm(l) => {
            match (&l.prompt, l.messages.is_empty()) {
                (None, true) => c.error(
                    base,
                    true,
                    "an llm node needs `prompt` or `messages`".into(),
                    None,
                ),
                (Some(_), false) => c.error(
                    &base.key("messages"),
                    true,
                    "an llm node takes `prompt` or `messages`, not both".into(),
                    None,
                ),
                _ => {}
            }
            if let Some(t) = l.temperature
                && !(0.0..=2.0).contains(&t)
            {
                c.error(
                    &base.key("temperature"),
                    false,
                    format!("temperature {t} is out of range"),
                    Some("use a value from 0 to 2".into()),
                );
            }
            if l.schema.is_some() && l.format != crate::model::node::LlmFormat::Json {
                c.error(
                    &base.key("schema"),
                    true,
                    "`schema` needs `format: json`".into(),
                    None,
                );
            }
            if let Some(crate::model::node::ModelChoice::Fallbacks(list)) = &l.model
                && list.is_empty()
            {
                c.error(
                    &base.key("model"),
                    false,
                    "the model list is empty".into(),
                    None,
                );
            }
        }
        NodeKind::Approval(a) => {
            if a.min_approvals == 0 {
                c.error(
                    &base.key("min_approvals"),
                    false,
                    "min_approvals must be at least 1".into(),
                    None,
                );
            }
            for (j, who) in a.approvers.iter().enumerate() {
                if who.trim().is_empty() || who == "@" {
                    c.error(
                        &base.key("approvers").index(j),
                        false,
                        "empty approver".into(),
                        Some("write a user name or @group".into()),
                    );
                }
            }
            let users = a
                .approvers
                .iter()
                .filter(|w| !w.starts_with('@'))
                .collect::<std::collections::BTreeSet<_>>();
            if a.approvers.iter().all(|w| !w.starts_with('@'))
                && !a.approvers.is_empty()
                && a.min_approvals as usize > users.len()
            {
                c.error(
                    &base.key("min_approvals"),
                    true,
                    format!(
                        "min_approvals is {} but only {} approver(s) are listed, so it can never be met",
                        a.min_approvals,
                        users.len()
                    ),
                    Some("list more approvers, add a @group, or lower min_approvals".into()),
                );
            }
            if let Some(every) = a.remind_every
                && every.std() < std::time::Duration::from_secs(1)
            {
                c.error(
                    &base.key("remind_every"),
                    true,
                    format!("remind_every is {every}; reminders need at least 1s between them"),
                    Some("people need minutes, not milliseconds: try 30m".into()),
                );
            }
            if a.remind_every.is_some() && a.notify.is_none() {
                c.warn(
                    &base.key("remind_every"),
                    true,
                    "remind_every has no effect without `notify`".into(),
                    None,
                );
            }
            if let Some(target) = &a.notify
                && target.webhook.is_none()
                && target.email.is_none()
            {
                c.error(
                    &base.key("notify"),
                    true,
                    "`notify` needs `webhook` or `email`".into(),
                    None,
                );
            }
        }
        NodeKind::Notify(n) => {
            if n.webhook.is_none() && n.email.is_none() {
                c.error(
                    base,
                    true,
                    "a notify node needs `webhook` or `email`".into(),
                    Some("e.g. `webhook: \"{{ secrets.slack_url }}\"`".into()),
                );
            }
            if let Some(email) = &n.email
                && email.to.is_empty()
            {
                c.error(
                    &base.key("email").key("to"),
                    true,
                    "email needs at least one recipient".into(),
                    None,
                );
            }
        }
        NodeKind::Shell(s) => {
            if s.run.trim().is_empty() {
                c.error(&base.key("run"), false, "the script is empty".into(), None);
            }
            let reserved = format!(
                "the {SHELL_VALUE_PREFIX} prefix is reserved: it carries template values into `run`"
            );
            for name in s.env.keys().filter(|k| k.starts_with(SHELL_VALUE_PREFIX)) {
                c.error(
                    &base.key("env").key(name),
                    true,
                    format!("`env` may not set '{name}': {reserved}"),
                    Some("rename the variable".into()),
                );
            }
            for (i, name) in s.inherit_env.iter().enumerate() {
                if name.starts_with(SHELL_VALUE_PREFIX) {
                    c.error(
                        &base.key("inherit_env").index(i),
                        false,
                        format!("`inherit_env` may not pass '{name}': {reserved}"),
                        None,
                    );
                }
            }
        }
        NodeKind::Filter(_) | NodeKind::Transform(_) => {}
    }
}

/// One `{{ … }}` of a shell script, as found by [`shell_template_sites`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellSite {
    /// The expression between the braces, trimmed.
    pub expr: String,
    /// The 1-based line of the script it is on.
    pub line: usize,
    /// The quoting around it, with `{% %}` tags left out.
    pub quoting: Quoting,
    /// The script text of its line before it.
    pub before: String,
}

/// The `{{ … }}` of a shell script with the quoting each stands in: the script
/// is lexed with every expression replaced by a word and every `{% %}` and
/// `{# #}` tag removed (logic can still move text around; the render checks again).
pub fn shell_template_sites(source: &str) -> Vec<ShellSite> {
    let mut text = String::with_capacity(source.len());
    let mut found = Vec::new();
    let mut rest = source;
    let mut consumed = 0;
    while let Some(open) = rest.find('{') {
        let kind = rest[open + 1..].chars().next();
        let close = match kind {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => "#}",
            _ => {
                text.push_str(&rest[..=open]);
                consumed += open + 1;
                rest = &rest[open + 1..];
                continue;
            }
        };
        let inner_at = open + 2;
        let Some(len) = tag_end(&rest[inner_at..], close) else {
            break;
        };
        text.push_str(&rest[..open]);
        if kind == Some('{') {
            let expr = rest[inner_at..inner_at + len]
                .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
            let upto = &source[..consumed + open];
            let line = upto.matches('\n').count() + 1;
            let before = upto.rsplit('\n').next().unwrap_or_default().to_owned();
            found.push((text.len(), expr.to_owned(), line, before));
            // Any word will do: only the position is looked up.
            text.push('v');
        }
        let end = inner_at + len + close.len();
        consumed += end;
        rest = &rest[end..];
    }
    text.push_str(rest);
    let map = QuotingMap::new(&text);
    found
        .into_iter()
        .map(|(pos, expr, line, before)| ShellSite {
            expr,
            line,
            quoting: map.at(pos),
            before,
        })
        .collect()
}

/// Length of a tag's inside up to `close`, skipping string literals.
fn tag_end(s: &str, close: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if s[i..].starts_with(close) => return Some(i),
            None => {}
        }
    }
    None
}

/// Whether an expression applies the filter `name`.
fn uses_filter(expr: &str, name: &str) -> bool {
    expr.split('|').skip(1).any(|filter| {
        filter
            .trim_start()
            .split(|c: char| c == '(' || c.is_whitespace())
            .next()
            == Some(name)
    })
}

/// The command that parses the value's text as a script again, if the simple
/// command around it plainly is one: `eval` and `ssh` (which joins its
/// arguments into a remote command) for any value, `sh -c "…"`, `su -c "…"` and
/// the like for a double-quoted one. A heuristic for a warning: it reads the
/// words of the line before the value, not the shell's grammar.
fn reparsed_by(before: &str, quoting: Quoting) -> Option<&'static str> {
    let command = before
        .rsplit([';', '&', '|', '(', '`'])
        .next()
        .unwrap_or(before);
    let mut words = command.split_whitespace().skip_while(|w| {
        w.contains('=') || ["sudo", "exec", "command", "then", "do", "else"].contains(w)
    });
    let first = words.next()?;
    match first.rsplit('/').next().unwrap_or(first) {
        "eval" => Some("eval"),
        "ssh" => Some("ssh"),
        "sh" | "bash" | "dash" | "ksh" | "zsh"
            if quoting == Quoting::Double && words.any(|w| w == "-c") =>
        {
            Some("sh -c")
        }
        "su" if quoting == Quoting::Double && words.any(|w| w == "-c") => Some("su -c"),
        _ => None,
    }
}

/// Templates in `run` the shell cannot expand are errors; `| safe` is a warning.
fn check_shell_values(c: &mut Checker<'_>, path: &DocPath, source: &str) {
    if !source.contains("{{") {
        return;
    }
    for site in shell_template_sites(source) {
        let shown = format!("{{{{ {} }}}}", site.expr);
        let line = site.line;
        if uses_filter(&site.expr, "safe") {
            c.warn(
                path,
                false,
                format!("`{shown}` is written into the script as code (line {line} of the script)"),
                Some(
                    "drop `| safe` unless the value is script text you control; without it any value arrives intact"
                        .into(),
                ),
            );
            continue;
        }
        let q = site.quoting;
        if q.reference("V").is_some() {
            if q != Quoting::Comment
                && !uses_filter(&site.expr, "quote")
                && let Some(cmd) = reparsed_by(&site.before, q)
            {
                c.warn(
                    path,
                    false,
                    format!("`{shown}` goes into text that `{cmd}` parses as a script again, where the value becomes code (line {line} of the script)"),
                    Some(if cmd == "sh -c" {
                        format!(
                            "pass it as an argument (sh -c '… \"$1\"' sh {shown}) or quote it for that shell: {{{{ {} | quote }}}}",
                            site.expr
                        )
                    } else {
                        format!("quote it for that shell: {{{{ {} | quote }}}}", site.expr)
                    }),
                );
            }
            continue;
        }
        let hint = match q {
            Quoting::Single => format!(
                "move it outside the single quotes, e.g. 'text '\"{shown}\"' more', or use double quotes: \"text {shown} more\""
            ),
            Quoting::AnsiC => format!("move it outside the $'…' quotes, e.g. $'a\\tb'\"{shown}\""),
            Quoting::QuotedHeredoc => "unquote the delimiter (<<EOF instead of <<'EOF'): the value still arrives intact; write other $ and ` in the body as \\$ and \\`".into(),
            Quoting::HeredocDelimiter => "use a fixed delimiter such as EOF".into(),
            Quoting::Escaped => "remove the backslash: the value arrives intact without it".into(),
            Quoting::Arithmetic => format!(
                "assign it first and check it is a number: n={shown}; case $n in ''|*[!0-9]*) exit 2;; esac; echo $((n + 1))"
            ),
            Quoting::Bare | Quoting::Double | Quoting::Heredoc | Quoting::Comment => String::new(),
        };
        c.error(
            path,
            false,
            format!("`{shown}` is {} (line {line} of the script)", q.describe()),
            Some(hint),
        );
    }
}

/// Checks a retry policy's numbers.
pub fn check_retry(c: &mut Checker<'_>, path: &DocPath, retry: Option<&crate::model::RetryPolicy>) {
    if let Some(r) = retry {
        if r.attempts == 0 {
            c.error(
                &path.key("attempts"),
                false,
                "attempts must be at least 1 (1 means no retry)".into(),
                None,
            );
        }
        if r.backoff > r.max_backoff {
            c.error(
                &path.key("max_backoff"),
                false,
                format!(
                    "max_backoff ({}) is shorter than backoff ({})",
                    r.max_backoff, r.backoff
                ),
                None,
            );
        }
    }
}

/// Template-bearing strings of a node, with paths relative to the node.
pub fn template_sites(node: &Node) -> Vec<(DocPath, &str)> {
    fn opt<'n>(out: &mut Vec<(DocPath, &'n str)>, key: &str, v: &'n Option<String>) {
        if let Some(s) = v {
            out.push((DocPath::root().key(key), s.as_str()));
        }
    }
    let root = DocPath::root();
    let mut out: Vec<(DocPath, &str)> = Vec::new();
    match &node.kind {
        NodeKind::Shell(s) => {
            out.push((root.key("run"), &s.run));
            for (k, v) in &s.env {
                out.push((root.key("env").key(k), v));
            }
            opt(&mut out, "workdir", &s.workdir);
        }
        NodeKind::Http(h) => {
            out.push((root.key("url"), &h.url));
            for (k, v) in &h.headers {
                out.push((root.key("headers").key(k), v));
            }
            for (k, v) in &h.query {
                out.push((root.key("query").key(k), v));
            }
            if let Some(json) = &h.json {
                json_strings(json, root.key("json"), &mut out);
            }
            opt(&mut out, "body", &h.body);
        }
        NodeKind::Transform(t) => json_strings(&t.output, root.key("output"), &mut out),
        NodeKind::Delay(d) => opt(&mut out, "until", &d.until),
        NodeKind::Llm(l) => {
            opt(&mut out, "system", &l.system);
            opt(&mut out, "prompt", &l.prompt);
            for (j, m) in l.messages.iter().enumerate() {
                out.push((root.key("messages").index(j).key("content"), &m.content));
            }
        }
        NodeKind::Approval(a) => {
            opt(&mut out, "message", &a.message);
            if let Some(t) = &a.notify {
                notify_sites(
                    &root.key("notify"),
                    t.webhook.as_ref(),
                    t.email.as_ref(),
                    &mut out,
                );
            }
        }
        NodeKind::Notify(n) => {
            out.push((root.key("message"), &n.message));
            opt(&mut out, "title", &n.title);
            notify_sites(&root, n.webhook.as_ref(), n.email.as_ref(), &mut out);
        }
        NodeKind::Plugin(p) => json_strings(&p.config, root.key("config"), &mut out),
        NodeKind::Filter(_) => {}
    }
    out
}

fn notify_sites<'n>(
    base: &DocPath,
    webhook: Option<&'n String>,
    email: Option<&'n crate::model::node::EmailTarget>,
    out: &mut Vec<(DocPath, &'n str)>,
) {
    if let Some(w) = webhook {
        out.push((base.key("webhook"), w));
    }
    if let Some(e) = email {
        for (j, to) in e.to.iter().enumerate() {
            out.push((base.key("email").key("to").index(j), to));
        }
        if let Some(s) = &e.subject {
            out.push((base.key("email").key("subject"), s));
        }
    }
}

fn json_strings<'v>(value: &'v Value, path: DocPath, out: &mut Vec<(DocPath, &'v str)>) {
    match value {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                json_strings(v, path.index(i), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                json_strings(v, path.key(k), out);
            }
        }
        _ => {}
    }
}

/// Expressions of a node (`when`, a filter's `condition`), relative to the node.
pub fn expression_sites(node: &Node) -> Vec<(DocPath, &str)> {
    let mut out = Vec::new();
    if let Some(w) = &node.when {
        out.push((DocPath::root().key("when"), w.as_str()));
    }
    if let NodeKind::Filter(f) = &node.kind {
        out.push((DocPath::root().key("condition"), f.condition.as_str()));
    }
    out
}

struct Scope<'s> {
    node: Option<&'s str>,
    upstream: Option<&'s crate::graph::Upstream>,
    index_of: &'s HashMap<&'s str, usize>,
    known: &'s BTreeSet<&'s str>,
    inputs: &'s IndexMap<String, InputSpec>,
    params: Params<'s>,
}

fn check_refs(c: &mut Checker<'_>, path: &DocPath, refs: &BTreeSet<String>, scope: &Scope<'_>) {
    for r in refs {
        let parts: Vec<&str> = r.split('.').collect();
        let root = parts[0];
        let second = parts.get(1).copied();
        match root {
            "inputs" => {
                if let Some(name) = second
                    && !scope.inputs.contains_key(name)
                {
                    let hint = suggest::did_you_mean(name, scope.inputs.keys().map(String::as_str))
                        .or_else(|| {
                            Some(format!(
                                "declare it under `inputs:` ({})",
                                if scope.inputs.is_empty() {
                                    "none are declared".to_owned()
                                } else {
                                    format!(
                                        "declared: {}",
                                        scope.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                                    )
                                }
                            ))
                        });
                    c.error(
                        path,
                        false,
                        format!("template reads undeclared input '{name}'"),
                        hint,
                    );
                }
            }
            "params" => match scope.params {
                Params::None => c.error(
                    path,
                    false,
                    "template reads `params`, but this pipeline is not a template".into(),
                    Some("declare `params:` to make the file a template".into()),
                ),
                Params::Declared(declared) => {
                    if let Some(name) = second
                        && !declared.contains_key(name)
                    {
                        let hint = suggest::did_you_mean(name, declared.keys().map(String::as_str));
                        c.error(
                            path,
                            false,
                            format!("template reads undeclared param '{name}'"),
                            hint,
                        );
                    }
                }
            },
            "nodes" => {
                let Some(id) = second else { continue };
                if !scope.known.contains(id) {
                    let hint = suggest::did_you_mean(id, scope.known.iter().copied());
                    c.error(
                        path,
                        false,
                        format!("template reads unknown node '{id}'"),
                        hint,
                    );
                    continue;
                }
                if scope.node == Some(id) {
                    c.error(
                        path,
                        false,
                        format!("node '{id}' reads its own output"),
                        None,
                    );
                    continue;
                }
                if let (Some(upstream), Some(&k)) = (scope.upstream, scope.index_of.get(id))
                    && !upstream.contains(k)
                {
                    c.error(
                        path,
                        false,
                        format!(
                            "template reads node '{id}', which is not upstream of '{}'",
                            scope.node.unwrap_or("?")
                        ),
                        Some(format!(
                            "add '{id}' to this node's needs (directly or through another node)"
                        )),
                    );
                    continue;
                }
                if let Some(attr) = parts.get(2)
                    && *attr != "output"
                {
                    c.error(
                        path,
                        false,
                        format!("nodes.{id}.{attr} does not exist"),
                        Some(format!(
                            "a node's results are under .output, e.g. nodes.{id}.output.{attr}"
                        )),
                    );
                }
            }
            "run" | "pipeline" | "trigger" => {
                let fields = match root {
                    "run" => RUN_FIELDS,
                    "pipeline" => PIPELINE_FIELDS,
                    _ => TRIGGER_FIELDS,
                };
                if let Some(name) = second
                    && !fields.contains(&name)
                {
                    let hint = suggest::did_you_mean(name, fields.iter().copied())
                        .or_else(|| Some(format!("{root} has: {}", fields.join(", "))));
                    c.error(path, false, format!("{root}.{name} does not exist"), hint);
                }
            }
            "secrets" => {}
            other => {
                let hint = suggest::did_you_mean(other, CONTEXT_ROOTS.iter().copied())
                    .or_else(|| Some(format!("templates can read {}", CONTEXT_ROOTS.join(", "))));
                c.error(
                    path,
                    false,
                    format!("template reads unknown variable '{other}'"),
                    hint,
                );
            }
        }
    }
}

/// Checks declared inputs (or template params): names, defaults and choices.
pub fn check_inputs(
    c: &mut Checker<'_>,
    base: &DocPath,
    inputs: &IndexMap<String, InputSpec>,
    what: &str,
) {
    for (name, spec) in inputs {
        let path = base.key(name);
        if !is_identifier(name) {
            c.error(
                &path,
                true,
                format!("invalid {what} name '{name}'"),
                Some("use letters, digits and _".into()),
            );
        }
        if let Some(default) = &spec.default
            && !spec.ty.accepts(default)
        {
            c.error(
                &path.key("default"),
                false,
                format!("default of {what} '{name}' is not a {}", spec.ty.name()),
                None,
            );
        }
        for (j, choice) in spec.choices.iter().enumerate() {
            if !spec.ty.accepts(choice) {
                c.error(
                    &path.key("choices").index(j),
                    false,
                    format!(
                        "choice of {what} '{name}' is not {}",
                        spec.ty.with_article()
                    ),
                    None,
                );
            }
        }
        if let Some(default) = &spec.default
            && !spec.choices.is_empty()
            && !spec.choices.contains(default)
        {
            c.error(
                &path.key("default"),
                false,
                format!("default of {what} '{name}' is not one of its choices"),
                None,
            );
        }
    }
}

/// Checks that `values` fit the declared specs ([`inputs::check`]); missing
/// required ones are reported at `base`. `what` is "input" or "param".
pub fn check_values(
    c: &mut Checker<'_>,
    base: &DocPath,
    values: &IndexMap<String, Value>,
    specs: &IndexMap<String, InputSpec>,
    what: &'static str,
) {
    for p in inputs::check(specs, values, what) {
        let at = base.key(&p.name);
        match &p.kind {
            ProblemKind::Unknown { hint } => {
                c.error(&at, true, p.message(), Some(hint.clone()));
            }
            ProblemKind::WrongType(_) | ProblemKind::NotAChoice => {
                c.error(&at, false, p.message(), None);
            }
            // In a file the value is missing *here*: say where it could go.
            ProblemKind::Missing => c.error(
                base,
                true,
                format!("required {what} '{}' is not given", p.name),
                Some("give it a value here or a default where it is declared".into()),
            ),
        }
    }
}

/// Checks triggers: cron expressions, time zones, inputs, webhook secrets.
pub fn check_triggers(
    c: &mut Checker<'_>,
    triggers: &[(usize, Trigger)],
    inputs: &IndexMap<String, InputSpec>,
) {
    for (i, trigger) in triggers {
        let base = DocPath::root().key("triggers").index(*i);
        match trigger {
            Trigger::Cron(cron) => {
                if let Err(e) = cron::parse_expression(&cron.cron, cron.seconds) {
                    c.error(&base.key("cron"), false, e.message, e.hint);
                }
                if let Some(tz) = &cron.timezone
                    && let Err(e) = cron::parse_timezone(tz)
                {
                    c.error(&base.key("timezone"), false, e.message, e.hint);
                }
                if cron.catchup_window.is_some() && cron.misfire != MisfirePolicy::RunOnce {
                    c.warn(
                        &base.key("catchup_window"),
                        true,
                        "catchup_window only applies with `misfire: run_once`".into(),
                        None,
                    );
                }
                check_values(c, &base.key("inputs"), &cron.inputs, inputs, "input");
            }
            Trigger::Webhook(entry) => {
                let w = &entry.webhook;
                let path = base.key("webhook");
                match (&w.auth, &w.secret) {
                    (WebhookAuth::None, Some(_)) => {
                        c.warn(
                            &path.key("secret"),
                            true,
                            "`auth: none` ignores the secret".into(),
                            None,
                        );
                    }
                    (WebhookAuth::None, None) => {}
                    (auth, None) => {
                        let auth = if *auth == WebhookAuth::Hmac {
                            "hmac"
                        } else {
                            "bearer"
                        };
                        c.error(
                            &path,
                            true,
                            format!("webhook auth '{auth}' names no secret"),
                            Some("add `secret: <name>` (the name of a secret, not its value), or `auth: none` for an open hook".into()),
                        );
                    }
                    (_, Some(names)) => {
                        let list = names.names();
                        if list.is_empty() || list.len() > 2 {
                            c.error(
                                &path.key("secret"),
                                false,
                                "give one secret name, or two during a key rotation".into(),
                                None,
                            );
                        }
                        for (j, name) in list.iter().enumerate() {
                            let p = if list.len() > 1
                                || matches!(names, crate::model::trigger::SecretNames::Many(_))
                            {
                                path.key("secret").index(j)
                            } else {
                                path.key("secret")
                            };
                            if name.starts_with("whsec_") || !is_valid_name(name) {
                                c.error(&p, false, format!("'{}' is not a secret name", redact_hint(name)), Some("give the name of a secret (a file in $CREDENTIALS_DIRECTORY or a key of the secrets file), never the secret itself".into()));
                            }
                        }
                    }
                }
                if let Some(user) = &w.user
                    && user.trim().is_empty()
                {
                    c.error(&path.key("user"), false, "empty user".into(), None);
                }
            }
        }
    }
}

/// Shows only the start of something that may be a secret value.
fn redact_hint(s: &str) -> String {
    let head: String = s.chars().take(6).collect();
    if s.chars().count() > 6 {
        format!("{head}…")
    } else {
        head
    }
}

/// Topological order and layers of a valid pipeline's nodes, by id.
pub fn node_order(pipeline: &Pipeline) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let graph = Graph::new(
        pipeline
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.needs.iter().map(String::as_str))),
    );
    let order = graph.topo_order().ok()?;
    let layers = graph.layers().ok()?;
    Some((
        order.iter().map(|&i| graph.id(i).to_owned()).collect(),
        layers
            .iter()
            .map(|l| l.iter().map(|&i| graph.id(i).to_owned()).collect())
            .collect(),
    ))
}
