//! What templates and expressions read: the strings of a node that hold
//! them, and the check that every name they read exists and is in scope
//! (declared inputs and params, upstream nodes only, known context fields).

use std::collections::{BTreeSet, HashMap};

use indexmap::IndexMap;
use serde_json::Value;

use super::{CONTEXT_ROOTS, Checker, PIPELINE_FIELDS, Params, RUN_FIELDS, TRIGGER_FIELDS};
use crate::document::DocPath;
use crate::model::{InputSpec, Node, NodeKind};
use crate::suggest;

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

/// What the templates of one node may read.
pub(super) struct Scope<'s> {
    pub(super) node: Option<&'s str>,
    pub(super) upstream: Option<&'s crate::graph::Upstream>,
    pub(super) index_of: &'s HashMap<&'s str, usize>,
    pub(super) known: &'s BTreeSet<&'s str>,
    pub(super) inputs: &'s IndexMap<String, InputSpec>,
    pub(super) params: Params<'s>,
}

/// Checks the names `refs` (as read from the site at `path`) against `scope`.
pub(super) fn check_refs(
    c: &mut Checker<'_>,
    path: &DocPath,
    refs: &BTreeSet<String>,
    scope: &Scope<'_>,
) {
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
