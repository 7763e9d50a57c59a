//! Reading pipeline files (one, or a directory of them) into validated
//! pipelines, with every problem reported at once. Templates are resolved
//! across the set and pipeline names must be unique within it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::document::{DocPath, Document, Format};
use crate::model::node::from_value_at;
use crate::model::{InputSpec, Node, Pipeline, PipelineDoc, Trigger};
use crate::suggest;
use crate::template::TemplateEngine;
use crate::validate::{self, Checker, Params, RawNode, ValidateOptions};

/// Top-level fields of a pipeline file, for hints.
pub const TOP_FIELDS: &[&str] = &[
    "name",
    "description",
    "owner",
    "inputs",
    "triggers",
    "concurrency",
    "timeout",
    "retry",
    "max_active_nodes",
    "params",
    "template",
    "nodes",
];

/// Largest pipeline file accepted.
pub const MAX_FILE_SIZE: u64 = 8 * 1024 * 1024;

/// What a file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A runnable pipeline.
    Pipeline,
    /// A template other files instantiate (not run on its own).
    Template,
    /// Unreadable or invalid at the top level.
    Invalid,
}

/// One file's result.
#[derive(Clone, Debug)]
pub struct LoadedFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Pipeline or template name (file stem unless the file says `name`).
    pub name: Option<String>,
    /// What the file is.
    pub kind: FileKind,
    /// The pipeline (or the template's body), present when the file has no errors.
    pub pipeline: Option<Pipeline>,
    /// Declared params of a template.
    pub params: IndexMap<String, InputSpec>,
    /// Every problem found.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadedFile {
    /// True when the file has no errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The result of loading a set of files.
#[derive(Clone, Debug, Default)]
pub struct PipelineSet {
    /// One entry per file, in the order read.
    pub files: Vec<LoadedFile>,
}

impl PipelineSet {
    /// True when every file is valid.
    pub fn is_valid(&self) -> bool {
        self.files.iter().all(LoadedFile::is_valid)
    }

    /// Valid runnable pipelines.
    pub fn pipelines(&self) -> impl Iterator<Item = &Pipeline> {
        self.files
            .iter()
            .filter(|f| f.kind == FileKind::Pipeline && f.is_valid())
            .filter_map(|f| f.pipeline.as_ref())
    }
}

/// The pipeline files of a directory (not recursive), sorted, without editor
/// leftovers such as `.x.yaml.swp`, `x.yaml~` and `#x.yaml#`.
pub fn list_pipeline_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_pipeline_path(p))
        .collect();
    found.sort();
    Ok(found)
}

/// Whether a path is named like a pipeline file (a known extension, not an
/// editor leftover); says nothing about what is there.
pub fn is_pipeline_path(path: &Path) -> bool {
    Format::from_path(path).is_some() && !is_hidden_or_backup(path)
}

fn is_hidden_or_backup(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.starts_with('#') || n.ends_with('~'))
}

/// Why a pipeline file's text could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file system refused (gone, unreadable, out of descriptors, ...).
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    /// Larger than [`MAX_FILE_SIZE`].
    #[error("file is {0} bytes; pipeline files are limited to {max} MiB", max = MAX_FILE_SIZE / (1024 * 1024))]
    TooLarge(u64),
    /// Not UTF-8; the offset of the first bad byte.
    #[error("file is not valid UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
}

impl ReadError {
    /// The I/O error behind it, when the file system refused.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Self::Io(e) => Some(e),
            Self::TooLarge(_) | Self::NotUtf8(_) => None,
        }
    }
}

