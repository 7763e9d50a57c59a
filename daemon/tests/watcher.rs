//! The pipelines directory watcher against real files edited the way editors
//! do: write in place, write a temp file and rename it over, emacs-style
//! backup renames, invalid then fixed, delete. Each step asserts the active
//! version and the recorded errors; the save-to-active time is printed.

mod triggers_env;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_daemon::watcher::{WatchOptions, Watcher};
use sluice_shared::event::Event;
use sluice_shared::validate::ValidateOptions;
use tokio_util::sync::CancellationToken;
use triggers_env::{Env, write_file};

fn pipeline(echo: &str) -> String {
    format!("nodes:\n  - id: a\n    kind: shell\n    run: echo {echo}\n")
}

/// Polls `check` until it holds (deadline 10 s); returns how long it took.
async fn until<F: FnMut() -> bool>(what: &str, mut check: F) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

fn version(env: &Env, name: &str) -> Option<i64> {
    env.registry
        .get(name)
        .filter(|e| e.present)
        .map(|e| e.version)
}

fn rename_over(dir: &Path, temp: &str, target: &str, text: &str) {
    let t = dir.join(temp);
    std::fs::write(&t, text).unwrap();
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&t, dir.join(target)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_become_versions_and_bad_saves_keep_the_old_one() {
    let env = Env::new(&[], BTreeMap::new()).await;
    let mut events = env.engine.subscribe();
    let stop = CancellationToken::new();
    let (_watcher, first) = Watcher::start(
        env.registry.clone(),
        &env.pipelines,
        ValidateOptions::default(),
        WatchOptions::default(),
        stop.clone(),
    )
    .await
    .unwrap();
    assert!(first.updated.is_empty());
    let dir = env.pipelines.clone();
    let file = dir.join("hello.yaml");
    let mut timings = Vec::new();

    // Created in place.
    write_file(&file, &pipeline("1"));
    timings.push((
        "create",
        until("v1", || version(&env, "hello") == Some(1)).await,
    ));
    // Edited in place.
    write_file(&file, &pipeline("2"));
    timings.push((
        "write in place",
        until("v2", || version(&env, "hello") == Some(2)).await,
    ));
    // Temp file renamed over it (vim's writebackup, most IDEs, atomic writers).
    rename_over(&dir, ".hello.yaml.tmp4913", "hello.yaml", &pipeline("3"));
    timings.push((
        "temp + rename",
        until("v3", || version(&env, "hello") == Some(3)).await,
    ));
    // sed -i: a temp file without an extension renamed over.
    rename_over(&dir, "sedAb12Cd", "hello.yaml", &pipeline("4"));
    timings.push((
        "sed -i",
        until("v4", || version(&env, "hello") == Some(4)).await,
    ));
    // emacs: the old file becomes a backup, a new one is written.
    std::fs::rename(&file, dir.join("hello.yaml~")).unwrap();
    write_file(&file, &pipeline("5"));
    timings.push((
        "emacs backup",
        until("v5", || version(&env, "hello") == Some(5)).await,
    ));
    assert!(
        env.registry.errors().is_empty(),
        "{:#?}",
        env.registry.errors()
    );

    // An invalid save is rejected with the validator's errors; version 5 keeps running.
    write_file(&file, "nodes:\n  - id: a\n    kind: shel\n");
    until("the error", || !env.registry.errors().is_empty()).await;
    let errors = env.registry.errors();
    assert!(
        errors[0].message.contains("unknown node kind 'shel'"),
        "{errors:#?}"
    );
    assert_eq!(errors[0].file, file);
    assert_eq!(errors[0].line, Some(3), "errors carry the line");
    assert_eq!(version(&env, "hello"), Some(5));
    let announced = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::ConfigError {
                file: f,
                diagnostics,
            }) = events.recv().await
            {
                return (f, diagnostics);
            }
        }
    })
    .await
    .expect("a ConfigError event");
    assert_eq!(announced.0, file.display().to_string());
    assert_eq!(announced.1, errors);
    // Fixed: a new version, no errors.
    write_file(&file, &pipeline("6"));
    timings.push((
        "fixed",
        until("v6", || version(&env, "hello") == Some(6)).await,
    ));
    assert!(env.registry.errors().is_empty());

    // A second file claiming the same name is an error for that file, even
    // when its name sorts first.
    write_file(
        &dir.join("aa-copy.yaml"),
        &format!("name: hello\n{}", pipeline("7")),
    );
    until("the duplicate error", || !env.registry.errors().is_empty()).await;
    let dup = &env.registry.errors()[0];
    assert!(
        dup.message
            .contains("pipeline name 'hello' is already used by")
            && dup.file.ends_with("aa-copy.yaml"),
        "{dup:?}"
    );
    assert_eq!(version(&env, "hello"), Some(6));
    std::fs::remove_file(dir.join("aa-copy.yaml")).unwrap();
    until("the duplicate is gone", || env.registry.errors().is_empty()).await;

    // A file other users may write is refused, saying why.
    write_file(&dir.join("open.yaml"), &pipeline("x"));
    std::fs::set_permissions(
        dir.join("open.yaml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    until("the refusal", || {
        env.registry
            .errors()
            .iter()
            .any(|e| e.message.contains("writable by every user"))
    })
    .await;
    assert!(env.registry.get("open").is_none_or(|e| !e.present));
    std::fs::remove_file(dir.join("open.yaml")).unwrap();

    // Deleted: the pipeline is disabled and its history stays.
    let old = env.registry.get("hello").unwrap().version_id;
    std::fs::remove_file(&file).unwrap();
    timings.push((
        "delete",
        until("removal", || {
            env.registry.get("hello").is_some_and(|e| !e.present)
        })
        .await,
    ));
    assert!(!env.registry.get("hello").unwrap().runnable());
    assert!(env.store.version(old).await.is_ok(), "history is kept");
    // And it comes back when the file does.
    write_file(&file, &pipeline("6"));
    until("the return", || {
        env.registry.get("hello").is_some_and(|e| e.runnable())
    })
    .await;

    for (what, t) in &timings {
        eprintln!("save to active ({what}): {} ms", t.as_millis());
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_picks_up_changes_on_demand() {
    let env = Env::new(&[("a.yaml", &pipeline("1"))], BTreeMap::new()).await;
    let stop = CancellationToken::new();
    let (watcher, _) = Watcher::start(
        env.registry.clone(),
        &env.pipelines,
        ValidateOptions::default(),
        // A long quiet period, so only the rescan can have applied the change in time.
        WatchOptions {
            debounce: Duration::from_secs(30),
            max_delay: Duration::from_secs(60),
        },
        stop.clone(),
    )
    .await
    .unwrap();
    write_file(&env.pipelines.join("a.yaml"), &pipeline("2"));
    let report = watcher.rescan(None).await.unwrap();
    assert_eq!(report.updated, ["a"]);
    assert_eq!(version(&env, "a"), Some(2));
    stop.cancel();
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let env = Env::new(&[], BTreeMap::new()).await;
    let r = Watcher::start(
        env.registry.clone(),
        &env.dir.path().join("nope"),
        ValidateOptions::default(),
        WatchOptions::default(),
        CancellationToken::new(),
    )
    .await;
    assert!(r.is_err());
}
