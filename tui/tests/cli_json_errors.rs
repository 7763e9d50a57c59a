//! Every subcommand's failure paths through the real `sluice` against a real
//! `sluiced`: the exit code, and under `--json` an error object on stdout
//! (`{"error": {"code", "exit", "message", "data"}}`) that agrees with it.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

const PIPELINES: &[(&str, &str)] = &[
    (
        "hello.yaml",
        "inputs:\n  n: { type: integer, default: 1 }\nnodes:\n  - id: greet\n    kind: shell\n    run: echo hello\n",
    ),
    (
        "gone.yaml",
        "nodes:\n  - id: a\n    kind: shell\n    run: echo a\n",
    ),
    ("broken.yaml", "nodes:\n  - id: a\n    kind: nope\n"),
];

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `args` with `--json`; checks the exit code is `exit` and stdout is
/// one error object naming it as `code`; returns the object.
fn json_error(d: &common::Daemon, args: &[&str], exit: i32, code: &str) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = d.sluice_cols(80, &all);
    let what = format!("sluice {}", all.join(" "));
    assert_eq!(
        o.status.code(),
        Some(exit),
        "{what}: {}{}",
        out(&o),
        err(&o)
    );
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}): {}", out(&o)));
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert_eq!(v["error"]["exit"], exit, "{what}: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert!(v["error"].get("data").is_some(), "{what}: {v}");
    // People still get the message on stderr.
    assert!(err(&o).contains("sluice: error: "), "{what}: {}", err(&o));
    v
}

#[test]
fn every_failure_is_an_exit_code_and_a_json_error_object() {
    let d = common::Daemon::started(PIPELINES, "");
    // Not found (3).
    let v = json_error(&d, &["run", "999"], 3, "not_found");
    assert_eq!(v["error"]["rpc_code"], -32001, "{v}");
    for args in [
        &["runs", "--pipeline", "nope"][..],
        &["logs", "999"],
        &["trigger", "nope"],
        &["cancel", "999"],
        &["retry", "999"],
        &["approve", "999"],
        &["reject", "999", "--reason", "no"],
        &["enable", "nope"],
        &["disable", "nope"],
        &["resolve", "999", "a", "retry"],
        &["pause", "nope"],
        &["resume", "nope"],
        &["limits", "explain", "999"],
    ] {
        json_error(&d, args, 3, "not_found");
    }
    let r = d.sluice_cols(80, &["runs", "--pipeline", "nope"]);
    assert!(err(&r).contains("no pipeline 'nope'"), "{}", err(&r));
    // Usage (2): ours and clap's.
    for args in [
        &["run", "abc"][..],
        &["runs", "--state", "bogus"],
        &["trigger", "hello", "-i", "n=abc"],
        &["trigger", "hello", "-i", "novalue"],
        &["resolve", "1", "a", "succeed", "--output", "{"],
        &["cron", "next", "0 25 * * *"],
        &["cron", "next", "@daily", "--after", "yesterday"],
        &["reject", "1"],
        &["frobnicate"],
    ] {
        json_error(&d, args, 2, "usage");
    }
    // Rejected files fail `errors` with and without --json; the JSON is the report.
    let e = d.sluice_cols(80, &["errors", "--json"]);
    assert_eq!(e.status.code(), Some(1), "{}", out(&e));
    let v: Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(v["diagnostics"][0]["severity"], "error", "{v}");
    assert_eq!(d.sluice_cols(80, &["errors"]).status.code(), Some(1));

    // A removed pipeline is not found for a trigger (as for a retry).
    std::fs::remove_file(d.dir.path().join("pipelines/gone.yaml")).unwrap();
    assert_eq!(d.sluice_cols(80, &["reload"]).status.code(), Some(0));
    let v = json_error(&d, &["trigger", "gone"], 3, "not_found");
    assert_eq!(v["error"]["data"]["reason"], "removed", "{v}");
    // A disabled one is a conflict (1) that says how to end it.
    assert_eq!(
        d.sluice_cols(80, &["disable", "hello"]).status.code(),
        Some(0)
    );
    let v = json_error(&d, &["trigger", "hello"], 1, "failure");
    assert_eq!(v["error"]["rpc_code"], -32004, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sluice enable hello")),
        "{v}"
    );
    assert_eq!(
        d.sluice_cols(80, &["enable", "hello"]).status.code(),
        Some(0)
    );

    // Unreachable (6), with the socket tried in the data.
    let gone = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args([
            "status",
            "--json",
            "--socket",
            "/nonexistent/s.sock",
        ]),
        common::COMMAND_SECS,
        "sluice status against no daemon",
    );
    assert_eq!(gone.status.code(), Some(6));
    let v: Value = serde_json::from_slice(&gone.stdout).unwrap();
    assert_eq!(v["error"]["code"], "unreachable");
    assert_eq!(v["error"]["data"]["socket"], "/nonexistent/s.sock");
}