/// Reads a pipeline file's text, saying which way it failed.
pub fn read_pipeline_text(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_FILE_SIZE {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let bytes = std::fs::read(path)?;
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Reads a pipeline file's text; `Err` says in words why it cannot be used.
pub fn read_pipeline_file(path: &Path) -> Result<String, String> {
    read_pipeline_text(path).map_err(|e| e.to_string())
}

/// Loads files and directories of pipeline files; unreadable files are reported
/// as diagnostics of those files.
pub fn load_paths(paths: &[PathBuf], opts: &ValidateOptions) -> PipelineSet {
    let mut sources = Vec::new();
    for path in paths {
        if path.is_dir() {
            match list_pipeline_files(path) {
                Ok(files) => sources.extend(files.into_iter().map(|f| {
                    let text = read_pipeline_file(&f);
                    (f, text)
                })),
                Err(e) => sources.push((path.clone(), Err(format!("cannot read directory: {e}")))),
            }
        } else {
            sources.push((path.clone(), read_pipeline_file(path)));
        }
    }
    load_set(&sources, opts)
}

/// Loads one file's text on its own (templates it names cannot be resolved).
pub fn load_source(path: &Path, source: &str, opts: &ValidateOptions) -> LoadedFile {
    let set = load_set(&[(path.to_owned(), Ok(source.to_owned()))], opts);
    set.files.into_iter().next().unwrap_or_else(|| LoadedFile {
        path: path.to_owned(),
        name: None,
        kind: FileKind::Invalid,
        pipeline: None,
        params: IndexMap::new(),
        diagnostics: Vec::new(),
    })
}

/// A file after its structure was read, before cross-file resolution.
struct Parsed {
    path: PathBuf,
    doc: Option<Document>,
    head: Option<PipelineDoc<Value, Value>>,
    nodes: Vec<(usize, Node)>,
    raw_nodes: Vec<RawNode>,
    triggers: Vec<(usize, Trigger)>,
    diagnostics: Vec<Diagnostic>,
    name: Option<String>,
}

/// Loads a set of (path, text) pairs; a text may be an error saying why the file was unreadable.
pub fn load_set(
    sources: &[(PathBuf, Result<String, String>)],
    opts: &ValidateOptions,
) -> PipelineSet {
    let engine = TemplateEngine::new();
    let parsed: Vec<Parsed> = sources
        .iter()
        .map(|(path, text)| parse_file(path, text, opts))
        .collect();

    // Templates by name, first one wins.
    let mut templates: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.iter().enumerate() {
        let is_template = p
            .head
            .as_ref()
            .is_some_and(|h| h.template.is_none() && !h.params.is_empty());
        if is_template && let Some(name) = &p.name {
            templates.entry(name.clone()).or_insert(i);
        }
    }

    // Templates (and everything else) first, so an instance knows whether its template is valid.
    let mut finished: Vec<Option<LoadedFile>> = vec![None; parsed.len()];
    let is_instance = |p: &Parsed| p.head.as_ref().is_some_and(|h| h.template.is_some());
    for (i, p) in parsed.iter().enumerate() {
        if !is_instance(p) {
            finished[i] = Some(finish_file(p, &parsed, &templates, &[], &engine));
        }
    }
    let template_valid: Vec<bool> = finished
        .iter()
        .map(|f| f.as_ref().is_some_and(LoadedFile::is_valid))
        .collect();
    for (i, p) in parsed.iter().enumerate() {
        if is_instance(p) {
            finished[i] = Some(finish_file(
                p,
                &parsed,
                &templates,
                &template_valid,
                &engine,
            ));
        }
    }
    out.extend(finished.into_iter().flatten());

    // Template names are unique too.
    let mut seen_templates: HashMap<String, PathBuf> = HashMap::new();
    for f in out.iter_mut().filter(|f| f.kind == FileKind::Template) {
        let Some(name) = f.name.clone() else { continue };
        if let Some(first) = seen_templates.get(&name) {
            let mut d = Diagnostic::error(
                &DocPath::root(),
                format!(
                    "template name '{name}' is already used by {}",
                    first.display()
                ),
            );
            d.file = f.path.clone();
            f.diagnostics.push(d);
            f.pipeline = None;
        } else {
            seen_templates.insert(name, f.path.clone());
        }
    }

    // Pipeline names are unique: the later file of two is in error.
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for (f, p) in out.iter_mut().zip(&parsed) {
        if f.kind != FileKind::Pipeline {
            continue;
        }
        let Some(name) = &f.name else { continue };
        match seen.get(name) {
            Some(first) => {
                let path = if p.head.as_ref().is_some_and(|h| h.name.is_some()) {
                    DocPath::root().key("name")
                } else {
                    DocPath::root()
                };
                let mut d = Diagnostic::error(&path, format!("pipeline name '{name}' is already used by {}", first.display()))
                    .with_hint(Some("pipeline names must be unique; set `name:` to something else or rename the file".into()));
                d.file = f.path.clone();
                if let Some(doc) = &p.doc {
                    d = d.at(doc.key_pos(&path));
                }
                f.diagnostics.push(d);
                f.pipeline = None;
            }
            None => {
                seen.insert(name.clone(), f.path.clone());
            }
        }
    }
    for f in &mut out {
        // Report in source order, like a compiler; unlocated problems first.
        f.diagnostics.sort_by_key(|d| (d.line, d.column));
    }
    PipelineSet { files: out }
}

fn parse_file(path: &Path, text: &Result<String, String>, opts: &ValidateOptions) -> Parsed {
    let mut parsed = Parsed {
        path: path.to_owned(),
        doc: None,
        head: None,
        nodes: Vec::new(),
        raw_nodes: Vec::new(),
        triggers: Vec::new(),
        diagnostics: Vec::new(),
        name: None,
    };
    let whole = |msg: String, hint: Option<String>| {
        let mut d = Diagnostic::error(&DocPath::root(), msg).with_hint(hint);
        d.file = path.to_owned();
        d
    };
    let source = match text {
        Ok(s) => s,
        Err(why) => {
            parsed.diagnostics.push(whole(why.clone(), None));
            return parsed;
        }
    };
    let Some(format) = Format::from_path(path) else {
        parsed.diagnostics.push(whole(
            "not a pipeline file".into(),
            Some("pipeline files end in .yaml, .yml, .toml or .json".into()),
        ));
        return parsed;
    };
    let doc = match Document::parse(source, format) {
        Ok(doc) => doc,
        Err(mut d) => {
            d.file = path.to_owned();
            parsed.diagnostics.push(d);
            return parsed;
        }
    };
    let mut c = Checker::new(&doc, path);
    let empty = match &doc.value {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if empty {
        c.error(
            &DocPath::root(),
            false,
            "empty pipeline: the file defines nothing".into(),
            Some("a pipeline needs at least `nodes:` with one node".into()),
        );
    } else if !doc.value.is_object() {
        c.error(
            &DocPath::root(),
            false,
            "a pipeline file must be a mapping of settings (nodes, triggers, ...)".into(),
            None,
        );
    } else {
        match from_value_at::<PipelineDoc<Value, Value>>(
            doc.value.clone(),
            "the pipeline",
            TOP_FIELDS,
        ) {
            Ok(head) => parsed.head = Some(head),
            Err(e) => c.field_error(&DocPath::root(), e),
        }
        // Nodes and triggers are read one by one so each one's problems are reported,
        // even when the top level has problems of its own.
        if let Some(nodes) = doc.value.get("nodes").and_then(Value::as_array) {
            for (i, v) in nodes.iter().enumerate() {
                parsed.raw_nodes.push(RawNode::from_value(i, v));
                let base = DocPath::root().key("nodes").index(i);
                // An unknown kind is one error; its fields cannot be judged.
                if let Some(e) = v
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(|k| validate::unknown_kind(k, opts))
                {
                    c.field_error(&base, e);
                    continue;
                }
                match Node::from_value(v) {
                    Ok(node) => parsed.nodes.push((i, node)),
                    Err(errors) => {
                        for e in errors {
                            c.field_error(&base, e);
                        }
                    }
                }
            }
        }
        if let Some(triggers) = doc.value.get("triggers").and_then(Value::as_array) {
            for (i, v) in triggers.iter().enumerate() {
                match Trigger::from_value(v) {
                    Ok(t) => parsed.triggers.push((i, t)),
                    Err(e) => c.field_error(&DocPath::root().key("triggers").index(i), e),
                }
            }
        }
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
    let declared = doc
        .value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match &declared {
        Some(name) if !validate::is_valid_name(name) => c.error(
            &DocPath::root().key("name"),
            false,
            format!("invalid pipeline name '{name}'"),
            Some(
                "names are used in URLs and commands: use letters, digits, '-', '_' and '.'".into(),
            ),
        ),
        None if stem.as_deref().is_some_and(|s| !validate::is_valid_name(s)) => c.error(
            &DocPath::root(),
            false,
            format!(
                "the file name '{}' is not a valid pipeline name",
                stem.clone().unwrap_or_default()
            ),
            Some("rename the file or set `name:` (letters, digits, '-', '_' and '.')".into()),
        ),
        _ => {}
    }
    parsed.name = declared.or(stem);
    parsed.diagnostics = c.diagnostics;
    parsed.doc = Some(doc);
    parsed
}

/// The templates a file set holds: name to index in the set, and whether each file is valid.
struct Templates<'s> {
    all: &'s [Parsed],
    by_name: &'s HashMap<String, usize>,
    valid: &'s [bool],
}

/// Checks one parsed file against the set (its template, if it names one)
/// and builds its pipeline when it is valid.
fn finish_file(
    p: &Parsed,
    all: &[Parsed],
    templates: &HashMap<String, usize>,
    template_valid: &[bool],
    engine: &TemplateEngine,
) -> LoadedFile {
    let mut file = LoadedFile {
        path: p.path.clone(),
        name: p.name.clone(),
        kind: FileKind::Invalid,
        pipeline: None,
        params: IndexMap::new(),
        diagnostics: p.diagnostics.clone(),
    };
    let Some(doc) = &p.doc else { return file };
    let mut c = Checker::new(doc, &p.path);
    let head = p.head.as_ref();
    let is_template = head.is_some_and(|h| h.template.is_none() && !h.params.is_empty());
    let inputs = head.map(|h| h.inputs.clone()).unwrap_or_default();
    file.kind = if is_template {
        FileKind::Template
    } else {
        FileKind::Pipeline
    };

    validate::check_inputs(&mut c, &DocPath::root().key("inputs"), &inputs, "input");
    if let Some(h) = head {
        check_head(&mut c, h);
    }
    if let Some(name) = head.and_then(|h| h.template.as_ref()) {
        let set = Templates {
            all,
            by_name: templates,
            valid: template_valid,
        };
        return finish_instance(file, c, p, name, &set);
    }

    let params_decl = if is_template {
        template_params(&mut c, p)
    } else {
        IndexMap::new()
    };
    if head.is_some_and(|h| h.nodes.is_empty())
        && doc
            .value
            .get("nodes")
            .is_none_or(|n| n.as_array().is_some_and(Vec::is_empty))
    {
        c.error(
            &DocPath::root(),
            false,
            "empty pipeline: no nodes".into(),
            Some("add `nodes:` with at least one node".into()),
        );
    }
    let params = if is_template {
        Params::Declared(&params_decl)
    } else {
        Params::None
    };
    validate::check_nodes(&mut c, &p.raw_nodes, &p.nodes, &inputs, params, engine);
    validate::check_triggers(&mut c, &p.triggers, &inputs);

    file.diagnostics.extend(c.diagnostics);
    file.params = params_decl;
    if file.is_valid()
        && let Some(h) = head
    {
        file.pipeline = Some(Pipeline {
            name: p.name.clone().unwrap_or_default(),
            description: h.description.clone(),
            owner: h.owner.clone(),
            inputs,
            triggers: p.triggers.iter().map(|(_, t)| t.clone()).collect(),
            concurrency: h.concurrency.unwrap_or_default(),
            timeout: h.timeout,
            retry: h.retry,
            max_active_nodes: h.max_active_nodes,
            params: IndexMap::new(),
            template: None,
            nodes: p.nodes.iter().map(|(_, n)| n.clone()).collect(),
        });
    }
    file
}

/// The pipeline-wide settings' own limits.
fn check_head(c: &mut Checker<'_>, h: &PipelineDoc<Value, Value>) {
    validate::check_retry(c, &DocPath::root().key("retry"), h.retry.as_ref());
    if h.max_active_nodes == Some(0) {
        c.error(
            &DocPath::root().key("max_active_nodes"),
            false,
            "max_active_nodes must be at least 1".into(),
            None,
        );
    }
    if h.concurrency.and_then(|cc| cc.max_runs) == Some(0) {
        c.error(
            &DocPath::root().key("concurrency").key("max_runs"),
            false,
            "max_runs must be at least 1".into(),
            None,
        );
    }
    if h.owner.as_deref().is_some_and(|o| o.trim().is_empty()) {
        c.error(
            &DocPath::root().key("owner"),
            false,
            "empty owner".into(),
            None,
        );
    }
}

/// A template's declared params (`params:` of a file without `template:`);
/// a template cannot have triggers.
fn template_params(c: &mut Checker<'_>, p: &Parsed) -> IndexMap<String, InputSpec> {
    let mut params_decl: IndexMap<String, InputSpec> = IndexMap::new();
    let raw = p
        .head
        .as_ref()
        .map(|h| h.params.clone())
        .unwrap_or_default();
    for (k, v) in &raw {
        match from_value_at::<InputSpec>(
            v.clone(),
            "a param declaration",
            &["type", "default", "description", "choices"],
        ) {
            Ok(spec) => {
                params_decl.insert(k.clone(), spec);
            }
            Err(e) => c.field_error(&DocPath::root().key("params").key(k), e),
        }
    }
    validate::check_inputs(c, &DocPath::root().key("params"), &params_decl, "param");
    if !p.triggers.is_empty() {
        c.error(
            &DocPath::root().key("triggers"),
            true,
            "a template does not run on its own, so it cannot have triggers".into(),
            Some("put triggers in the files that instantiate it with `template:`".into()),
        );
    }
    params_decl
}

/// A file that instantiates template `name`: its nodes and inputs come from
/// the template, its params are checked against the template's declaration.
fn finish_instance(
    mut file: LoadedFile,
    mut c: Checker<'_>,
    p: &Parsed,
    name: &str,
    set: &Templates<'_>,
) -> LoadedFile {
    let head = p.head.as_ref();
    let (no_nodes, no_inputs) = head
        .map(|h| (h.nodes.is_empty(), h.inputs.is_empty()))
        .unwrap_or((true, true));
    if !no_nodes {
        c.error(
            &DocPath::root().key("nodes"),
            true,
            "a file that instantiates a template takes its nodes from it".into(),
            Some("remove `nodes:` or `template:`".into()),
        );
    }
    if !no_inputs {
        c.error(
            &DocPath::root().key("inputs"),
            true,
            "a file that instantiates a template takes its inputs from it".into(),
            None,
        );
    }
    let mut param_values = head.map(|h| h.params.clone()).unwrap_or_default();
    let Some((t, t_valid)) = set
        .by_name
        .get(name)
        .map(|&i| (&set.all[i], set.valid.get(i).copied().unwrap_or(false)))
    else {
        let names: Vec<&str> = set.by_name.keys().map(String::as_str).collect();
        let hint = suggest::did_you_mean(name, names.iter().copied())
            .or_else(|| Some("a template is a pipeline file that declares `params:`; validate it together with this file (e.g. the whole directory)".into()));
        c.error(
            &DocPath::root().key("template"),
            false,
            format!("unknown template '{name}'"),
            hint,
        );
        file.diagnostics.extend(c.diagnostics);
        return file;
    };
    let t_head = t.head.as_ref();
    let declared = t_head
        .map(|h| parse_param_specs(&h.params))
        .unwrap_or_default();
    validate::check_values(
        &mut c,
        &DocPath::root().key("params"),
        &param_values,
        &declared,
        "param",
    );
    if !t_valid {
        c.error(
            &DocPath::root().key("template"),
            false,
            format!("template '{name}' ({}) has errors", t.path.display()),
            None,
        );
    }
    let nodes = t.nodes.iter().map(|(_, n)| n.clone()).collect();
    let t_inputs = t_head.map(|h| h.inputs.clone()).unwrap_or_default();
    // Defaults of params not given are bound too.
    for (k, spec) in &declared {
        if !param_values.contains_key(k)
            && let Some(d) = &spec.default
        {
            param_values.insert(k.clone(), d.clone());
        }
    }
    let triggers = p.triggers.clone();
    validate::check_triggers(&mut c, &triggers, &t_inputs);
    file.diagnostics.extend(c.diagnostics);
    if file.is_valid() {
        let h = head.cloned().unwrap_or_else(empty_doc);
        let t = t_head.cloned().unwrap_or_else(empty_doc);
        file.pipeline = Some(Pipeline {
            name: p.name.clone().unwrap_or_default(),
            description: h.description.or(t.description),
            owner: h.owner.or(t.owner),
            inputs: t_inputs,
            triggers: triggers.into_iter().map(|(_, t)| t).collect(),
            concurrency: h.concurrency.or(t.concurrency).unwrap_or_default(),
            timeout: h.timeout.or(t.timeout),
            retry: h.retry.or(t.retry),
            max_active_nodes: h.max_active_nodes.or(t.max_active_nodes),
            params: param_values,
            template: Some(name.to_owned()),
            nodes,
        });
    }
    file
}

fn parse_param_specs(raw: &IndexMap<String, Value>) -> IndexMap<String, InputSpec> {
    raw.iter()
        .filter_map(|(k, v)| {
            serde_json::from_value::<InputSpec>(v.clone())
                .ok()
                .map(|s| (k.clone(), s))
        })
        .collect()
}

fn empty_doc() -> PipelineDoc<Value, Value> {
    PipelineDoc {
        name: None,
        description: None,
        owner: None,
        inputs: IndexMap::new(),
        triggers: Vec::new(),
        concurrency: None,
        timeout: None,
        retry: None,
        max_active_nodes: None,
        params: IndexMap::new(),
        template: None,
        nodes: Vec::new(),
    }
}
