//! `sluice validate`: check pipeline files offline, like a compiler.

use std::path::PathBuf;

use serde::Serialize;
use sluice_shared::Diagnostic;
use sluice_shared::loader::{FileKind, LoadedFile, PipelineSet, load_paths};
use sluice_shared::validate::{ValidateOptions, node_order};

use crate::cli::ValidateArgs;
use crate::exit::Exit;

/// Where plugins live when `--plugins` is not given.
fn default_plugin_dir() -> PathBuf {
    let system = PathBuf::from("/usr/lib/sluice/plugins");
    if system.is_dir() {
        return system;
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map_or(system, |d| d.join("sluice/plugins"))
}

#[derive(Serialize)]
struct FileReport<'a> {
    file: &'a std::path::Path,
    valid: bool,
    kind: &'a FileKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<Vec<String>>>,
    diagnostics: &'a [Diagnostic],
}

#[derive(Serialize)]
struct Report<'a> {
    valid: bool,
    files: Vec<FileReport<'a>>,
}

/// Runs the command.
pub fn run(args: &ValidateArgs, json: bool) -> anyhow::Result<Exit> {
    let plugin_dir = args.plugins.clone().unwrap_or_else(default_plugin_dir);
    let opts = ValidateOptions::with_plugin_dir(&plugin_dir);
    let set: PipelineSet = load_paths(&args.paths, &opts);
    if json {
        let files = set.files.iter().map(file_report).collect();
        let report = Report {
            valid: set.is_valid(),
            files,
        };
        crate::output::emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        crate::output::emit(&human(&set))?;
    }
    Ok(if set.is_valid() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn file_report(f: &LoadedFile) -> FileReport<'_> {
    let order = f.pipeline.as_ref().and_then(node_order);
    let (order, layers) = match order {
        Some((o, l)) => (Some(o), Some(l)),
        None => (None, None),
    };
    FileReport {
        file: &f.path,
        valid: f.is_valid(),
        kind: &f.kind,
        name: f.name.as_deref(),
        order,
        layers,
        diagnostics: &f.diagnostics,
    }
}

fn human(set: &PipelineSet) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut errors = 0;
    let mut warnings = 0;
    for f in &set.files {
        for d in &f.diagnostics {
            if d.is_error() {
                errors += 1;
            } else {
                warnings += 1;
            }
            let _ = writeln!(out, "{d}");
        }
        if f.is_valid() {
            let what = match f.kind {
                FileKind::Template => "template",
                _ => "pipeline",
            };
            let name = f.name.as_deref().unwrap_or("?");
            let layers = f.pipeline.as_ref().and_then(node_order).map(|(_, l)| l);
            let count: usize = layers.iter().flatten().map(Vec::len).sum();
            let _ = writeln!(
                out,
                "{}: ok: {what} '{name}', {count} node{}",
                f.path.display(),
                if count == 1 { "" } else { "s" }
            );
            if let Some(layers) = layers {
                let shown: Vec<String> = layers
                    .iter()
                    .map(|l| {
                        if l.len() == 1 {
                            l[0].clone()
                        } else {
                            format!("{{{}}}", l.join(", "))
                        }
                    })
                    .collect();
                let _ = writeln!(out, "  order: {}", shown.join(" -> "));
            }
        }
    }
    let files = set.files.len();
    let invalid = set.files.iter().filter(|f| !f.is_valid()).count();
    if invalid == 0 {
        let _ = writeln!(
            out,
            "{files} file{} valid{}",
            if files == 1 { "" } else { "s" },
            if warnings > 0 {
                format!(", {warnings} warning(s)")
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            out,
            "{invalid} of {files} file{} invalid: {errors} error(s), {warnings} warning(s)",
            if files == 1 { "" } else { "s" }
        );
    }
    out
}
