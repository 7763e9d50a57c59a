//! The cron scheduler driven by a controllable clock (never by sleeping):
//! DST in three zones, overlap policies, misfires after downtime, pause and
//! resume, rescheduling on file changes. Real engine, real store.

mod common;
mod triggers_env;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use sluice_daemon::triggers::cron::{Clock, ManualClock, Scheduler};
use sluice_shared::run::{RunId, RunState, TriggerKind};
use tokio_util::sync::CancellationToken;
use triggers_env::{Env, write_file};

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn cron_pipeline(expr: &str, tz: &str) -> String {
    format!(
        "triggers:\n  - cron: \"{expr}\"\n    timezone: {tz}\nnodes:\n  - id: a\n    kind: transform\n    output: {{ at: \"{{{{ trigger.scheduled_at }}}}\" }}\n"
    )
}

struct Sched {
    env: Env,
    clock: Arc<ManualClock>,
    sched: Scheduler,
    stop: CancellationToken,
}

async fn scheduler(env: Env, start: Timestamp) -> Sched {
    let clock = ManualClock::new(start);
    let stop = CancellationToken::new();
    let sched = Scheduler::spawn(
        env.triggers.clone(),
        Arc::clone(&clock) as Arc<dyn Clock>,
        stop.clone(),
    );
    sched.reload().await.expect("reload");
    Sched {
        env,
        clock,
        sched,
        stop,
    }
}

impl Sched {
    /// Moves the clock to `until`, stopping at every fire the scheduler plans,
    /// and waits until everything due is handled.
    async fn run_until(&self, until: Timestamp) {
        loop {
            let tick = self.sched.settled(self.clock.now()).await.expect("settled");
            if self.clock.now() >= until {
                return;
            }
            let to = tick.next.map_or(until, |n| n.min(until));
            self.clock.set(to.max(self.clock.now()));
        }
    }

    /// Scheduled fire instants (UTC) of a pipeline's runs, oldest first.
    async fn fires(&self, pipeline: &str) -> Vec<Timestamp> {
        let mut runs = self.env.store.runs(Some(pipeline), 100_000).await.unwrap();
        runs.reverse();
        runs.iter()
            .map(|r| {
                assert_eq!(r.trigger.kind, TriggerKind::Cron);
                let at = r.trigger.details["scheduled_at"].as_str().unwrap();
                at.parse::<Timestamp>().unwrap()
            })
            .collect()
    }

    async fn fires_between(&self, pipeline: &str, from: &str, to: &str) -> Vec<String> {
        let (from, to) = (ts(from), ts(to));
        self.fires(pipeline)
            .await
            .into_iter()
            .filter(|t| *t >= from && *t <= to)
            .map(|t| t.strftime("%Y-%m-%dT%H:%MZ").to_string())
            .collect()
    }
}

/// Runs one schedule from `start` to `until` on a fresh store and returns the
/// fires (UTC, minutes) between `from` and `to`.
async fn dst_fires(
    expr: &str,
    tz: &str,
    start: &str,
    until: &str,
    from: &str,
    to: &str,
) -> Vec<String> {
    let env = Env::new(&[("job.yaml", &cron_pipeline(expr, tz))], BTreeMap::new()).await;
    let s = scheduler(env, ts(start)).await;
    s.run_until(ts(until)).await;
    let fires = s.fires_between("job", from, to).await;
    s.stop.cancel();
    fires
}

