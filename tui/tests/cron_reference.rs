//! `sluice cron next` against an independent reference: the expected times in
//! tests/fixtures/cron_next_reference.json were produced once with Python's
//! croniter (see the file's `_how` and gen_cron_reference.py beside it); this
//! test needs neither Python nor a network.

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn cron_next_agrees_with_croniter() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cron_next_reference.json"
    );
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let after = fixture["after"].as_str().expect("after");
    let n = fixture["n"].as_u64().expect("n").to_string();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let mut disagreements = Vec::new();
    for case in cases {
        let expr = case["expr"].as_str().expect("expr");
        let tz = case["tz"].as_str().expect("tz");
        let out = common::output_within(
            Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["cron", "next", expr, "--tz", tz, "--after", after, "-n", &n]),
            common::COMMAND_SECS,
            &format!("sluice cron next {expr} --tz {tz}"),
        );
        assert!(
            out.status.success(),
            "{expr} {tz}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = case["next"]
            .as_array()
            .expect("next")
            .iter()
            .map(|v| v.as_str().expect("time").to_owned())
            .collect();
        if got != want {
            disagreements.push(format!(
                "{expr} ({tz}):\n  sluice:   {got:?}\n  croniter: {want:?}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