/// A role that does not allow it is exit 4 with the daemon's code.
#[test]
fn a_forbidden_call_is_permission_denied_in_json() {
    let uid = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let uid = uid.unwrap();
    let d = common::Daemon::started(PIPELINES, &format!("[access]\nviewer = [\"uid:{uid}\"]\n"));
    for args in [
        &["trigger", "hello"][..],
        &["reload"],
        &["disable", "hello"],
        &["token", "list"],
    ] {
        let v = json_error(&d, args, 4, "permission_denied");
        assert_eq!(v["error"]["rpc_code"], -32002, "{v}");
    }
}

/// A user who may not open the socket is told so (exit 4) with its owner,
/// group and mode and what to ask for, not "daemon unreachable". Needs root
/// to run `sluice` as another user; skipped, loudly, otherwise.
#[test]
fn permission_denied_on_the_socket_names_owner_group_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    if !std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    }) {
        eprintln!("\n!!!!! SKIPPING: needs root to run sluice as nobody !!!!!\n");
        return;
    }
    let d = common::Daemon::started(PIPELINES, "");
    // The directory may be looked into; the socket (0660, root's) not opened.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = common::output_within(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .args(["status", "--json", "--socket"])
            .arg(d.socket()),
        common::COMMAND_SECS,
        "sluice status as nobody",
    );
    assert_eq!(o.status.code(), Some(4), "{}{}", out(&o), err(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "permission_denied", "{v}");
    assert_eq!(v["error"]["data"]["owner"], "root", "{v}");
    assert_eq!(v["error"]["data"]["group"], "root", "{v}");
    assert_eq!(v["error"]["data"]["mode"], "0660", "{v}");
    let e = err(&o);
    assert!(
        e.contains("permission denied") && e.contains("usermod -aG root"),
        "{e}"
    );
    assert!(!e.contains("is the daemon running"), "{e}");
}

/// Subcommands' help lists only their own flags and the shared ones; the
/// console's flags appear where a console opens.
#[test]
fn console_flags_show_only_where_a_console_opens() {
    let help = |args: &[&str]| {
        let o = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_sluice")).args(args),
            common::COMMAND_SECS,
            "sluice --help",
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        out(&o)
    };
    for sub in ["runs", "trigger", "status", "reject"] {
        let text = help(&[sub, "--help"]);
        for flag in ["--color", "--ascii", "--readonly", "--keys"] {
            assert!(!text.contains(flag), "{sub} --help lists {flag}:\n{text}");
        }
        assert!(
            text.contains("--json") && text.contains("--socket"),
            "{text}"
        );
    }
    for args in [&["--help"][..], &["demo", "--help"]] {
        let text = help(args);
        assert!(
            text.contains("--readonly") && text.contains("--ascii"),
            "{text}"
        );
    }
    // The reason is --reason (or -m) everywhere, as the docs say.
    let text = help(&["reject", "--help"]);
    assert!(text.contains("-m, --reason <REASON>"), "{text}");
}

/// Completions for bash, zsh and fish and a man page come from the clap
/// definitions, so they know every subcommand.
#[test]
fn completions_and_the_man_page_know_every_subcommand() {
    let run = |args: &[&str]| {
        let o = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_sluice")).args(args),
            common::COMMAND_SECS,
            &format!("sluice {}", args.join(" ")),
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        out(&o)
    };
    let bash = run(&["completions", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("misfires"),
        "{bash}"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(
        zsh.starts_with("#compdef sluice") && zsh.contains("'--reason"),
        "{zsh}"
    );
    let fish = run(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c sluice") && fish.contains("schedules"),
        "{fish}"
    );
    let man = run(&["man"]);
    assert!(
        man.contains(".TH sluice 1") && man.contains("trigger"),
        "{man}"
    );
    let bad = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args(["completions", "tcsh"]),
        common::COMMAND_SECS,
        "sluice completions tcsh",
    );
    assert_eq!(bad.status.code(), Some(2));
}
