//! Throwaway PostgreSQL databases for tests: each [`TestDatabase`] is a fresh,
//! uniquely named database on the test server, dropped when the value is, so
//! tests run in parallel without seeing each other's rows.
//!
//! Environment:
//! - `SLUICE_TEST_PG_URL`: the server to create databases on, as the URL of a
//!   database to connect to for that (default
//!   `postgres://root@127.0.0.1:5432/postgres`; the project's machines run
//!   PostgreSQL 15 there with trust authentication).
//! - `SLUICE_TEST_STORE=postgres`: the switch of the integration-test matrix.
//!   Store tests run on SQLite by default and on PostgreSQL when it is set
//!   ([`TestDatabase::wanted`]); tests that compare the two backends (such as
//!   `tests/schema.rs`) use PostgreSQL whenever it answers.
//! - `CI=true`: a PostgreSQL that does not answer fails the test (panics, with
//!   how to start it). Elsewhere a notice is printed once per process and
//!   [`TestDatabase::create`] returns `None`: the PostgreSQL half of the store
//!   tests is skipped, and `cargo test` passes on a machine without it.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The server used when `SLUICE_TEST_PG_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/postgres";
/// How long connecting to the server may take before it counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a database may take before it is left behind.
const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// Databases created by this process so far (part of each name).
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Whether the "skipped" notice has been printed in this process.
static NOTICE_PRINTED: AtomicBool = AtomicBool::new(false);

/// A fresh PostgreSQL database that is dropped (`WITH (FORCE)`) when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    name: String,
    admin: String,
}

impl TestDatabase {
    /// Whether the store tests should run on PostgreSQL (`SLUICE_TEST_STORE=postgres`).
    pub fn wanted() -> bool {
        std::env::var("SLUICE_TEST_STORE").is_ok_and(|v| v == "postgres")
    }

    /// The URL databases are created through: `SLUICE_TEST_PG_URL` or [`DEFAULT_ADMIN_URL`].
    pub fn admin_url() -> String {
        std::env::var("SLUICE_TEST_PG_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
    }

    /// Creates a new database named `sluice_t_<pid>_<counter>_<random hex>`.
    ///
    /// Returns `None` (after a notice on stderr, printed once per process) when
    /// PostgreSQL cannot be used; panics instead when `CI=true`.
    pub async fn create() -> Option<Self> {
        let admin = Self::admin_url();
        let name = format!(
            "sluice_t_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let mut conn =
            match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(&admin)).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return unusable(&admin, &e.to_string()),
                Err(_) => {
                    return unusable(
                        &admin,
                        &format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    );
                }
            };
        let created = sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await;
        // The database exists or not either way; a failed close only leaks one idle connection.
        let _ = conn.close().await;
        if let Err(e) = created {
            return unusable(&admin, &format!("CREATE DATABASE {name} failed: {e}"));
        }
        Some(Self {
            url: with_database(&admin, &name),
            name,
            admin,
        })
    }

    /// The URL of this database (the admin URL with its database name replaced).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = std::mem::take(&mut self.admin);
        let name = std::mem::take(&mut self.name);
        // Drop may run inside a runtime (where blocking on another future would
        // panic) or outside any: a thread of its own with its own runtime works in both.
        let worker = std::thread::Builder::new()
            .name("testdb-drop".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        say(&format!(
                            "warning: test database {name} not dropped: no runtime: {e}"
                        ));
                        return;
                    }
                };
                // The timeout's timer needs the runtime: made inside block_on.
                let outcome = runtime.block_on(async {
                    tokio::time::timeout(DROP_TIMEOUT, drop_database(&admin, &name)).await
                });
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => say(&format!("warning: test database {name} not dropped: {e}")),
                    Err(_) => say(&format!(
                        "warning: test database {name} not dropped within {} s",
                        DROP_TIMEOUT.as_secs()
                    )),
                }
            });
        match worker {
            Ok(handle) => {
                if handle.join().is_err() {
                    say("warning: the thread dropping a test database panicked");
                }
            }
            Err(e) => say(&format!(
                "warning: test database not dropped: no thread: {e}"
            )),
        }
    }
}

/// `DROP DATABASE … WITH (FORCE)`: ends the connections that tests left open.
async fn drop_database(admin: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(admin).await?;
    let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    dropped.map(|_| ())
}

/// What [`TestDatabase::create`] does when PostgreSQL at `admin` cannot be used.
fn unusable(admin: &str, reason: &str) -> Option<TestDatabase> {
    let shown = super::postgres::redact(admin);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "PostgreSQL at {shown} is unreachable ({reason}); with CI=true the store tests \
             need it. Start it with `service postgresql start` (or `pg_ctlcluster 15 main \
             start`), or set SLUICE_TEST_PG_URL to a server that answers."
        );
    }
    if !NOTICE_PRINTED.swap(true, Ordering::Relaxed) {
        say(&format!(
            "notice: PostgreSQL at {shown} is not reachable ({reason}); the PostgreSQL half \
             of the store tests is skipped (start it with `service postgresql start`, or set \
             SLUICE_TEST_PG_URL)"
        ));
    }
    None
}

/// Writes a line to stderr directly: the test harness captures `eprintln!`
/// of passing tests, and these lines are meant to be seen.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `url` with its database (the path after the host) replaced by `name`; the
/// query string, if any, is kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..authority_end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::redact;

    #[test]
    fn the_database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://root@127.0.0.1:5432/postgres", "t1"),
            "postgres://root@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t1"),
            "postgres://h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://h?application_name=x", "t1"),
            "postgres://h/t1?application_name=x"
        );
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("postgres://root@h:5432/db"),
            "postgres://root@h:5432/db"
        );
        assert_eq!(redact("postgres://h:5432/db"), "postgres://h:5432/db");
    }
}
