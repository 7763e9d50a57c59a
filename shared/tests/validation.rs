//! The invalid-pipeline corpus: one file per error class, in every syntax where
//! the class depends on it. Each must report exactly the expected error at the
//! expected line and column; the example pipelines must all validate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sluice_shared::loader::{FileKind, load_paths};
use sluice_shared::validate::ValidateOptions;

struct Expect {
    file: &'static str,
    line: Option<u32>,
    column: Option<u32>,
    message: &'static str,
    hint: Option<&'static str>,
}

const fn e(
    file: &'static str,
    line: u32,
    column: u32,
    message: &'static str,
    hint: Option<&'static str>,
) -> Expect {
    Expect {
        file,
        line: Some(line),
        column: Some(column),
        message,
        hint,
    }
}

const EXPECTED: &[Expect] = &[
    e(
        "duplicate_id.yaml",
        5,
        9,
        "duplicate node id 'fetch' (first defined on line 2)",
        None,
    ),
    e(
        "duplicate_id.toml",
        7,
        6,
        "duplicate node id 'fetch' (first defined on line 2)",
        None,
    ),
    e(
        "duplicate_id.json",
        4,
        13,
        "duplicate node id 'fetch' (first defined on line 3)",
        None,
    ),
    e(
        "unknown_needs.yaml",
        7,
        13,
        "unknown node 'fetc' in needs",
        Some("did you mean 'fetch'?"),
    ),
    e(
        "unknown_needs.toml",
        9,
        10,
        "unknown node 'fetc' in needs",
        Some("did you mean 'fetch'?"),
    ),
    e(
        "unknown_needs.json",
        4,
        48,
        "unknown node 'fetc' in needs",
        Some("did you mean 'fetch'?"),
    ),
    e("cycle.yaml", 8, 5, "cycle in needs: b -> c -> a -> b", None),
    e(
        "cycle.toml",
        10,
        1,
        "cycle in needs: b -> c -> a -> b",
        None,
    ),
    e(
        "cycle.json",
        4,
        35,
        "cycle in needs: b -> c -> a -> b",
        None,
    ),
    e(
        "unknown_kind.yaml",
        3,
        11,
        "unknown node kind 'htp'",
        Some("did you mean 'http'?"),
    ),
    e(
        "unknown_kind.toml",
        3,
        8,
        "unknown node kind 'htp'",
        Some("did you mean 'http'?"),
    ),
    e(
        "unknown_kind.json",
        1,
        36,
        "unknown node kind 'htp'",
        Some("did you mean 'http'?"),
    ),
    e(
        "missing_field.yaml",
        2,
        5,
        "missing required field 'url' in an http node",
        None,
    ),
    e(
        "missing_field.toml",
        1,
        1,
        "missing required field 'url' in an http node",
        None,
    ),
    e(
        "mistyped_field.yaml",
        2,
        13,
        "invalid value for 'retry.attempts': invalid type: string \"three\", expected u32",
        None,
    ),
    e(
        "mistyped_field.toml",
        2,
        12,
        "invalid value for 'retry.attempts': invalid type: string \"three\", expected u32",
        None,
    ),
    e(
        "mistyped_field.json",
        3,
        17,
        "invalid value for 'retry.attempts': invalid type: string \"three\", expected u32",
        None,
    ),
    e(
        "unknown_field.yaml",
        4,
        5,
        "unknown field 'urll' in an http node",
        Some("did you mean 'url'?"),
    ),
    e(
        "unknown_field.toml",
        4,
        1,
        "unknown field 'urll' in an http node",
        Some("did you mean 'url'?"),
    ),
    e(
        "unknown_field.json",
        6,
        7,
        "unknown field 'urll' in an http node",
        Some("did you mean 'url'?"),
    ),
    e(
        "unknown_top_field.yaml",
        1,
        1,
        "unknown field 'descripton' in the pipeline",
        Some("did you mean 'description'?"),
    ),
    e(
        "template_syntax.yaml",
        4,
        10,
        "template error: syntax error: unexpected end of input, expected end of variable block",
        None,
    ),
    e(
        "template_unknown_node.yaml",
        9,
        14,
        "template reads unknown node 'fetc'",
        Some("did you mean 'fetch'?"),
    ),
    e(
        "template_not_upstream.yaml",
        8,
        14,
        "template reads node 'fetch', which is not upstream of 'post'",
        Some("add 'fetch' to this node's needs (directly or through another node)"),
    ),
    e(
        "template_undeclared_input.yaml",
        6,
        10,
        "template reads undeclared input 'topc'",
        Some("did you mean 'topic'?"),
    ),
    e(
        "template_undeclared_input.json",
        4,
        44,
        "template reads undeclared input 'topc'",
        Some("did you mean 'topic'?"),
    ),
    e(
        "shell_single_quoted.yaml",
        6,
        10,
        "`{{ inputs.who }}` is inside single quotes, where the shell expands nothing (line 1 of the script)",
        Some(
            "move it outside the single quotes, e.g. 'text '\"{{ inputs.who }}\"' more', or use double quotes: \"text {{ inputs.who }} more\"",
        ),
    ),
    e(
        "shell_single_quoted.toml",
        8,
        7,
        "`{{ inputs.who }}` is inside single quotes",
        None,
    ),
    e(
        "shell_single_quoted.json",
        4,
        45,
        "`{{ inputs.who }}` is inside single quotes",
        None,
    ),
    e(
        "shell_quoted_heredoc.yaml",
        7,
        7,
        "`{{ inputs.version }}` is in a heredoc with a quoted delimiter (<<'EOF'), where the shell expands nothing (line 2 of the script)",
        Some(
            "unquote the delimiter (<<EOF instead of <<'EOF'): the value still arrives intact; write other $ and ` in the body as \\$ and \\`",
        ),
    ),
    e(
        "shell_arithmetic.yaml",
        6,
        10,
        "`{{ inputs.n }}` is inside arithmetic ($(( )), (( )), $[ ], let, an array subscript, ${s:offset:length} or a [[ … -eq … ]] test), where the shell evaluates the value as an expression (line 1 of the script)",
        Some(
            "assign it first and check it is a number: n={{ inputs.n }}; case $n in ''|*[!0-9]*) exit 2;; esac; echo $((n + 1))",
        ),
    ),
    e(
        "shell_subscript.yaml",
        8,
        7,
        "`{{ inputs.n }}` is inside arithmetic ($(( )), (( )), $[ ], let, an array subscript, ${s:offset:length} or a [[ … -eq … ]] test), where the shell evaluates the value as an expression (line 2 of the script)",
        Some(
            "assign it first and check it is a number: n={{ inputs.n }}; case $n in ''|*[!0-9]*) exit 2;; esac; echo $((n + 1))",
        ),
    ),
    e(
        "shell_escaped.yaml",
        6,
        10,
        "`{{ inputs.v }}` is right after a backslash, which stops the shell expanding it",
        Some("remove the backslash: the value arrives intact without it"),
    ),
    e(
        "shell_reserved_env.yaml",
        6,
        7,
        "`env` may not set 'SLUICE_T_0': the SLUICE_T_ prefix is reserved: it carries template values into `run`",
        Some("rename the variable"),
    ),
    e(
        "template_unknown_variable.yaml",
        4,
        10,
        "template reads unknown variable 'input'",
        Some("did you mean 'inputs'?"),
    ),
    e(
        "bad_expression.yaml",
        8,
        16,
        "expression error: syntax error: unexpected end of input, expected expression",
        None,
    ),
    e(
        "bad_cron.yaml",
        2,
        11,
        "invalid cron expression '0 25 * * *'",
        None,
    ),
    e(
        "bad_cron.toml",
        2,
        8,
        "invalid cron expression '0 7 * * MON-FRY'",
        None,
    ),
    e(
        "six_field_cron.yaml",
        2,
        11,
        "invalid cron expression '0 0 7 * * *': expected 5 fields, found 6",
        Some(
            "six fields mean a leading seconds field; add `seconds: true` to the trigger if that is what you want",
        ),
    ),
    e(
        "bad_timezone.yaml",
        3,
        15,
        "unknown time zone 'Europe/Berln'",
        Some("did you mean 'Europe/Berlin'?"),
    ),
    e(
        "bad_timezone.json",
        2,
        50,
        "unknown time zone 'Mars/Olympus'",
        None,
    ),
    e(
        "bad_duration.yaml",
        1,
        10,
        "invalid value for 'timeout': invalid duration '5 minits': not a duration",
        None,
    ),
    e(
        "bad_duration.toml",
        5,
        11,
        "invalid value for 'timeout': invalid duration 30: a unit is missing",
        None,
    ),
    e(
        "approval_unreachable.yaml",
        5,
        5,
        "min_approvals is 3 but only 2 approver(s) are listed, so it can never be met",
        Some("list more approvers, add a @group, or lower min_approvals"),
    ),
    e(
        "approval_remind_too_often.yaml",
        4,
        5,
        "remind_every is 10ms; reminders need at least 1s between them",
        Some("people need minutes, not milliseconds: try 30m"),
    ),
    e(
        "webhook_no_secret.yaml",
        2,
        5,
        "webhook auth 'hmac' names no secret",
        None,
    ),
    e(
        "webhook_no_secret.json",
        3,
        6,
        "webhook auth 'bearer' names no secret",
        None,
    ),
    e(
        "webhook_secret_value.yaml",
        2,
        36,
        "'whsec_…' is not a secret name",
        None,
    ),
    Expect {
        file: "empty.yaml",
        line: None,
        column: None,
        message: "empty pipeline: the file defines nothing",
        hint: None,
    },
    e(
        "empty.toml",
        1,
        1,
        "empty pipeline: the file defines nothing",
        None,
    ),
    e(
        "empty.json",
        1,
        1,
        "empty pipeline: the file defines nothing",
        None,
    ),
    e("no_nodes.yaml", 1, 1, "empty pipeline: no nodes", None),
    e(
        "syntax.yaml",
        4,
        10,
        "invalid YAML: unclosed bracket '['",
        None,
    ),
    e(
        "syntax.toml",
        3,
        8,
        "invalid TOML: extra `=`, expected nothing",
        None,
    ),
    e("syntax.json", 3, 56, "invalid JSON: expected value", None),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/invalid")
}

