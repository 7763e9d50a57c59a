//! The real `sluice` binary: `validate`, `cron next` and `schema`, with output and exit codes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    common::output_within(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_PLUGINS", "/nonexistent/plugins"),
        common::COMMAND_SECS,
        &format!("sluice {}", args.join(" ")),
    )
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn valid_examples_exit_zero_and_print_node_order() {
    let dir = repo("config/pipelines");
    let out = sluice(&["validate", dir.to_str().unwrap()]);
    let stdout = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok: pipeline 'hello', 3 nodes\n  order: greet -> count -> summary"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: template 'nightly-backup'"), "{stdout}");
    assert!(stdout.ends_with("10 files valid\n"), "{stdout}");
}

#[test]
fn invalid_file_prints_compiler_style_errors_and_exits_one() {
    let file = repo("shared/tests/corpus/invalid/unknown_needs.yaml");
    let out = sluice(&["validate", file.to_str().unwrap()]);
    let stdout = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let expected = format!(
        "{}:7:13: error: unknown node 'fetc' in needs (at nodes[1].needs[0])\n  = hint: did you mean 'fetch'?\n",
        file.display()
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(
        stdout.ends_with("1 of 1 file invalid: 1 error(s), 0 warning(s)\n"),
        "{stdout}"
    );
}

#[test]
fn json_output_parses_back_with_locations() {
    let good = repo("config/pipelines/hello.yaml");
    let bad = repo("shared/tests/corpus/invalid/cycle.toml");
    let out = sluice(&[
        "validate",
        "--json",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["valid"], false);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["valid"], true);
    assert_eq!(
        files[0]["order"],
        serde_json::json!(["greet", "count", "summary"])
    );
    assert_eq!(
        files[0]["layers"],
        serde_json::json!([["greet"], ["count"], ["summary"]])
    );
    let d = &files[1]["diagnostics"][0];
    assert_eq!(files[1]["valid"], false);
    assert_eq!(d["severity"], "error");
    assert_eq!(d["line"], 10);
    assert_eq!(d["column"], 1);
    assert_eq!(d["message"], "cycle in needs: b -> c -> a -> b");
}

#[test]
fn unreadable_path_is_an_error_not_a_crash() {
    let out = sluice(&["validate", "/nonexistent/pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).starts_with("/nonexistent/pipeline.yaml: error: cannot read file"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_arguments_are_a_usage_error() {
    let out = sluice(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cron_next_prints_rfc3339_with_offsets_across_dst() {
    let out = sluice(&[
        "cron",
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-28T12:00:00Z",
        "-n",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out),
        "2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n2026-03-31T02:30:00+02:00\n"
    );
    let out = sluice(&["cron", "next", "0 0 31 2 *", "-n", "1"]);
    assert_eq!(text(&out), "", "February 31st never comes");
    let out = sluice(&["cron", "next", "61 * * * *"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid cron expression"));
}

#[test]
fn schema_subcommand_matches_the_committed_schema() {
    let out = sluice(&["schema"]);
    let committed = std::fs::read_to_string(repo("config/pipeline.schema.json")).unwrap();
    assert_eq!(text(&out), committed);
}
