//! The pipelines directory watcher against real files edited the way editors
//! do: write in place, write a temp file and rename it over, emacs-style
//! backup renames, invalid then fixed, delete. Each step asserts the active
//! version and the recorded errors; the save-to-active time is printed.

mod common;
#[path = "common/daemon.rs"]
mod daemon;
mod triggers_env;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_daemon::watcher::{WatchOptions, Watcher};
use sluice_shared::event::Event;
use sluice_shared::method as m;
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
            retry: Duration::from_secs(60),
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

fn errors_for(env: &Env, path: &Path) -> Vec<String> {
    env.registry
        .errors()
        .into_iter()
        .filter(|d| d.file == path)
        .map(|d| d.message)
        .collect()
}

/// Options whose retry is too far off to matter, so only file-system events
/// can have driven what a test sees.
fn no_retry() -> WatchOptions {
    WatchOptions {
        retry: Duration::from_secs(600),
        ..WatchOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_directory_keeps_the_loaded_pipelines_until_repaired() {
    let env = Env::new(&[("a.yaml", &pipeline("1"))], BTreeMap::new()).await;
    let stop = CancellationToken::new();
    let (_watcher, _) = Watcher::start(
        env.registry.clone(),
        &env.pipelines,
        ValidateOptions::default(),
        no_retry(),
        stop.clone(),
    )
    .await
    .unwrap();
    let dir = env.pipelines.clone();
    let away = env.dir.path().join("pipelines.away");
    // The directory replaced by a regular file of the same name: ENOTDIR.
    std::fs::rename(&dir, &away).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    until("the directory error", || {
        errors_for(&env, &dir)
            .iter()
            .any(|m| m.contains("Not a directory"))
    })
    .await;
    assert_eq!(
        version(&env, "a"),
        Some(1),
        "a failed read is not a deletion"
    );
    assert!(env.registry.get("a").unwrap().runnable());
    // Repaired, with an edit made meanwhile: the error clears and the edit loads.
    write_file(&away.join("a.yaml"), &pipeline("2"));
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    until("v2 after the repair", || version(&env, "a") == Some(2)).await;
    until("the error to clear", || env.registry.errors().is_empty()).await;
    // And edits in place are seen again: the watch is on the directory now there.
    write_file(&dir.join("a.yaml"), &pipeline("3"));
    until("v3", || version(&env, "a") == Some(3)).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_by_rename_is_followed() {
    let env = Env::new(&[("a.yaml", &pipeline("1"))], BTreeMap::new()).await;
    let stop = CancellationToken::new();
    let (_watcher, _) = Watcher::start(
        env.registry.clone(),
        &env.pipelines,
        ValidateOptions::default(),
        no_retry(),
        stop.clone(),
    )
    .await
    .unwrap();
    let dir = env.pipelines.clone();
    let next = env.dir.path().join("pipelines.next");
    std::fs::create_dir(&next).unwrap();
    write_file(&next.join("a.yaml"), &pipeline("2"));
    write_file(&next.join("b.yaml"), &pipeline("b"));
    // What deploy tools do: the old directory aside, the new one in its place.
    std::fs::rename(&dir, env.dir.path().join("pipelines.old")).unwrap();
    std::fs::rename(&next, &dir).unwrap();
    until("the new directory's files", || {
        version(&env, "a") == Some(2) && version(&env, "b") == Some(1)
    })
    .await;
    assert!(
        env.registry.errors().is_empty(),
        "{:?}",
        env.registry.errors()
    );
    // Edits now land in the new directory and are seen there.
    write_file(&dir.join("a.yaml"), &pipeline("3"));
    until("v3 in the new directory", || version(&env, "a") == Some(3)).await;
    // The old directory is no longer what counts.
    write_file(
        &env.dir.path().join("pipelines.old").join("c.yaml"),
        &pipeline("c"),
    );
    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    until("b removed", || {
        env.registry.get("b").is_some_and(|e| !e.present)
    })
    .await;
    assert!(
        env.registry.get("c").is_none(),
        "the old directory is not loaded"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_missing_for_a_while_keeps_the_set_and_is_picked_up_when_back() {
    let env = Env::new(&[("a.yaml", &pipeline("1"))], BTreeMap::new()).await;
    let stop = CancellationToken::new();
    let (watcher, _) = Watcher::start(
        env.registry.clone(),
        &env.pipelines,
        ValidateOptions::default(),
        no_retry(),
        stop.clone(),
    )
    .await
    .unwrap();
    let dir = env.pipelines.clone();
    let old = env.dir.path().join("pipelines.old");
    std::fs::rename(&dir, &old).unwrap();
    // A rescan in the gap (a SIGHUP mid-deploy) keeps everything.
    let report = watcher.rescan(None).await.unwrap();
    assert_eq!(report.unreadable, std::slice::from_ref(&dir));
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(
        errors_for(&env, &dir)
            .iter()
            .any(|m| m.contains("No such file or directory")),
        "{:?}",
        env.registry.errors()
    );
    assert!(env.registry.get("a").unwrap().runnable());
    // The new directory appears (created, not renamed in) and is picked up.
    std::fs::create_dir(&dir).unwrap();
    write_file(&dir.join("a.yaml"), &pipeline("2"));
    until("v2 from the recreated directory", || {
        version(&env, "a") == Some(2)
    })
    .await;
    until("the error to clear", || env.registry.errors().is_empty()).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_directory_is_retried_without_any_event() {
    let env = Env::new(&[("a.yaml", &pipeline("1"))], BTreeMap::new()).await;
    let stop = CancellationToken::new();
    let dir = env.pipelines.clone();
    let parent = env.dir.path().join("parent");
    std::fs::create_dir(&parent).unwrap();
    // A directory reached through a symlink whose target comes and goes: the
    // symlink's parent sees nothing of the target's changes, so only the
    // retry can notice the repair.
    let link = parent.join("pipelines");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let (_watcher, _) = Watcher::start(
        env.registry.clone(),
        &link,
        ValidateOptions::default(),
        WatchOptions {
            retry: Duration::from_millis(200),
            ..WatchOptions::default()
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let hidden = env.dir.path().join("hidden");
    std::fs::rename(&dir, &hidden).unwrap();
    until("the directory error", || {
        !errors_for(&env, &link).is_empty()
    })
    .await;
    assert!(env.registry.get("a").unwrap().runnable());
    write_file(&hidden.join("a.yaml"), &pipeline("2"));
    std::fs::rename(&hidden, &dir).unwrap();
    until("v2 after the retry", || version(&env, "a") == Some(2)).await;
    assert!(
        env.registry.errors().is_empty(),
        "{:?}",
        env.registry.errors()
    );
    stop.cancel();
}

/// One call on a fresh connection (so a poll can make one per attempt).
async fn call<M: m::Method>(socket: &Path) -> Value {
    let mut c = daemon::Client::connect(socket).await;
    c.hello().await.expect("hello");
    c.call::<M>(json!({}))
        .await
        .unwrap_or_else(|e| panic!("{}: {e:?}", M::NAME))
}

/// (version, present) of a pipeline as `pipelines.list` reports it.
async fn listed(socket: &Path, name: &str) -> Option<(i64, bool)> {
    let list = call::<m::PipelinesList>(socket).await;
    list.as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| Some((p["version"].as_i64()?, p["present"].as_bool()?)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_daemon_follows_a_directory_swapped_by_rename() {
    let d = daemon::Daemon::start(
        "[access]\nviewer = [\"*\"]\n",
        &[("a.yaml", &pipeline("1"))],
    );
    let socket = d.socket.clone();
    assert_eq!(listed(&socket, "a").await, Some((1, true)));
    let dir = d.path("pipelines");
    let dir_text = dir.display().to_string();

    // The old directory moved aside; for a moment there is none.
    std::fs::rename(&dir, d.path("pipelines.old")).unwrap();
    let errors = common::eventually(20, "the missing directory in config.errors", || {
        let socket = socket.clone();
        let dir_text = dir_text.clone();
        async move {
            let errors = call::<m::ConfigErrorsList>(&socket).await;
            let found = errors["diagnostics"].as_array()?.iter().any(|e| {
                e["file"] == dir_text.as_str()
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("No such file or directory"))
            });
            found.then_some(errors)
        }
    })
    .await;
    assert_eq!(
        listed(&socket, "a").await,
        Some((1, true)),
        "the loaded set is kept: {errors}"
    );

    // The new directory renamed in place.
    let next = d.path("pipelines.next");
    std::fs::create_dir(&next).unwrap();
    write_file(&next.join("a.yaml"), &pipeline("2"));
    write_file(&next.join("b.yaml"), &pipeline("b"));
    std::fs::rename(&next, &dir).unwrap();
    common::eventually(20, "a v2 and b from the new directory", || {
        let socket = socket.clone();
        async move {
            (listed(&socket, "a").await == Some((2, true))
                && listed(&socket, "b").await == Some((1, true)))
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        call::<m::ConfigErrorsList>(&socket).await["diagnostics"],
        json!([]),
        "the error cleared"
    );
    // Edits in the new directory are watched.
    write_file(&dir.join("a.yaml"), &pipeline("3"));
    common::eventually(20, "a v3 edited in the new directory", || {
        let socket = socket.clone();
        async move { (listed(&socket, "a").await == Some((3, true))).then_some(()) }
    })
    .await;
}