fn no_plugins() -> ValidateOptions {
    ValidateOptions::with_plugin_dir(Path::new("/nonexistent/sluice-plugins"))
}

#[test]
fn every_invalid_file_reports_its_error_exactly_where_it_is() {
    let mut failures = Vec::new();
    for x in EXPECTED {
        let path = corpus_dir().join(x.file);
        let set = load_paths(std::slice::from_ref(&path), &no_plugins());
        let file = &set.files[0];
        let errors: Vec<_> = file.diagnostics.iter().filter(|d| d.is_error()).collect();
        if errors.len() != 1 {
            failures.push(format!(
                "{}: expected 1 error, got {}: {:#?}",
                x.file,
                errors.len(),
                errors
            ));
            continue;
        }
        let d = errors[0];
        let ok = d.line == x.line
            && d.column == x.column
            && d.message.starts_with(x.message)
            && x.hint.is_none_or(|h| d.hint.as_deref() == Some(h))
            && d.file == path;
        if !ok {
            failures.push(format!(
                "{}: expected {:?}:{:?} {:?} (hint {:?}), got {}",
                x.file, x.line, x.column, x.message, x.hint, d
            ));
        }
        assert!(!file.is_valid() && file.pipeline.is_none());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_corpus_file_has_an_expectation() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = EXPECTED.iter().map(|x| x.file.to_owned()).collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn all_problems_in_a_file_are_reported_at_once() {
    let src = "\
inputs:
  topic: { type: string }
triggers:
  - cron: \"0 25 * * *\"
  - webhook: { auth: hmac }
nodes:
  - id: fetch
    kind: http
    urll: https://x
  - id: sum
    kind: llm
    needs: [fetc]
    prompt: \"{{ inputs.topc }}\"
  - id: a
    kind: shell
    needs: [b]
    run: echo
  - id: b
    kind: shell
    needs: [a]
    run: echo
    timeout: 5 minits
";
    let file = sluice_shared::load_source(Path::new("many.yaml"), src, &no_plugins());
    let messages: Vec<String> = file.diagnostics.iter().map(|d| d.message.clone()).collect();
    for wanted in [
        "unknown field 'urll'",
        "unknown node 'fetc' in needs",
        "template reads undeclared input 'topc'",
        "cycle in needs",
        "invalid duration '5 minits'",
        "invalid cron expression",
        "webhook auth 'hmac' names no secret",
        "required input 'topic' is not given",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(wanted)),
            "missing {wanted:?} in {messages:#?}"
        );
    }
    // Source order, like a compiler.
    let lines: Vec<u32> = file.diagnostics.iter().filter_map(|d| d.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn example_pipelines_all_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pipelines");
    let set = load_paths(&[dir], &no_plugins());
    assert!(set.files.len() >= 5, "expected at least five examples");
    for f in &set.files {
        assert!(f.is_valid(), "{}: {:#?}", f.path.display(), f.diagnostics);
        assert!(
            f.diagnostics.is_empty(),
            "{}: warnings {:#?}",
            f.path.display(),
            f.diagnostics
        );
    }
    let pipelines = set
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Pipeline)
        .count();
    assert_eq!(pipelines, set.pipelines().count());
}

