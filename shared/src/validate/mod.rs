//! Semantic checks of a pipeline: ids, needs, cycles, kinds, templates,
//! expressions, cron, time zones, inputs and webhook secrets. Every problem is
//! reported, each located in the source with a hint where one helps.
//!
//! By area: [`nodes`] (ids, needs, cycles, each node), [`kinds`] (rules of
//! each kind), [`refs`] (what templates and expressions read), [`shell`]
//! (templates inside scripts), [`triggers`] (inputs, params and triggers).

mod kinds;
mod nodes;
mod refs;
mod shell;
mod triggers;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::document::{DocPath, Document};
use crate::graph::Graph;
use crate::model::node::FieldError;
use crate::model::{InputSpec, Pipeline};

pub use nodes::{check_nodes, check_retry, unknown_kind};
pub use refs::{expression_sites, template_sites};
pub use shell::{ShellSite, shell_template_sites};
pub use triggers::{check_inputs, check_triggers, check_values};

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

/// Whether `s` can name something templates read (`nodes.<id>`, `inputs.<name>`).
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
