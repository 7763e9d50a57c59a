//! Opening the store on PostgreSQL: connect, refuse a schema newer than this
//! binary, migrate (sqlx holds an advisory lock, so daemons starting together
//! migrate once), then a read pool and the writer's own connection.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::mpsc;

use super::backend::Reads;
use super::writer::{Reply, Write};
use super::{Durability, StoreError, StoreOptions};

/// Connect options from a `postgres://` URL, the password (from a secret)
/// and the statement timeout; the URL itself must not carry a password.
pub(crate) fn connect_options(
    url: &str,
    options: &StoreOptions,
) -> Result<PgConnectOptions, StoreError> {
    let parsed = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("store url {}: {e}", redact(url))))?;
    let carries_password = url::Url::parse(url)
        .is_ok_and(|u| u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password"));
    if carries_password {
        return Err(StoreError::Config(format!(
            "store url {} carries a password; give it as a secret instead ([store] password = \"NAME\")",
            redact(url)
        )));
    }
    let timeout_ms = options.statement_timeout.as_millis().to_string();
    let mut parsed = parsed
        .application_name("sluiced")
        .options([("statement_timeout", timeout_ms.as_str())])
        .disable_statement_logging();
    if let Some(password) = &options.password {
        parsed = parsed.password(password);
    }
    Ok(parsed)
}

/// A URL fit for messages: any password (userinfo or `?password=`) shown as `***`.
pub(crate) fn redact(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "(unparsable url)".to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Connects, checks and migrates the schema, opens the read pool and the
/// writer connection.
pub(crate) async fn open(
    url: &str,
    options: &StoreOptions,
) -> Result<(Reads, mpsc::Sender<(Write, Reply)>), StoreError> {
    let connect = connect_options(url, options)?;
    let unreachable = |e: sqlx::Error| StoreError::Unreachable {
        url: redact(url),
        reason: e.to_string(),
    };
    let mut conn = PgConnection::connect_with(&connect)
        .await
        .map_err(unreachable)?;
    super::migrate(
        sqlx::migrate!("./migrations/postgres"),
        &mut conn,
        &redact(url),
    )
    .await?;
    conn.close().await.map_err(unreachable)?;
    let reads = PgPoolOptions::new()
        .max_connections(options.pool_size)
        .min_connections(0)
        .connect_with(connect.clone())
        .await
        .map_err(unreachable)?;
    // Durability "normal" on PostgreSQL: the commit does not wait for the
    // WAL flush (a crash may lose the last commits, never corrupt), as
    // `synchronous = NORMAL` on SQLite.
    let writer_options = match options.durability {
        Durability::Full => connect,
        Durability::Normal => connect.options([("synchronous_commit", "off")]),
    };
    let writer = PgConnection::connect_with(&writer_options)
        .await
        .map_err(unreachable)?;
    let (tx, rx) = mpsc::channel(4096);
    super::writer::postgres::start(writer, writer_options, rx);
    Ok((Reads::Postgres(reads), tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_never_repeated() {
        let opts = StoreOptions::postgres("postgres://u:hunter2@db/sluice");
        let err = connect_options("postgres://u:hunter2@db/sluice", &opts)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("carries a password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = connect_options("postgres://u@db/sluice?password=hunter2", &opts)
            .expect_err("refused in the query too")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(connect_options("postgres://u@db/sluice", &opts).is_ok());
        assert!(
            connect_options("postgres:///sluice?host=/run/postgresql", &opts).is_ok(),
            "a socket directory"
        );
    }
}