#[test]
fn demo_pipelines_validate_without_warnings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo");
    let set = load_paths(&[dir], &no_plugins());
    assert!(!set.files.is_empty());
    for f in &set.files {
        assert!(
            f.is_valid() && f.diagnostics.is_empty(),
            "{}: {:#?}",
            f.path.display(),
            f.diagnostics
        );
    }
}

#[test]
fn the_same_pipeline_reads_the_same_in_all_three_syntaxes() {
    let yaml = "inputs:\n  n: { type: integer, default: 2 }\nnodes:\n  - id: a\n    kind: shell\n    run: echo {{ inputs.n }}\n  - id: b\n    kind: transform\n    needs: [a]\n    output: { x: \"{{ nodes.a.output.stdout }}\" }\n";
    let toml = "[inputs.n]\ntype = \"integer\"\ndefault = 2\n\n[[nodes]]\nid = \"a\"\nkind = \"shell\"\nrun = \"echo {{ inputs.n }}\"\n\n[[nodes]]\nid = \"b\"\nkind = \"transform\"\nneeds = [\"a\"]\noutput = { x = \"{{ nodes.a.output.stdout }}\" }\n";
    let json = r#"{"inputs": {"n": {"type": "integer", "default": 2}}, "nodes": [{"id": "a", "kind": "shell", "run": "echo {{ inputs.n }}"}, {"id": "b", "kind": "transform", "needs": ["a"], "output": {"x": "{{ nodes.a.output.stdout }}"}}]}"#;
    let opts = no_plugins();
    let p: Vec<_> = [("p.yaml", yaml), ("p.toml", toml), ("p.json", json)]
        .iter()
        .map(|(name, src)| {
            let f = sluice_shared::load_source(Path::new(name), src, &opts);
            assert!(f.is_valid(), "{name}: {:#?}", f.diagnostics);
            serde_json::to_value(f.pipeline.unwrap()).unwrap()
        })
        .collect();
    assert_eq!(p[0], p[1]);
    assert_eq!(p[1], p[2]);
}

