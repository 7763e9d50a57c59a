//! `sluice limits`, `sluice limits explain` and `sluice token` against a real
//! `sluiced`: tables, `--json` parsed back, and the refused exit code.

mod common;

use std::process::Output;

const HELLO: &str = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: greet\n    kind: shell\n    run: echo hello\n";

/// A daemon with one pipeline and `config`; `sluice` runs 100 columns wide.
struct Daemon(common::Daemon);

impl Daemon {
    fn start(config: &str) -> Self {
        Self(common::Daemon::started(&[("hello.yaml", HELLO)], config))
    }

    fn sluice(&self, args: &[&str]) -> Output {
        self.0.sluice_cols(100, args)
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn limits_usage_explain_and_a_refused_trigger() {
    let d = Daemon::start(
        "[access]\nadmin = [\"*\"]\n\n[limits.global]\nmax_concurrent = 4\n\n[limits.default]\nrate = \"1/h\"\nburst = 1\ndaily_runs = 10\n",
    );
    let t = d.sluice(&["trigger", "hello", "--wait", "--json"]);
    assert_eq!(t.status.code(), Some(0), "{}{}", out(&t), err(&t));
    let run = serde_json::from_slice::<serde_json::Value>(&t.stdout).unwrap()["run"]
        .as_i64()
        .unwrap();
    let refused = d.sluice(&["trigger", "hello"]);
    assert_eq!(refused.status.code(), Some(5), "refused by a limit exits 5");
    assert!(
        err(&refused).contains("1/h") && err(&refused).contains("retry in"),
        "{}",
        err(&refused)
    );

    let u = d.sluice(&["limits"]);
    assert_eq!(u.status.code(), Some(0), "{}", err(&u));
    let text = out(&u);
    assert!(text.starts_with("global: 0 running of max 4"), "{text}");
    assert!(
        text.contains("USER") && text.contains("1/h (0 left)"),
        "{text}"
    );
    assert!(text.contains("1/10"), "one run of ten today: {text}");
    let u = d.sluice(&["limits", "usage", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&u.stdout).unwrap();
    assert_eq!(v["global"]["max_concurrent"], 4);
    assert_eq!(v["global"]["refusals"]["rate"], 1);

    let e = d.sluice(&["limits", "explain", &run.to_string()]);
    assert_eq!(e.status.code(), Some(0), "{}", err(&e));
    assert!(out(&e).contains("finished"), "{}", out(&e));
    let e = d.sluice(&["limits", "explain", "9999"]);
    assert_eq!(e.status.code(), Some(3), "an unknown run is not found");
}

#[test]
fn tokens_are_printed_once_listed_without_the_secret_and_revoked() {
    let d = Daemon::start("[access]\nadmin = [\"*\"]\n");
    let c = d.sluice(&["token", "create", "--user", "ci", "--pipeline", "hello"]);
    assert_eq!(c.status.code(), Some(0), "{}", err(&c));
    let token = out(&c).lines().next().unwrap().to_owned();
    assert!(token.starts_with("slk_"), "{}", out(&c));
    assert!(out(&c).contains("shown only this once"), "{}", out(&c));

    let l = d.sluice(&["token", "list"]);
    let text = out(&l);
    assert!(
        text.starts_with("ID") && text.contains("ci") && text.contains("active"),
        "{text}"
    );
    assert!(!text.contains(&token), "the token is never listed");

    let r = d.sluice(&["token", "revoke", "1"]);
    assert_eq!(r.status.code(), Some(0), "{}", err(&r));
    assert!(out(&r).contains("token #1 revoked"), "{}", out(&r));
    let l = d.sluice(&["token", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    assert!(v[0]["revoked_at"].is_i64(), "{v}");
    let again = d.sluice(&["token", "revoke", "1"]);
    assert_eq!(again.status.code(), Some(3), "already revoked: not found");
}
