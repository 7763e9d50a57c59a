//! `config/sluiced.toml` states every key with its default: it parses as it
//! ships, and with every `#key = value` default line switched on it still
//! parses and means exactly what no file means. `sluiced check-config`
//! accepts a good configuration and refuses a bad one with a non-zero exit.

mod common;

use std::path::{Path, PathBuf};

use sluice_daemon::api::SocketLimits;
use sluice_daemon::config::Config;
use sluice_daemon::limits::{Limits, NO_USER};
use sluice_daemon::triggers::webhook::{WebhookOptions, parse_size};

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sluiced.toml")
}

fn sample() -> String {
    std::fs::read_to_string(sample_path()).expect("config/sluiced.toml")
}

/// The sample with every default line (`#key = value`, no space after `#`) switched on.
fn defaults_switched_on(text: &str) -> (String, Vec<String>) {
    let mut keys = Vec::new();
    let out = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => {
                keys.push(rest.split('=').next().unwrap_or_default().trim().to_owned());
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (out, keys)
}

#[test]
fn the_sample_parses_as_shipped() {
    let c = Config::parse(&sample(), &sample_path()).unwrap();
    // As shipped it sets nothing: every value is the default.
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

#[test]
fn every_default_the_sample_states_is_the_real_default() {
    let (text, keys) = defaults_switched_on(&sample());
    let c = Config::parse(&text, Path::new("sluiced.toml (defaults on)"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let d = Config::default();
    // Each stated default, compared by what it means to the daemon.
    assert_eq!(c.http.listen, d.http.listen);
    let body = |o: &Option<String>| {
        o.as_deref()
            .map_or(WebhookOptions::default().max_body, |t| {
                parse_size(t).unwrap()
            })
    };
    assert_eq!(body(&c.http.max_body), body(&d.http.max_body));
    assert_eq!(
        c.http
            .max_connections_per_peer
            .unwrap_or(WebhookOptions::default().max_per_peer),
        WebhookOptions::default().max_per_peer
    );
    assert_eq!(c.engine.workers, d.engine.workers);
    assert_eq!(c.engine.durability, d.engine.durability);
    assert_eq!(c.engine.shutdown_grace.std(), d.engine.shutdown_grace.std());
    assert_eq!(c.retention.max_age.std(), d.retention.max_age.std());
    assert_eq!(
        c.retention.max_runs_per_pipeline,
        d.retention.max_runs_per_pipeline
    );
    assert_eq!(
        SocketLimits::from_config(&c.socket).unwrap(),
        SocketLimits::default()
    );
    assert_eq!(c.log.level, d.log.level);
    assert_eq!(c.log.rotation, d.log.rotation);
    assert_eq!(c.log.keep, d.log.keep);
    let (cl, dl) = (Limits::new(c.limits.clone()), Limits::new(d.limits.clone()));
    assert_eq!(cl.queue_bounds(NO_USER), dl.queue_bounds(NO_USER));
    let day = |l: &sluice_daemon::limits::LimitsConfig| {
        let s = l.default.day_starts.clone().unwrap_or_default();
        (s.minutes, s.zone.iana_name().map(str::to_owned))
    };
    assert_eq!(day(&c.limits), day(&d.limits));
    let pool = |s: &sluice_daemon::config::StoreConfig| {
        s.pool_size
            .unwrap_or(sluice_daemon::store::StoreOptions::DEFAULT_POOL_SIZE)
    };
    assert_eq!(pool(&c.store), pool(&d.store));
    let timeout = |s: &sluice_daemon::config::StoreConfig| {
        s.statement_timeout.as_ref().map_or(
            sluice_daemon::store::StoreOptions::DEFAULT_STATEMENT_TIMEOUT,
            |t| t.std(),
        )
    };
    assert_eq!(timeout(&c.store), timeout(&d.store));
    // Every stated default was compared above; a new key needs a line here.
    let compared = [
        "listen",
        "max_body",
        "max_connections_per_peer",
        "workers",
        "durability",
        "shutdown_grace",
        "max_age",
        "max_runs_per_pipeline",
        "max_frame",
        "hello_timeout",
        "max_connections",
        "max_connections_per_user",
        "max_subscriptions",
        "level",
        "rotation",
        "keep",
        "max_queued",
        "day_starts",
        "pool_size",
        "statement_timeout",
    ];
    let mut stated = keys.clone();
    stated.sort();
    stated.dedup();
    let mut want = compared.map(str::to_owned).to_vec();
    want.sort();
    assert_eq!(stated, want, "default lines in the sample vs keys compared");
}

#[test]
fn every_key_of_the_configuration_is_in_the_sample() {
    let text = sample();
    // The keys each section accepts (deny_unknown_fields makes a stale sample
    // fail to parse; this catches a key the sample forgot).
    let sections: &[(&str, &[&str])] = &[
        (
            "[paths]",
            &["state_dir", "pipelines", "socket", "plugins", "secrets"],
        ),
        (
            "[http]",
            &[
                "listen",
                "max_body",
                "max_connections_per_peer",
                "metrics_token",
            ],
        ),
        (
            "[engine]",
            &["workers", "durability", "shutdown_grace", "threads"],
        ),
        (
            "[store]",
            &["url", "password", "pool_size", "statement_timeout"],
        ),
        ("[retention]", &["max_age", "max_runs_per_pipeline"]),
        (
            "[socket]",
            &[
                "max_frame",
                "hello_timeout",
                "max_connections",
                "max_connections_per_user",
                "max_subscriptions",
            ],
        ),
        ("[log]", &["level", "dir", "rotation", "keep"]),
        ("[limits.global]", &["max_concurrent", "max_queued"]),
        (
            "[limits.default]",
            &[
                "rate",
                "burst",
                "max_concurrent",
                "max_queued",
                "daily_runs",
                "daily_llm_tokens",
                "day_starts",
            ],
        ),
        (
            "# [smtp]",
            &[
                "host", "port", "tls", "username", "password", "from", "timeout",
            ],
        ),
        (
            "# [llm.providers.local]",
            &["kind", "base_url", "default_model", "timeout"],
        ),
        ("# [access]", &["admin", "operator", "viewer"]),
    ];
    for (header, keys) in sections {
        let at = text
            .find(&format!("\n{header}\n"))
            .unwrap_or_else(|| panic!("no {header} in the sample"));
        let body = &text[at + header.len() + 2..];
        let end = body.find("\n[").unwrap_or(body.len());
        let body = &body[..end];
        for key in *keys {
            let stated = body.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
            });
            assert!(stated, "{header} {key} is not in the sample");
        }
    }
}

fn check_config(config: &str, pipelines: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("pipelines");
    std::fs::create_dir_all(&pdir).unwrap();
    for (name, text) in pipelines {
        std::fs::write(pdir.join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("sluiced.toml"), config).unwrap();
    common::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluiced"))
            .arg("--config")
            .arg(dir.path().join("sluiced.toml"))
            .arg("--pipelines")
            .arg(&pdir)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("check-config"),
        60,
        "sluiced check-config",
    )
}

const GOOD: &str = "nodes:\n  - id: a\n    kind: transform\n    output: {}\n";

#[test]
fn check_config_accepts_the_sample_and_refuses_what_would_not_start() {
    let ok = check_config(&sample(), &[("good.yaml", GOOD)]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("1 pipeline file(s)"));
    // check-config opens nothing for writing.
    let bad_level = check_config("[log]\nlevel = \"info,=[\"\n", &[("good.yaml", GOOD)]);
    assert_eq!(bad_level.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_level.stderr).contains("[log]"));
    let unknown_key = check_config("[engine]\nworkerz = 3\n", &[]);
    assert_eq!(unknown_key.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown_key.stderr).contains("line 2"));
    let bad_pipeline = check_config(
        "",
        &[(
            "broken.yaml",
            "nodes:\n  - id: a\n    kind: transform\n    needs: [b]\n    output: {}\n",
        )],
    );
    assert_eq!(bad_pipeline.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad_pipeline.stderr);
    assert!(
        err.contains("broken.yaml:4") && err.contains("1 pipeline file(s)"),
        "{err}"
    );
    let missing_token = check_config("[http]\nmetrics_token = \"nope\"\n", &[]);
    assert_eq!(missing_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing_token.stderr).contains("metrics_token"));
}
