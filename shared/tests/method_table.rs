//! The method table is the only place a method's name is spelled, and
//! docs/protocol.md describes exactly its methods with their roles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use sluice_shared::method::{ALL, MethodInfo};
use sluice_shared::protocol::Role;

/// The table module itself.
const TABLE: &str = "shared/src/method.rs";

/// Files that may spell method names, and why. Keep it tiny.
const ALLOWED: &[(&str, &str)] = &[
    // Unit tests of the frame decoder feed it raw request bytes.
    ("daemon/src/api/frame.rs", "raw frames in its decoder tests"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds the shared crate")
        .to_path_buf()
}

/// Every `.rs` file under the crates' `src`, `tests` and `benches`, relative to the workspace.
fn sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = workspace();
    let mut files = Vec::new();
    for krate in ["shared", "daemon", "tui"] {
        for dir in ["src", "tests", "benches"] {
            walk(&root.join(krate).join(dir), &mut files);
        }
    }
    let mut rel: Vec<String> = files
        .iter()
        .filter_map(|p| p.strip_prefix(&root).ok())
        .map(|p| p.display().to_string())
        .collect();
    rel.sort();
    rel
}

/// Patterns that find a method's name spelled in code. A dotted name
/// (`runs.get`) is a method wherever it is a string; a bare word (`status`,
/// `hello`) is also a CLI subcommand, a pipeline, a JSON key, so it counts
/// only where a method goes: after `method`, or first in a call.
fn spellings(m: &MethodInfo) -> Vec<Regex> {
    let name = regex::escape(m.name);
    let mut patterns = vec![
        // JSON text, as written or escaped inside a Rust string.
        format!(r#""method\\?"\s*:\s*\\?"{name}\\?""#),
        format!(r#"\bmethod\s*(:|==?|!=)\s*"{name}""#),
        format!(r#"\b(call|send|new)\w*(::<[^>]*>)?\(\s*([^,()"]*,\s*)?"{name}""#),
    ];
    if m.name.contains('.') {
        patterns.push(format!(r#""{name}""#));
    }
    patterns
        .iter()
        .map(|p| Regex::new(p).expect("a valid pattern"))
        .collect()
}

#[test]
fn no_method_name_is_spelled_outside_the_table() {
    let files = sources();
    assert!(
        files.iter().any(|f| f == TABLE) && files.len() > 50,
        "the walk found the sources: {files:?}"
    );
    let patterns: Vec<(MethodInfo, Vec<Regex>)> = ALL.iter().map(|m| (*m, spellings(m))).collect();
    let mut found = Vec::new();
    for file in &files {
        if file == TABLE || ALLOWED.iter().any(|(f, _)| f == file) {
            continue;
        }
        let text = std::fs::read_to_string(workspace().join(file)).expect("readable source");
        for (n, name) in method_match_arms(&text) {
            found.push(format!("{file}:{n}: {name} in a match on a method"));
        }
        for (n, line) in text.lines().enumerate() {
            for (m, res) in &patterns {
                if res.iter().any(|r| r.is_match(line)) {
                    found.push(format!("{file}:{}: {} in `{}`", n + 1, m.name, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "method names outside the table (use the method's type, e.g. RunsGet::NAME):\n{}",
        found.join("\n")
    );
}

/// Arms of a `match` on something called method whose string pattern is a
/// method's name, found in a whole file (the arms of such a match spell names).
fn method_match_arms(text: &str) -> Vec<(usize, &'static str)> {
    let head = Regex::new(r"match\s+[^{;]*\bmethod\b[^{;]*\{").expect("pattern");
    let arm = Regex::new(r#""([a-z.]+)"\s*(\|[^=]*)?=>"#).expect("pattern");
    let mut found = Vec::new();
    for h in head.find_iter(text) {
        let end = (h.end() + 3000).min(text.len());
        let end = (end..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        for c in arm.captures_iter(&text[h.end()..end]) {
            let at = h.end() + c.get(0).map_or(0, |m| m.start());
            if let Some(m) = ALL.iter().find(|m| m.name == &c[1]) {
                found.push((text[..at].lines().count(), m.name));
            }
        }
    }
    found
}

#[test]
fn the_patterns_catch_the_ways_a_name_was_spelled() {
    use sluice_shared::method::{Hello, Method, Metrics, RunsGet, Status, Subscribe};
    let find = |name: &str, line: &str| {
        let m = ALL.iter().find(|m| m.name == name).expect("a method");
        spellings(m).iter().any(|r| r.is_match(line))
    };
    let (get, status) = (RunsGet::NAME, Status::NAME);
    assert!(find(
        get,
        &format!(r#"c.call("{get}", json!({{ "id": 1 }}))"#)
    ));
    assert!(find(get, &format!(r#"let x = "{get}";"#)));
    assert!(find(status, &format!(r#"c.call("{status}", json!({{}}))"#)));
    assert!(find(
        status,
        &format!(r#"call(Tag::Status, "{status}", json!({{}}))"#)
    ));
    assert!(find(
        status,
        &format!(r#"Request::new(1, "{status}", Value::Null)"#)
    ));
    let hello = Hello::NAME;
    assert!(find(
        hello,
        &format!(r##"br#"{{"jsonrpc":"2.0","method":"{hello}"}}"#"##)
    ));
    assert!(find(status, &format!(r#""{{\"method\":\"{status}\"}}""#)));
    let metrics = Metrics::NAME;
    assert!(find(metrics, &format!(r#"if *method == "{metrics}""#)));
    let arms = format!(
        "match request.method.as_str() {{\n    \"{hello}\" => hello(),\n    \"{}\" | \"x\" => {{}}\n}}",
        Subscribe::NAME
    );
    assert_eq!(method_match_arms(&arms), [(2, hello), (3, Subscribe::NAME)]);
    // A pipeline, a subcommand or a key of the same word is not a method.
    assert!(!find(hello, &format!(r#"json!({{ "name": "{hello}" }})"#)));
    assert!(!find(
        status,
        &format!(r#"d.sluice(&["{status}", "--json"])"#)
    ));
    assert!(!find(
        metrics,
        &format!(r#"reply(&mut app, Tag::Metrics, "{metrics}");"#)
    ));
    assert!(method_match_arms(&format!("match word {{ \"{metrics}\" => x }}")).is_empty());
}

/// Methods and roles as docs/protocol.md's role table gives them.
fn documented_roles(doc: &str) -> BTreeMap<String, Vec<Role>> {
    let name = Regex::new(r"`([a-z.]+)`").expect("pattern");
    let mut roles: BTreeMap<String, Vec<Role>> = BTreeMap::new();
    for line in doc.lines() {
        let line = line.trim();
        let role = [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| line.starts_with(&format!("| {} |", r.as_str())));
        let Some(role) = role else { continue };
        for c in name.captures_iter(line) {
            roles.entry(c[1].to_owned()).or_default().push(role);
        }
    }
    roles
}

/// Method names in the `###` headings of the "Methods" section.
fn documented_sections(doc: &str) -> Vec<String> {
    let Some((_, methods)) = doc.split_once("\n## Methods\n") else {
        return Vec::new();
    };
    let methods = methods.split("\n## ").next().unwrap_or_default();
    let role_note = Regex::new(r"\([^)]*\)").expect("pattern");
    let mut names = Vec::new();
    for line in methods.lines() {
        let Some(heading) = line.strip_prefix("### ") else {
            continue;
        };
        // "runs.cancel, runs.retry, runs.resolve (operator)", "subscribe / unsubscribe"
        let heading = role_note.replace_all(heading, "");
        names.extend(
            heading
                .split([',', '/'])
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        );
    }
    names
}

#[test]
fn the_protocol_document_lists_exactly_the_methods_with_their_roles() {
    let doc = std::fs::read_to_string(workspace().join("docs/protocol.md")).expect("the document");
    let roles = documented_roles(&doc);
    let mut problems = Vec::new();
    for m in ALL {
        match roles.get(m.name).map(Vec::as_slice) {
            Some([r]) if *r == m.role => {}
            Some(rs) => problems.push(format!(
                "{} is listed as {rs:?} in the role table; the table says {}",
                m.name,
                m.role.as_str()
            )),
            None => problems.push(format!("{} is missing from the role table", m.name)),
        }
    }
    for name in roles.keys() {
        if !ALL.iter().any(|m| m.name == name) {
            problems.push(format!("the role table lists {name}, which is no method"));
        }
    }
    let sections = documented_sections(&doc);
    for m in ALL {
        let n = sections.iter().filter(|s| *s == m.name).count();
        if n != 1 {
            problems.push(format!("{} has {n} sections under \"## Methods\"", m.name));
        }
    }
    for s in &sections {
        if !ALL.iter().any(|m| m.name == s) {
            problems.push(format!("a section describes {s}, which is no method"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
