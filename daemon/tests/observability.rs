//! What an operator watches, on the real binary: `/metrics` scraped and parsed
//! by a Prometheus text parser after real runs, and `[log] dir` rolling files.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use daemon::Daemon;
use prometheus_parse::{Sample, Scrape, Value};

const OK: &str = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: a\n    kind: transform\n    output: { ok: true }\n  - id: b\n    kind: shell\n    needs: [a]\n    run: echo fine\n";
const BAD: &str = "triggers:\n  - webhook: { auth: none }\nnodes:\n  - id: boom\n    kind: shell\n    run: exit 3\n";
const TOKEN: &str = "scrape-token-0123456789abcdef";

fn samples<'a>(scrape: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    scrape.samples.iter().filter(|s| s.metric == name).collect()
}

fn value_of(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    }
}

/// The one sample of `name` whose labels include `labels`.
fn one(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(scrape, name)
        .into_iter()
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name}{labels:?}: {} samples; all of {name}: {:?}",
        found.len(),
        samples(scrape, name)
    );
    value_of(found[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_few_runs_parse_and_count_them() {
    let secrets_dir = tempfile::tempdir().unwrap();
    let secrets = secrets_dir.path().join("secrets.toml");
    std::fs::write(&secrets, format!("metrics = \"{TOKEN}\"\n")).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "[paths]\nsecrets = \"{}\"\n\n[http]\nmetrics_token = \"metrics\"\n",
        secrets.display()
    );
    let d = Daemon::start(&config, &[("ok.yaml", OK), ("bad.yaml", BAD)]);
    let http = common::http_client();
    let base = format!("http://{}", d.http);
    for (pipeline, n) in [("ok", 3), ("bad", 1)] {
        for _ in 0..n {
            let r = http
                .post(format!("{base}/hooks/{pipeline}?wait=60s"))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{pipeline}: {}", r.status());
        }
    }
    // A path naming no pipeline: counted by status, never labelled by its name.
    let missing = http
        .post(format!("{base}/hooks/no-such-pipeline-e3b0c442"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let refused = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), 401, "a scrape without the token");
    let wrong = http
        .get(format!("{base}/metrics"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401, "a scrape with a wrong token");

    // Runs are counted as their end is committed, before `?wait` answers; poll
    // anyway with a deadline, in case the last one is still settling.
    let scrape = common::eventually(30, "three succeeded runs of ok in /metrics", || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move {
            let r = http.get(url).bearer_auth(TOKEN).send().await.ok()?;
            assert_eq!(r.status(), 200);
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(ct.contains("openmetrics-text"), "{ct}");
            let text = r.text().await.ok()?;
            let lines = text.lines().map(|l| Ok(l.to_owned()));
            let scrape = Scrape::parse(lines).expect("a Prometheus text parser reads /metrics");
            let done = samples(&scrape, "sluice_runs_finished_total")
                .iter()
                .any(|s| s.labels.get("pipeline") == Some("ok") && value_of(s) == 3.0);
            done.then_some((scrape, text))
        }
    })
    .await;
    let (scrape, text) = scrape;

    assert_eq!(
        one(
            &scrape,
            "sluice_runs_finished_total",
            &[("pipeline", "ok"), ("state", "succeeded")]
        ),
        3.0
    );
    assert_eq!(
        one(
            &scrape,
            "sluice_runs_finished_total",
            &[("pipeline", "bad"), ("state", "failed")]
        ),
        1.0
    );
    assert_eq!(
        one(
            &scrape,
            "sluice_node_attempts_total",
            &[("kind", "transform"), ("outcome", "succeeded")]
        ),
        3.0
    );
    assert_eq!(
        one(
            &scrape,
            "sluice_node_attempts_total",
            &[("kind", "shell"), ("outcome", "succeeded")]
        ),
        3.0
    );
    assert!(
        one(
            &scrape,
            "sluice_node_attempts_total",
            &[("kind", "shell"), ("outcome", "failed")]
        ) >= 1.0
    );
    let accepted = samples(&scrape, "sluice_webhook_requests_total")
        .iter()
        .filter(|s| s.labels.get("status").is_some_and(|c| c.starts_with('2')))
        .map(|s| value_of(s))
        .sum::<f64>();
    assert_eq!(accepted, 4.0, "2xx webhook answers");
    assert_eq!(
        one(
            &scrape,
            "sluice_webhook_requests_total",
            &[("status", "404")]
        ),
        1.0
    );
    // The intake histogram saw all five deliveries.
    assert_eq!(
        one(&scrape, "sluice_webhook_intake_seconds_count", &[]),
        5.0
    );
    assert_eq!(
        one(
            &scrape,
            "sluice_run_duration_seconds_count",
            &[("pipeline", "ok")]
        ),
        3.0
    );
    // Gauges read at the scrape: nothing left unfinished, both pipelines loaded.
    for state in ["queued", "running", "waiting"] {
        assert_eq!(one(&scrape, "sluice_runs", &[("state", state)]), 0.0);
    }
    assert_eq!(one(&scrape, "sluice_pipelines", &[]), 2.0);
    assert_eq!(one(&scrape, "sluice_approvals_pending", &[]), 0.0);
    assert_eq!(one(&scrape, "sluice_workers_busy", &[]), 0.0);
    assert!(one(&scrape, "sluice_workers", &[]) >= 1.0);
    assert_eq!(
        one(&scrape, "sluice_limit_refusals_total", &[("limit", "rate")]),
        0.0
    );
    assert_eq!(one(&scrape, "sluice_cron_fires_total", &[]), 0.0);
    assert_eq!(one(&scrape, "sluice_cron_misfires_total", &[]), 0.0);
    assert!(one(&scrape, "sluice_process_resident_memory_bytes", &[]) > 0.0);
    assert!(one(&scrape, "sluice_process_open_fds", &[]) > 0.0);
    assert!(one(&scrape, "sluice_process_cpu_seconds_total", &[]) > 0.0);
    // Bounded labels: the unknown path, the token and the secret's value appear nowhere.
    for leak in ["no-such-pipeline", TOKEN] {
        assert!(!text.contains(leak), "/metrics shows {leak}");
    }
    let pipelines: BTreeMap<&str, ()> = scrape
        .samples
        .iter()
        .filter_map(|s| s.labels.get("pipeline"))
        .map(|p| (p, ()))
        .collect();
    assert_eq!(
        pipelines.keys().copied().collect::<Vec<_>>(),
        vec!["bad", "ok"]
    );
}

#[test]
fn log_files_appear_in_the_log_dir_and_old_ones_are_pruned() {
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    // Three files of past hours, oldest first (pruning goes by creation order).
    let old = [
        "sluiced.2020-01-01-00.log",
        "sluiced.2020-01-01-01.log",
        "sluiced.2020-01-01-02.log",
    ];
    for name in old {
        std::fs::write(dir.join(name), "old\n").unwrap();
    }
    // Another program's file in the same directory is left alone.
    std::fs::write(dir.join("other.log"), "x\n").unwrap();
    let config = format!(
        "[log]\ndir = \"{}\"\nrotation = \"hourly\"\nkeep = 2\nlevel = \"info\"\n",
        dir.display()
    );
    let mut d = Daemon::prepare(&config, &[]);
    // The fixture's SLUICE_LOG=warn would override [log] level; empty means unset.
    d.env.push(("SLUICE_LOG".into(), String::new()));
    d.spawn();

    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    };
    let hour = |t: jiff::Timestamp| t.strftime("%Y-%m-%d-%H").to_string();
    let now = jiff::Timestamp::now();
    // The hour may turn between the daemon's start and this check.
    let current: Vec<String> = [now - jiff::SignedDuration::from_hours(1), now]
        .into_iter()
        .map(|t| format!("sluiced.{}.log", hour(t)))
        .collect();
    let file = names()
        .into_iter()
        .find(|n| current.contains(n))
        .unwrap_or_else(|| panic!("no file for this hour ({current:?}) in {:?}", names()));
    // keep = 2: the new file and one old one; two old ones are gone. (Which
    // one stays follows the files' creation times, which a fast test can
    // make equal, so the test does not insist on the newest.)
    let left = names();
    let old_left: Vec<&String> = left.iter().filter(|n| old.contains(&n.as_str())).collect();
    assert_eq!(old_left.len(), 1, "after start with keep = 2: {left:?}");
    assert!(left.contains(&"other.log".to_owned()), "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");
    // The writer is a background thread: wait (bounded) for the ready line to land.
    let path = dir.join(&file);
    // Log lines hold run details: the file is the daemon user's alone.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path).expect("log file").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "log file mode {mode:o}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("sluiced ready") {
            assert!(
                text.lines()
                    .all(|l| l.starts_with(|c: char| c.is_ascii_digit())),
                "file lines start with a timestamp:\n{text}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "'sluiced ready' never reached {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What is logged at shutdown is flushed before the process exits.
    d.stop();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("stopping: letting running nodes finish"),
        "the shutdown lines were not flushed:\n{text}"
    );
}
