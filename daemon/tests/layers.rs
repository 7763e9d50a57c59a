//! The daemon's modules import one way: each top-level module of `src/` may
//! use only modules in layers below its own. Read from the source tree (every
//! `crate::<module>` path outside comments and `#[cfg(test)]` code), so a new
//! import that points up, or a new module nobody placed, fails here.
//!
//! What the layers say, bottom up: `nodes` and `notify` know nothing of the
//! store, the engine, the triggers or the socket; `notify` sits below `nodes`
//! (nodes → notify → the HTTP helpers and the attempt log, no cycle); the
//! `store` imports nothing of the crate; the `engine` never imports `api` or
//! `triggers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom up. A module may import modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Leaves: the OS, secrets and helpers with no crate imports.
    &[
        "fdlimit",
        "http_client",
        "procstat",
        "secrets",
        "systemd",
        "telemetry",
    ],
    // A node attempt's log (lines redacted with the secrets).
    &["attempt_log"],
    // Model providers for `llm` nodes.
    &["llm"],
    // Delivery of notifications: below the nodes that send them.
    &["notify"],
    // Node kinds: get a context, know nothing of the store or the listeners.
    &["nodes"],
    // The store knows nothing above it.
    &["store"],
    &["audit", "metrics", "registry"],
    &["limits"],
    // sluiced.toml: the types of the sections it holds.
    &["config"],
    // The engine calls nodes and the store, never the api or the triggers.
    &["engine", "logging", "retention"],
    &["triggers", "watcher"],
    &["api", "prometheus", "watchdog"],
    // The state directory's checks name its owner (api::identity).
    &["statedir"],
    // The composition root: `Daemon::start` and its handle.
    &["daemon"],
];

/// Imports that point up, each with why it is allowed. Keep this short.
const EXCEPTIONS: &[(&str, &str, &str)] = &[(
    "triggers",
    "prometheus",
    "the webhook listener serves GET /metrics, whose exporter reads the triggers' counters",
)];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, test-only files left out.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot list {}", dir.display());
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("tests.rs" | "test_support.rs")
            )
        {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`engine` for `src/engine/driver.rs`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The source without comments and without `#[cfg(test)]` items (a `mod x;`
/// line or a braced block).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
                opened |= item.contains('{');
                if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let line = line.split(" // ").next().unwrap_or(line);
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The crate modules `code` names: `crate::x::...` and `crate::{x, y::z}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the group's top level names modules.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        out.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Per module, the modules it imports and the first file that does.
fn graph() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    all.sort();
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for file in all {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source file");
        let entry = graph.entry(module.clone()).or_default();
        for imported in imports(&code(&text)) {
            if imported != module {
                entry.entry(imported).or_insert_with(|| file.clone());
            }
        }
    }
    graph
}

#[test]
fn every_module_imports_only_layers_below_it() {
    let graph = graph();
    assert!(
        graph.len() >= 20,
        "found only {} modules under src/",
        graph.len()
    );
    let mut wrong = Vec::new();
    for (module, imported) in &graph {
        let Some(own) = layer_of(module) else {
            wrong.push(format!(
                "module '{module}' is in no layer: place it in LAYERS"
            ));
            continue;
        };
        for (target, file) in imported {
            let allowed = EXCEPTIONS
                .iter()
                .any(|(from, to, _)| from == module && to == target);
            match layer_of(target) {
                _ if allowed => {}
                Some(layer) if layer < own => {}
                Some(_) => wrong.push(format!(
                    "{module} imports {target} ({}), which is not below it",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{module} imports '{target}' ({}), which is no module of the crate",
                    file.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_arrows_the_design_names_run_one_way() {
    let graph = graph();
    let imports_of = |m: &str| -> BTreeSet<&str> {
        graph
            .get(m)
            .map(|i| i.keys().map(String::as_str).collect())
            .unwrap_or_default()
    };
    // The scan finds what is there: nodes do use notify, the engine nodes.
    assert!(imports_of("nodes").contains("notify"));
    assert!(imports_of("engine").contains("nodes"));
    assert!(imports_of("notify").contains("http_client"));
    for (from, never) in [
        ("notify", &["nodes", "engine"][..]),
        (
            "nodes",
            &["engine", "store", "api", "triggers", "registry"][..],
        ),
        ("engine", &["api", "triggers", "prometheus"][..]),
    ] {
        let found = imports_of(from);
        for n in never {
            assert!(!found.contains(n), "{from} imports {n}");
        }
    }
    assert!(
        imports_of("store").is_empty(),
        "the store imports {:?}",
        imports_of("store")
    );
}

#[test]
fn the_scanner_reads_paths_groups_and_skips_comments_and_tests() {
    let text = "use crate::{engine::Engine, nodes::{self, LogSink}};\n\
                // use crate::api;\n\
                let x = crate::store::Store::open(); // crate::triggers\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::registry;\n}\n\
                fn after() { crate::limits::user_key(None); }\n";
    let found = imports(&code(text));
    let want: BTreeSet<String> = ["engine", "nodes", "store", "limits"]
        .map(String::from)
        .into();
    assert_eq!(found, want);
}
