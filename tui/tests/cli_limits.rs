//! `sluice limits`, `sluice limits explain` and `sluice token` against a real
//! `sluiced`: tables, `--json` parsed back, and the refused exit code.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The daemon binary next to ours (built on demand: the console never links the daemon).
fn sluiced() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let path = exe.with_file_name("sluiced");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "sluice-daemon", "--bin", "sluiced"])
            .status()
            .expect("cargo build sluiced");
        assert!(status.success());
    }
    path
}

struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
}

impl Daemon {
    fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipelines");
        std::fs::create_dir_all(&p).unwrap();
        let hello = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: greet\n    kind: shell\n    run: echo hello\n";
        std::fs::write(p.join("hello.yaml"), hello).unwrap();
        std::fs::set_permissions(p.join("hello.yaml"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::write(dir.path().join("sluiced.toml"), config).unwrap();
        let mut child = Command::new(sluiced())
            .arg("--config")
            .arg(dir.path().join("sluiced.toml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--pipelines")
            .arg(&p)
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("SLUICE_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().starts_with("sluiced: ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self { dir, child }
    }

    fn sluice(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_SOCKET", self.dir.path().join("s.sock"))
            .env("COLUMNS", "100")
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