/// The DST table of shared/research/reliability.md §2.2 (computed there with
/// Python zoneinfo, cross-checked against systemd): cronie's rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_forward_fires_once_after_the_gap() {
    // Berlin 2025-03-30: 02:00 CET -> 03:00 CEST at 01:00Z.
    assert_eq!(
        dst_fires(
            "30 2 * * *",
            "Europe/Berlin",
            "2025-03-29T12:00:00Z",
            "2025-03-31T00:00:00Z",
            "2025-03-30T00:00:00Z",
            "2025-03-30T23:59:00Z"
        )
        .await,
        ["2025-03-30T01:00Z"],
        "02:30 does not exist that day: once, at 03:00 CEST"
    );
    assert_eq!(
        dst_fires(
            "*/30 * * * *",
            "Europe/Berlin",
            "2025-03-29T22:00:00Z",
            "2025-03-30T03:00:00Z",
            "2025-03-30T00:15:00Z",
            "2025-03-30T01:45:00Z"
        )
        .await,
        [
            "2025-03-30T00:30Z",
            "2025-03-30T01:00Z",
            "2025-03-30T01:30Z"
        ],
        "interval jobs keep real spacing, no extra catch-up fire"
    );
    // New York 2025-03-09: 02:00 EST -> 03:00 EDT at 07:00Z.
    assert_eq!(
        dst_fires(
            "30 2 * * *",
            "America/New_York",
            "2025-03-08T12:00:00Z",
            "2025-03-10T12:00:00Z",
            "2025-03-09T00:00:00Z",
            "2025-03-09T23:59:00Z"
        )
        .await,
        ["2025-03-09T07:00Z"]
    );
    // Lord Howe 2025-10-05: 02:00 -> 02:30 (+10:30 -> +11) at 2025-10-04 15:30Z.
    assert_eq!(
        dst_fires(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2025-10-04T00:00:00Z",
            "2025-10-05T12:00:00Z",
            "2025-10-04T12:00:00Z",
            "2025-10-05T12:00:00Z"
        )
        .await,
        ["2025-10-04T15:30Z"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fall_back_fires_fixed_times_once_and_intervals_in_real_time() {
    // Berlin 2025-10-26: 03:00 CEST -> 02:00 CET at 01:00Z.
    assert_eq!(
        dst_fires(
            "30 2 * * *",
            "Europe/Berlin",
            "2025-10-25T12:00:00Z",
            "2025-10-27T00:00:00Z",
            "2025-10-26T00:00:00Z",
            "2025-10-26T23:59:00Z"
        )
        .await,
        ["2025-10-26T00:30Z"],
        "02:30 happens twice: once, at its first occurrence"
    );
    assert_eq!(
        dst_fires(
            "*/30 * * * *",
            "Europe/Berlin",
            "2025-10-25T22:00:00Z",
            "2025-10-26T03:00:00Z",
            "2025-10-25T23:45:00Z",
            "2025-10-26T02:15:00Z"
        )
        .await,
        [
            "2025-10-26T00:00Z",
            "2025-10-26T00:30Z",
            "2025-10-26T01:00Z",
            "2025-10-26T01:30Z",
            "2025-10-26T02:00Z"
        ],
        "both occurrences of 02:00 and 02:30 fire: no 90-minute gap"
    );
    // New York 2025-11-02: 02:00 EDT -> 01:00 EST at 06:00Z.
    assert_eq!(
        dst_fires(
            "30 1 * * *",
            "America/New_York",
            "2025-11-01T12:00:00Z",
            "2025-11-03T00:00:00Z",
            "2025-11-02T00:00:00Z",
            "2025-11-02T23:59:00Z"
        )
        .await,
        ["2025-11-02T05:30Z"]
    );
    // Lord Howe 2025-04-06: 02:00 -> 01:30 (+11 -> +10:30) at 2025-04-05 15:00Z.
    assert_eq!(
        dst_fires(
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2025-04-05T00:00:00Z",
            "2025-04-06T12:00:00Z",
            "2025-04-05T12:00:00Z",
            "2025-04-06T12:00:00Z"
        )
        .await,
        ["2025-04-05T14:45Z"]
    );
}

const HOLD: &str = r#"
concurrency: { max_runs: 1, on_overlap: POLICY }
triggers:
  - cron: "* * * * *"
    timezone: UTC
nodes:
  - id: hold
    kind: shell
    run: "while [ ! -e RELEASE ]; do sleep 0.02; done"
"#;

async fn states(env: &Env, pipeline: &str) -> Vec<(RunId, RunState)> {
    let mut runs = env.store.runs(Some(pipeline), 100).await.unwrap();
    runs.reverse();
    runs.into_iter().map(|r| (r.id, r.state)).collect()
}

async fn wait_states(env: &Env, pipeline: &str, want: &[RunState]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<RunState> = states(env, pipeline)
            .await
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pipeline}: states {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let file = |policy: &str| {
        HOLD.replace("POLICY", policy)
            .replace("RELEASE", &release.display().to_string())
    };
    let env = Env::open(
        dir,
        &[
            ("skip.yaml", &file("skip")),
            ("queue.yaml", &file("queue")),
            ("cancel.yaml", &file("cancel_previous")),
            ("allow.yaml", &file("allow")),
        ],
        BTreeMap::new(),
    )
    .await;
    let s = scheduler(env, ts("2026-02-02T10:00:30Z")).await;
    use RunState::*;
    for minute in 1..=3 {
        s.run_until(ts(&format!("2026-02-02T10:0{minute}:00Z")))
            .await;
        // Let the fire's run reach a settled state before the next fire.
        let env = &s.env;
        wait_states(env, "allow", &vec![Running; minute]).await;
    }
    wait_states(&s.env, "skip", &[Running]).await;
    wait_states(&s.env, "queue", &[Running, Queued, Queued]).await;
    wait_states(&s.env, "cancel", &[Cancelled, Cancelled, Running]).await;
    let ledger = s.env.store.misfires(Some("skip"), 10).await.unwrap();
    assert_eq!(ledger.len(), 2, "{ledger:#?}");
    assert!(
        ledger
            .iter()
            .all(|m| m.misfire.action == "skipped (on_overlap: skip)"
                && m.misfire.reason.contains("max_runs 1"))
    );

    std::fs::write(&release, "").unwrap();
    wait_states(&s.env, "queue", &[Succeeded, Succeeded, Succeeded]).await;
    wait_states(&s.env, "allow", &[Succeeded, Succeeded, Succeeded]).await;
    // Queued runs ran one at a time, oldest first.
    let mut runs = s.env.store.runs(Some("queue"), 10).await.unwrap();
    runs.reverse();
    for w in runs.windows(2) {
        assert!(
            w[1].started_at.unwrap() >= w[0].finished_at.unwrap(),
            "runs overlapped: {w:#?}"
        );
    }
    s.stop.cancel();
}

const EVERY5: &str = r#"
inputs:
  tag: { type: string, default: none }
triggers:
  - cron: "*/5 * * * *"
    timezone: UTC
    inputs: { tag: scheduled }
    MISFIRE
nodes:
  - id: a
    kind: transform
    output: { ok: true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misfires_after_downtime_follow_the_policy_and_are_recorded() {
    let files = [
        ("skipper.yaml", EVERY5.replace("MISFIRE", "misfire: skip")),
        (
            "catchup.yaml",
            EVERY5.replace("MISFIRE", "misfire: run_once\n    catchup_window: 1h"),
        ),
        (
            "too_old.yaml",
            EVERY5.replace("MISFIRE", "misfire: run_once\n    catchup_window: 1m"),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let env = Env::new(&files, BTreeMap::new()).await;
    let s = scheduler(env, ts("2026-01-01T00:00:30Z")).await;
    s.run_until(ts("2026-01-01T00:05:00Z")).await;
    for p in ["skipper", "catchup", "too_old"] {
        assert_eq!(s.fires(p).await, [ts("2026-01-01T00:05:00Z")], "{p}");
    }
    let run = s
        .env
        .store
        .runs(Some("skipper"), 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(run.inputs, json!({"tag": "scheduled"}), "trigger inputs");
    assert_eq!(run.trigger.details["cron"], "*/5 * * * *");
    assert_eq!(
        run.trigger.details["scheduled_at"],
        "2026-01-01T00:05:00+00:00"
    );

    // Down from 00:05 to 03:04:30: fires 00:10 ... 03:00 (35) were missed.
    s.stop.cancel();
    let stopped = s.env.stop().await;
    let env = Env::reopen(stopped, &[], BTreeMap::new()).await;
    let s = scheduler(env, ts("2026-01-01T03:04:30Z")).await;
    s.run_until(ts("2026-01-01T03:04:30Z")).await;

    let skipped = s.env.store.misfires(Some("skipper"), 10).await.unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:#?}");
    let m = &skipped[0].misfire;
    assert_eq!(
        (m.missed, m.reason.as_str(), m.action.as_str()),
        (35, "the daemon was not running", "skipped (misfire: skip)")
    );
    assert_eq!(m.due_first, ts("2026-01-01T00:10:00Z").as_millisecond());
    assert_eq!(m.due_last, ts("2026-01-01T03:00:00Z").as_millisecond());
    assert_eq!(s.fires("skipper").await.len(), 1, "skip starts nothing");

    let caught = s.env.store.misfires(Some("catchup"), 10).await.unwrap();
    assert_eq!(caught[0].misfire.action, "ran once (misfire: run_once)");
    let fires = s.fires("catchup").await;
    assert_eq!(
        fires,
        [ts("2026-01-01T00:05:00Z"), ts("2026-01-01T03:00:00Z")]
    );
    let run = s
        .env
        .store
        .run(caught[0].misfire.run.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.trigger.details["catchup"]["missed"], 35);

    let old = s.env.store.misfires(Some("too_old"), 10).await.unwrap();
    assert!(
        old[0].misfire.action.contains("beyond catchup_window 1m"),
        "{:?}",
        old[0].misfire.action
    );
    assert_eq!(s.fires("too_old").await.len(), 1);
    assert_eq!(s.env.triggers.counters().snapshot().misfires, 105);

    // Back on schedule: the next fire runs normally.
    s.run_until(ts("2026-01-01T03:05:00Z")).await;
    assert_eq!(
        s.fires("skipper").await.last(),
        Some(&ts("2026-01-01T03:05:00Z"))
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_reschedule_on_file_changes() {
    let env = Env::new(
        &[("job.yaml", &cron_pipeline("0 * * * *", "UTC"))],
        BTreeMap::new(),
    )
    .await;
    let s = scheduler(env, ts("2026-03-01T00:30:00Z")).await;
    let list = s.sched.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].key, "0 * * * *@UTC");
    // A short id that needs no quoting, stable as the key is.
    assert_eq!(
        list[0].id,
        sluice_daemon::triggers::cron::short_id("0 * * * *@UTC")
    );
    assert!(
        list[0].id.len() == 6 && list[0].id.chars().all(|c| c.is_ascii_hexdigit()),
        "{}",
        list[0].id
    );
    assert_eq!(list[0].next.as_deref(), Some("2026-03-01T01:00:00+00:00"));

    // Paused by its short id, resumed by its key: both name it.
    let short = list[0].id.clone();
    s.sched
        .set_paused("job", &short, true, Some("alice"))
        .await
        .unwrap();
    s.run_until(ts("2026-03-01T03:30:00Z")).await;
    assert!(s.fires("job").await.is_empty(), "paused");
    s.sched
        .set_paused("job", "0 * * * *@UTC", false, Some("alice"))
        .await
        .unwrap();
    let ledger = s.env.store.misfires(Some("job"), 10).await.unwrap();
    assert_eq!(
        (ledger[0].misfire.missed, ledger[0].misfire.reason.as_str()),
        (3, "the schedule was paused")
    );
    s.run_until(ts("2026-03-01T04:00:00Z")).await;
    assert_eq!(s.fires("job").await, [ts("2026-03-01T04:00:00Z")]);
    assert!(s.sched.set_paused("job", "nope", true, None).await.is_err());

    // Editing the file reschedules (through the registry's event), no restart.
    write_file(
        &s.env.pipelines.join("job.yaml"),
        &cron_pipeline("30 * * * *", "UTC"),
    );
    s.env
        .registry
        .reload(&s.env.pipelines, &Default::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = s.sched.list().await.unwrap();
        if list.len() == 1 && list[0].key == "30 * * * *@UTC" {
            assert_eq!(list[0].next.as_deref(), Some("2026-03-01T04:30:00+00:00"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rescheduled: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A disabled pipeline's schedule stops; when enabled again the gap is skipped and recorded.
    s.env
        .registry
        .set_enabled("job", false, None)
        .await
        .unwrap();
    s.sched.reload().await.unwrap();
    assert!(s.sched.list().await.unwrap().is_empty());
    s.run_until(ts("2026-03-01T06:45:00Z")).await;
    s.env.registry.set_enabled("job", true, None).await.unwrap();
    s.sched.reload().await.unwrap();
    let ledger = s.env.store.misfires(Some("job"), 10).await.unwrap();
    assert_eq!(ledger[0].misfire.reason, "the pipeline was disabled");
    assert_eq!(s.fires("job").await.len(), 1);
    s.stop.cancel();
}
