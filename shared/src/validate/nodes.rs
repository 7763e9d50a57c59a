//! Checks of a pipeline's nodes: ids, needs and cycles across them, then
//! each node's kind rules, time limit, retry policy, templates and
//! expressions.

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;

use super::kinds::check_kind;
use super::refs::{Scope, check_refs, expression_sites, template_sites};
use super::shell::check_shell_values;
use super::{Checker, Params, RawNode, ValidateOptions, is_identifier};
use crate::document::DocPath;
use crate::graph::{Graph, Upstream};
use crate::model::node::{BUILTIN_KINDS, FieldError};
use crate::model::{InputSpec, Node, NodeKind};
use crate::suggest;
use crate::template::TemplateEngine;

fn nodes_path(i: usize) -> DocPath {
    DocPath::root().key("nodes").index(i)
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
    check_ids(c, raw);
    let known: BTreeSet<&str> = raw.iter().filter_map(|r| r.id.as_deref()).collect();
    check_needs(c, raw, &known);
    let upstream = check_cycles(c, raw);
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
        let k = raw_pos.get(i).copied().unwrap_or(usize::MAX);
        let scope = Scope {
            node: Some(&node.id),
            upstream: upstream.as_ref().and_then(|u| u.get(k)),
            index_of: &index_of,
            known: &known,
            inputs,
            params,
        };
        check_node(c, &nodes_path(*i), node, &scope, engine);
    }
}

/// Ids: valid identifiers and unique.
fn check_ids(c: &mut Checker<'_>, raw: &[RawNode]) {
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
}

/// Needs: every entry names a node of the pipeline.
fn check_needs(c: &mut Checker<'_>, raw: &[RawNode], known: &BTreeSet<&str>) {
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
}

/// Reports a cycle in needs; without one, each node's upstream set (by
/// position in `raw`), which scopes what its templates may read.
fn check_cycles(c: &mut Checker<'_>, raw: &[RawNode]) -> Option<Vec<Upstream>> {
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
    acyclic.then(|| graph.upstream_sets())
}

/// One parsed node: its kind's rules, time limit, retry policy, templates and expressions.
fn check_node(
    c: &mut Checker<'_>,
    base: &DocPath,
    node: &Node,
    scope: &Scope<'_>,
    engine: &TemplateEngine,
) {
    check_kind(c, base, node);
    if node.timeout.is_some_and(|t| t.std().is_zero()) {
        c.error(
            &base.key("timeout"),
            false,
            "a timeout of zero would fail every attempt".into(),
            Some("leave `timeout` out for no limit".into()),
        );
    }
    check_retry(c, &base.key("retry"), node.retry.as_ref());
    for (rel, source) in template_sites(node) {
        let path = base.join(&rel);
        match engine.template_refs(source) {
            Ok(refs) => check_refs(c, &path, &refs, scope),
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
            Ok(refs) => check_refs(c, &path, &refs, scope),
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
