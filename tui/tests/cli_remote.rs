//! The real `sluice` binary against a real `sluiced`: output, `--json` parsed
//! back, and exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use sluice_shared::method::{self as m, Method as _};

const PIPELINES: &[(&str, &str)] = &[
    (
        "hello.yaml",
        "inputs:\n  who: { type: string, default: world }\nnodes:\n  - id: greet\n    kind: shell\n    run: echo hello {{ inputs.who }}\n",
    ),
    (
        "fails.yaml",
        "nodes:\n  - id: boom\n    kind: shell\n    run: echo bad; exit 1\n",
    ),
    (
        "count.yaml",
        "nodes:\n  - id: c\n    kind: shell\n    run: for i in 1 2 3; do echo line $i; sleep 0.2; done\n",
    ),
];

/// A daemon with the test pipelines and `access` as its config.
struct Daemon(common::Daemon);

impl Daemon {
    fn start(access: &str) -> Self {
        Self(common::Daemon::started(PIPELINES, access))
    }

    fn sluice(&self, args: &[&str]) -> Output {
        self.0.sluice_cols(80, args)
    }
}

fn sluice_at(socket: &Path, args: &[&str]) -> Output {
    common::output_within(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_SOCKET", socket)
            .env("COLUMNS", "80"),
        common::COMMAND_SECS,
        &format!("sluice {}", args.join(" ")),
    )
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn status_pipelines_trigger_runs_and_run_work_with_tables_and_json() {
    let d = Daemon::start("");
    let s = d.sluice(&["status"]);
    assert_eq!(s.status.code(), Some(0), "{}", err(&s));
    assert!(out(&s).contains("pipelines 3"), "{}", out(&s));
    let s = d.sluice(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(v["pipelines"], 3);

    let p = d.sluice(&["pipelines"]);
    assert!(out(&p).starts_with("NAME"), "{}", out(&p));
    assert!(out(&p).lines().all(|l| l.chars().count() <= 80));

    let t = d.sluice(&["trigger", "hello", "-i", "who=cli", "--wait"]);
    assert_eq!(t.status.code(), Some(0), "{}{}", out(&t), err(&t));
    assert!(
        out(&t).contains("succeeded") && out(&t).contains("greet"),
        "{}",
        out(&t)
    );
    // A number-looking value for a string input stays text.
    let t = d.sluice(&["trigger", "hello", "-i", "who=2.0", "--wait"]);
    assert_eq!(t.status.code(), Some(0), "{}{}", out(&t), err(&t));
    let t = d.sluice(&["trigger", "fails", "--wait", "--json"]);
    assert_eq!(t.status.code(), Some(1), "a failed run exits 1");
    let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(v["detail"]["state"], "failed");
    let failed = v["run"].as_i64().unwrap();

    let r = d.sluice(&["runs"]);
    let text = out(&r);
    assert!(text.starts_with("ID  PIPELINE"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    let r = d.sluice(&["runs", "--json", "--state", "failed"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);

    let r = d.sluice(&["run", &format!("#{failed}")]);
    assert!(
        out(&r).contains("boom") && out(&r).contains("failed"),
        "{}",
        out(&r)
    );
    let l = d.sluice(&["logs", &failed.to_string()]);
    // The log ends with the node's outcome, from sluice itself.
    assert_eq!(
        out(&l),
        "boom#1 | bad\nboom#1 sluice | node failed: exit code 1\n"
    );

    let retry = d.sluice(&["retry", &failed.to_string(), "--json"]);
    assert_eq!(retry.status.code(), Some(0), "{}", err(&retry));
    let a = d.sluice(&["audit", "verify"]);
    assert_eq!(a.status.code(), Some(0));
    assert!(out(&a).contains("intact"));
}

/// `-i` values are read as the console's trigger form reads them: as the
/// declared type, refused before sending when they do not fit.
#[test]
fn trigger_inputs_are_read_as_their_declared_type() {
    let d = common::Daemon::started(
        &[(
            "typed.yaml",
            "inputs:\n  n: { type: integer }\n  who: { type: string, default: world }\nnodes:\n  - id: show\n    kind: shell\n    run: echo n={{ inputs.n }}\n",
        )],
        "",
    );
    let sluice = |args: &[&str]| d.sluice_cols(80, args);
    let runs = || {
        let r = sluice(&["runs", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        v["runs"].as_array().unwrap().len()
    };

    // Not an integer: a usage error naming the input, the type and the value,
    // and nothing is sent.
    let t = sluice(&["trigger", "typed", "-i", "n=abc"]);
    assert_eq!(t.status.code(), Some(2), "{}{}", out(&t), err(&t));
    assert!(
        err(&t).contains("input 'n' must be an integer") && err(&t).contains("'abc'"),
        "{}",
        err(&t)
    );
    let t = sluice(&["trigger", "typed", "-i", "n=3.5"]);
    assert_eq!(t.status.code(), Some(2), "{}", err(&t));
    // A name the pipeline does not declare, with a hint.
    let t = sluice(&["trigger", "typed", "-i", "nn=5"]);
    assert_eq!(t.status.code(), Some(2), "{}", err(&t));
    assert!(
        err(&t).contains("unknown input 'nn' (did you mean 'n'?)"),
        "{}",
        err(&t)
    );
    assert_eq!(runs(), 0, "a refused value starts no run");

    // An integer arrives as the integer, a number-looking string as text.
    let t = sluice(&[
        "trigger", "typed", "-i", "n=5", "-i", "who=007", "--wait", "--json",
    ]);
    assert_eq!(t.status.code(), Some(0), "{}{}", out(&t), err(&t));
    let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    let id = v["run"].as_i64().unwrap().to_string();
    let r = sluice(&["run", &id, "--json"]);
    assert_eq!(r.status.code(), Some(0), "{}", err(&r));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["inputs"]["n"], serde_json::json!(5));
    assert!(v["inputs"]["n"].is_i64(), "{}", v["inputs"]);
    assert_eq!(v["inputs"]["who"], serde_json::json!("007"));
    let l = sluice(&["logs", &id]);
    assert_eq!(out(&l), "show#1 | n=5\nshow#1 sluice | node succeeded\n");
}

/// A script that repeats a trigger it is not sure went through (a timeout, a
/// lost reply) passes the same key and gets the first run back.
#[test]
fn a_trigger_with_an_idempotency_key_starts_one_run() {
    let d = Daemon::start("");
    let keyed = |key: &str| {
        let t = d.sluice(&[
            "trigger",
            "hello",
            "-i",
            "who=once",
            "--idempotency-key",
            key,
            "--json",
        ]);
        assert_eq!(t.status.code(), Some(0), "{}{}", out(&t), err(&t));
        let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
        v["run"].as_i64().unwrap()
    };
    let first = keyed("deploy-42");
    assert_eq!(keyed("deploy-42"), first, "the repeat gets the first run");
    assert_ne!(keyed("deploy-43"), first, "another key is another run");
    let r = d.sluice(&["runs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2, "{v}");
    // The same key with other inputs names another request: refused.
    let t = d.sluice(&[
        "trigger",
        "hello",
        "-i",
        "who=twice",
        "--idempotency-key",
        "deploy-42",
    ]);
    assert_eq!(t.status.code(), Some(2), "{}{}", out(&t), err(&t));
}

#[test]
fn logs_follow_streams_until_the_run_ends() {
    let d = Daemon::start("");
    let t = d.sluice(&["trigger", "count", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    let run = v["run"].as_i64().unwrap().to_string();
    let l = d.sluice(&["logs", &run, "-f"]);
    assert_eq!(l.status.code(), Some(0), "{}", err(&l));
    // Following ends at the run's end, after the node's outcome line.
    assert_eq!(
        out(&l),
        "c#1 | line 1\nc#1 | line 2\nc#1 | line 3\nc#1 sluice | node succeeded\n"
    );
}

#[test]
fn exit_codes_tell_outcomes_apart() {
    let d = Daemon::start("");
    let nf = d.sluice(&["run", "999"]);
    assert_eq!(nf.status.code(), Some(3), "not found: {}", err(&nf));
    let nf = d.sluice(&["trigger", "nope"]);
    assert_eq!(nf.status.code(), Some(3));
    let usage = d.sluice(&["run", "abc"]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = d.sluice(&["reject", "1"]);
    assert_eq!(usage.status.code(), Some(2), "reject needs -m");
    let gone = sluice_at(Path::new("/nonexistent/sluice.sock"), &["status"]);
    assert_eq!(gone.status.code(), Some(6));
    assert!(
        err(&gone).contains("/nonexistent/sluice.sock"),
        "{}",
        err(&gone)
    );

    // SAFETY: no preconditions.
    let uid = unsafe { libc_geteuid() };
    let viewer = Daemon::start(&format!("[access]\nviewer = [\"uid:{uid}\"]\n"));
    let denied = viewer.sluice(&["trigger", "hello"]);
    assert_eq!(denied.status.code(), Some(4), "{}", err(&denied));
    assert!(err(&denied).contains("needs the operator role"));
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn a_webhook_naming_a_missing_secret_is_a_warning_not_a_rejection() {
    let d = common::Daemon::started(
        &[(
            "hook.yaml",
            "triggers:\n  - webhook: { auth: hmac, secret: missing_key }\nnodes:\n  - { id: a, kind: shell, run: echo }\n",
        )],
        "",
    );
    let out = d.sluice_cols(80, &["errors"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("warning"), "{text}");
    assert!(text.contains("secret 'missing_key'"), "{text}");
    assert!(text.ends_with("no pipeline file is rejected\n"), "{text}");
    let json = d.sluice_cols(80, &["errors", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["diagnostics"][0]["severity"], "warning", "{v}");
}

/// Retrying a run of a disabled pipeline is refused (exit 5), of a removed one
/// not found (exit 3); a broken audit trail shows in `status`, fails `audit
/// verify` and refuses changes until `audit ack`.
#[test]
fn retry_refusals_and_a_broken_audit_trail_have_their_exit_codes() {
    let mut d = common::Daemon::started(PIPELINES, "");
    let sluice = |d: &common::Daemon, args: &[&str]| d.sluice_cols(80, args);
    let t = sluice(&d, &["trigger", "fails", "--wait", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    let failed = v["run"].as_i64().unwrap().to_string();
    assert_eq!(sluice(&d, &["disable", "fails"]).status.code(), Some(0));
    let r = sluice(&d, &["retry", &failed, "--all"]);
    assert_eq!(r.status.code(), Some(5), "{}", err(&r));
    assert!(err(&r).contains("disabled"), "{}", err(&r));
    assert_eq!(sluice(&d, &["enable", "fails"]).status.code(), Some(0));
    std::fs::remove_file(d.dir.path().join("pipelines/fails.yaml")).unwrap();
    // Rescanned now, rather than waiting for the watcher.
    assert_eq!(sluice(&d, &["reload"]).status.code(), Some(0));
    let r = sluice(&d, &["retry", &failed]);
    assert_eq!(r.status.code(), Some(3), "{}{}", out(&r), err(&r));
    assert!(err(&r).contains("removed"), "{}", err(&r));

    // The head file says a later row was written than the store holds: a cut tail.
    d.stop();
    std::fs::write(
        d.dir.path().join("state/audit.head"),
        format!("{{\"id\": 9999, \"hash\": \"{}\"}}", "ab".repeat(32)),
    )
    .unwrap();
    d.start();
    let s = sluice(&d, &["status"]);
    assert!(out(&s).contains("AUDIT TRAIL BROKEN"), "{}", out(&s));
    let v = sluice(&d, &["audit", "verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", out(&v));
    assert!(out(&v).contains("BROKEN"), "{}", out(&v));
    let x = sluice(&d, &["disable", "hello"]);
    assert_eq!(x.status.code(), Some(1), "{}", err(&x));
    assert!(err(&x).contains("sluice audit ack"), "{}", err(&x));
    let a = sluice(&d, &["audit", "ack", "--note", "checked the backup"]);
    assert_eq!(a.status.code(), Some(0), "{}", err(&a));
    assert!(out(&a).contains("acknowledged as audit row"), "{}", out(&a));
    assert_eq!(sluice(&d, &["audit", "verify"]).status.code(), Some(0));
    let again = sluice(&d, &["audit", "ack"]);
    assert_eq!(again.status.code(), Some(1), "nothing to acknowledge");
    let rows = sluice(&d, &["audit", "--json", "-n", "1"]);
    let rows: serde_json::Value = serde_json::from_slice(&rows.stdout).unwrap();
    assert_eq!(rows[0]["action"], m::AuditAck::NAME);
    assert_eq!(rows[0]["detail"]["note"], "checked the backup");
}