#[test]
fn templates_are_instantiated_with_checked_params() {
    let dir = tempfile_dir();
    std::fs::write(dir.join("tpl.yaml"), "params:\n  src: { type: string }\n  keep: { type: integer, default: 7 }\nnodes:\n  - id: b\n    kind: shell\n    run: backup {{ params.src }} {{ params.keep }}\n").unwrap();
    std::fs::write(
        dir.join("good.yaml"),
        "template: tpl\nparams: { src: /home }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "template: tpl\nparams: { srcc: /home }\n",
    )
    .unwrap();
    std::fs::write(dir.join("missing.yaml"), "template: tlp\n").unwrap();
    let set = load_paths(std::slice::from_ref(&dir), &no_plugins());
    let by_name = |n: &str| {
        set.files
            .iter()
            .find(|f| f.name.as_deref() == Some(n))
            .unwrap()
    };
    let good = by_name("good");
    assert!(good.is_valid(), "{:#?}", good.diagnostics);
    let p = good.pipeline.as_ref().unwrap();
    assert_eq!(p.params["src"], "/home");
    assert_eq!(p.params["keep"], 7);
    assert_eq!(p.nodes.len(), 1);
    assert_eq!(by_name("tpl").kind, FileKind::Template);
    let bad: Vec<_> = by_name("bad")
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        bad.iter()
            .any(|d| d.contains("unknown param 'srcc'") && d.contains("did you mean 'src'?")),
        "{bad:#?}"
    );
    assert!(
        bad.iter()
            .any(|d| d.contains("required param 'src' is not given")),
        "{bad:#?}"
    );
    // An instance of a broken template is not runnable.
    std::fs::write(dir.join("broken-tpl.yaml"), "params:\n  a: { type: string }\nnodes:\n  - id: b\n    kind: shell\n    run: echo {{ params.nope }}\n").unwrap();
    std::fs::write(
        dir.join("uses-broken.yaml"),
        "template: broken-tpl\nparams: { a: x }\n",
    )
    .unwrap();
    let set2 = load_paths(std::slice::from_ref(&dir), &no_plugins());
    let uses = set2
        .files
        .iter()
        .find(|f| f.name.as_deref() == Some("uses-broken"))
        .unwrap();
    assert!(!uses.is_valid() && uses.pipeline.is_none());
    assert!(
        uses.diagnostics.iter().any(
            |d| d.message.contains("template 'broken-tpl'") && d.message.contains("has errors")
        ),
        "{:#?}",
        uses.diagnostics
    );
    let missing: Vec<_> = by_name("missing")
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        missing
            .iter()
            .any(|d| d.contains("unknown template 'tlp'") && d.contains("did you mean 'tpl'?")),
        "{missing:#?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn two_files_claiming_one_name_fail_the_later() {
    let dir = tempfile_dir();
    let node = "nodes:\n  - id: a\n    kind: shell\n    run: echo\n";
    std::fs::write(dir.join("a.yaml"), format!("name: same\n{node}")).unwrap();
    std::fs::write(dir.join("b.yaml"), format!("name: same\n{node}")).unwrap();
    let set = load_paths(std::slice::from_ref(&dir), &no_plugins());
    assert!(set.files[0].is_valid());
    let d = &set.files[1].diagnostics[0];
    assert!(
        d.message
            .starts_with("pipeline name 'same' is already used by"),
        "{d}"
    );
    assert_eq!((d.line, d.column), (Some(1), Some(1)));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn known_plugins_are_accepted_and_unknown_ones_named() {
    let dir = tempfile_dir();
    std::fs::write(dir.join("sluice-node-s3sync"), "#!/bin/sh\n").unwrap();
    let opts = ValidateOptions::with_plugin_dir(&dir);
    let src = "nodes:\n  - id: up\n    kind: s3sync\n    config: { bucket: \"{{ inputs.b }}\" }\ninputs: { b: { default: x } }\n";
    let f = sluice_shared::load_source(Path::new("p.yaml"), src, &opts);
    assert!(f.is_valid(), "{:#?}", f.diagnostics);
    let f =
        sluice_shared::load_source(Path::new("p.yaml"), &src.replace("s3sync", "s3synk"), &opts);
    let d = &f.diagnostics[0];
    assert_eq!(d.message, "unknown node kind 's3synk'");
    assert_eq!(d.hint.as_deref(), Some("did you mean 's3sync'?"));
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-validation-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn shell_values_that_expand_pass_and_safe_is_a_warning() {
    let src = r#"inputs:
  v: { type: string, default: x }
nodes:
  - id: a
    kind: shell
    run: |
      echo {{ inputs.v }} "a {{ inputs.v }}" x={{ inputs.v }} "$(echo {{ inputs.v }})"
      cat <<EOF
      {{ inputs.v }} '{{ inputs.v }}'
      EOF
      {% if inputs.v %}cat <<< {{ inputs.v }}{% endif %}
      echo 'it''s' {{ inputs.v | upper | safe }} # '{{ inputs.v }}
    inherit_env: [HOME, SLUICE_T_1]
"#;
    let file = sluice_shared::load_source(Path::new("s.yaml"), src, &no_plugins());
    let shown: Vec<String> = file.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(file.diagnostics.len(), 2, "{shown:#?}");
    let warning = &file.diagnostics[0];
    assert!(!warning.is_error());
    assert_eq!(
        warning.message,
        "`{{ inputs.v | upper | safe }}` is written into the script as code (line 6 of the script)"
    );
    let error = &file.diagnostics[1];
    assert!(error.is_error());
    assert_eq!(
        error.message,
        "`inherit_env` may not pass 'SLUICE_T_1': the SLUICE_T_ prefix is reserved: it carries template values into `run`"
    );
    assert_eq!(error.line, Some(13));
}

#[test]
fn every_bad_shell_value_in_a_script_is_reported() {
    let src = "inputs:\n  v: { type: string, default: x }\nnodes:\n  - id: a\n    kind: shell\n    run: \"echo '{{ inputs.v }}'\\necho $'{{ inputs.v }}' \\\"{{ inputs.v }}\\\"\"\n";
    let file = sluice_shared::load_source(Path::new("s.yaml"), src, &no_plugins());
    let messages: Vec<&str> = file
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "`{{ inputs.v }}` is inside single quotes, where the shell expands nothing (line 1 of the script)",
            "`{{ inputs.v }}` is inside $'…' quotes, where the shell expands nothing (line 2 of the script)",
        ]
    );
}

