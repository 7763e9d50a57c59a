//! `[store]` as operators get it wrong: a password inside the URL, a server
//! that does not answer, a secret that does not exist, a database a newer
//! sluiced migrated. Each fails the start (and `check-config`) with a message
//! that says what and where, and never prints a password.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{Lines, wait_exit};
use sluice_daemon::store::testdb::TestDatabase;

/// Starts the real `sluiced` with `config` and returns (success, stderr).
fn start(dir: &Path, config: &str) -> (bool, String) {
    std::fs::create_dir_all(dir.join("pipelines")).expect("mkdir");
    std::fs::write(dir.join("sluiced.toml"), config).expect("config");
    let socket = dir.join("s.sock");
    let mut child = common::sluiced_in(dir, &socket, "127.0.0.1:0", "warn")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluiced");
    let mut lines = Lines::new(child.stderr.take().expect("stderr"));
    let status = wait_exit(&mut child, 60, "sluiced with a bad [store]");
    let said = lines.rest(30, "sluiced's stderr").join("\n");
    assert!(!socket.exists(), "a failed start leaves no socket: {said}");
    (status.success(), said)
}

/// `sluiced check-config` with `config`: (success, stderr).
fn check(dir: &Path, config: &str) -> (bool, String) {
    std::fs::write(dir.join("sluiced.toml"), config).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluiced"))
        .arg("--config")
        .arg(dir.join("sluiced.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("check-config")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_password_in_the_url_is_refused_without_being_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[store]\nurl = \"postgres://sluice:hunter2@127.0.0.1:5432/sluice\"\n";
    for (ok, said) in [start(dir.path(), config), check(dir.path(), config)] {
        assert!(!ok, "{said}");
        assert!(said.contains("carries a password"), "{said}");
        assert!(said.contains("[store] password"), "says what to do: {said}");
        assert!(!said.contains("hunter2"), "the password is printed: {said}");
    }
}

#[test]
fn an_unreachable_server_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1 on loopback: nothing listens there, the connect is refused at once.
    let (ok, said) = start(
        dir.path(),
        "[store]\nurl = \"postgres://sluice@127.0.0.1:1/sluice\"\n",
    );
    assert!(!ok, "{said}");
    assert!(
        said.contains("cannot reach the PostgreSQL store at postgres://sluice@127.0.0.1:1/sluice"),
        "{said}"
    );
    // check-config does not connect: the same file is well-formed.
    let (ok, said) = check(
        dir.path(),
        "[store]\nurl = \"postgres://sluice@127.0.0.1:1/sluice\"\n",
    );
    assert!(ok, "{said}");
}

#[test]
fn malformed_store_settings_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (config, expect) in [
        (
            "[store]\nurl = \"mysql://root@db/x\"\n",
            "neither sqlite:// nor postgres://",
        ),
        (
            "[store]\nurl = \"postgres://u@db/x\"\npassword = \"pg-password\"\n",
            "names the secret 'pg-password', which is not defined",
        ),
        (
            "[store]\nurl = \"postgres://u@db/x\"\npool_size = 0\n",
            "pool_size must be at least 1",
        ),
        ("[store]\nurl = \"sqlite://\"\n", "names no file"),
        ("[store]\nurls = \"sqlite:///x\"\n", "unknown field `urls`"),
    ] {
        let (ok, said) = check(dir.path(), config);
        assert!(!ok, "{config}: {said}");
        assert!(said.contains(expect), "{config}: {said}");
    }
}

#[tokio::test]
async fn a_store_migrated_by_a_newer_sluiced_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("newer.db");
    let store = sluice_daemon::store::Store::open(&db, sluice_daemon::store::Durability::Full)
        .await
        .expect("store");
    drop(store);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, X'00', 0)",
    )
    .expect("a future migration");
    drop(conn);
    // The store's connections close on their own threads after the drop; the
    // last one to close checkpoints the WAL into the file and removes it. Only
    // then is the file what a refused start must leave as it is.
    let wal = dir.path().join("newer.db-wal");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's connections never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = std::fs::read(&db).expect("read");
    let config = format!("[store]\nurl = \"sqlite://{}\"\n", db.display());
    let (ok, said) = start(dir.path(), &config);
    assert!(!ok, "{said}");
    assert!(
        said.contains("has schema version 9999, newer than this sluiced knows"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&db).expect("read"),
        before,
        "the file was changed"
    );

    let Some(pg) = TestDatabase::create().await else {
        return;
    };
    let url = pg.url().to_owned();
    let store =
        sluice_daemon::store::Store::connect(&sluice_daemon::store::StoreOptions::postgres(&url))
            .await
            .expect("postgres store");
    drop(store);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("a future migration");
    let config = format!("[store]\nurl = \"{url}\"\n");
    let pg_dir = tempfile::tempdir().expect("tempdir");
    let (ok, said) = tokio::task::spawn_blocking(move || {
        let r = start(pg_dir.path(), &config);
        drop(pg_dir);
        r
    })
    .await
    .expect("join");
    assert!(!ok, "{said}");
    assert!(said.contains("schema version 9999"), "{said}");
}