#[test]
fn values_a_second_shell_parses_draw_a_warning() {
    let warned = |run: &str| {
        let src = format!(
            "inputs:\n  v: {{ type: string, default: x }}\nnodes:\n  - id: a\n    kind: shell\n    run: {}\n",
            serde_json::to_string(run).unwrap()
        );
        let f = sluice_shared::load_source(Path::new("r.yaml"), &src, &no_plugins());
        assert!(f.is_valid(), "{run}: {:#?}", f.diagnostics);
        f.diagnostics
            .iter()
            .filter(|d| d.message.contains("parses as a script again"))
            .count()
    };
    for run in [
        "sh -c \"echo {{ inputs.v }}\"",
        "cd /tmp && /bin/bash -c \"ls {{ inputs.v }}\"",
        "eval \"x={{ inputs.v }}\"",
        "ssh host ls {{ inputs.v }}",
        "sudo su -c \"id {{ inputs.v }}\" bob",
    ] {
        assert_eq!(warned(run), 1, "{run}");
    }
    for run in [
        "sh -c 'printf \"%s\" \"$1\"' sh {{ inputs.v }}",
        "ssh host \"ls {{ inputs.v | quote }}\"",
        "echo \"use ssh or sh -c: {{ inputs.v }}\"",
        "echo hi; printf '%s' \"{{ inputs.v }}\"",
    ] {
        assert_eq!(warned(run), 0, "{run}");
    }
    let src = "inputs:\n  v: { type: string, default: x }\nnodes:\n  - id: a\n    kind: shell\n    run: ssh web ls {{ inputs.v }}\n";
    let f = sluice_shared::load_source(Path::new("r.yaml"), src, &no_plugins());
    let d = &f.diagnostics[0];
    assert_eq!(
        d.message,
        "`{{ inputs.v }}` goes into text that `ssh` parses as a script again, where the value becomes code (line 1 of the script)"
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("quote it for that shell: {{ inputs.v | quote }}")
    );
}
