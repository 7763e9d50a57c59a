//! The two backends behind one [`super::Store`]: what differs between SQLite
//! and PostgreSQL on the read side, kept in one place.
//!
//! An enum rather than a trait object: there are exactly two backends, both
//! known at compile time; an enum keeps one concrete `Store` type for every
//! caller (no generics spreading through the engine and the API), static
//! dispatch, and async methods without boxing. Read queries are written once
//! and compiled once per backend by [`read!`]; SQL text is shared wherever
//! both databases accept it (`$N` placeholders, `ON CONFLICT`, `"user"`
//! quoted), and [`Dialect`] picks the few statements that differ.

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};

use super::StoreError;

/// Which SQL the backend speaks, for the statements that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The smaller of two values (`MIN(a, b)` is SQLite's scalar form, `LEAST` PostgreSQL's).
    pub(crate) fn least(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("MIN({a}, {b})"),
            Self::Postgres => format!("LEAST({a}, {b})"),
        }
    }

    /// The larger of two values.
    pub(crate) fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Self::Sqlite => format!("MAX({a}, {b})"),
            Self::Postgres => format!("GREATEST({a}, {b})"),
        }
    }
}

/// The read side of a backend: a pool of connections that never write.
#[derive(Clone, Debug)]
pub(crate) enum Reads {
    /// Read-only SQLite connections (WAL: they never wait behind a commit).
    Sqlite(SqlitePool),
    /// A PostgreSQL pool (shared with nothing else; the writer has its own connection).
    Postgres(PgPool),
}

impl Reads {
    /// The backend's dialect.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Runs `$body` with `$pool` bound to the store's read pool. The body is
/// compiled once per backend, so one query text serves both with each
/// driver's own types.
macro_rules! read {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.reads() {
            $crate::store::backend::Reads::Sqlite($pool) => $body,
            $crate::store::backend::Reads::Postgres($pool) => $body,
        }
    };
}
pub(crate) use read;

/// Column access that reads the same on both backends' rows.
pub(crate) trait Cols {
    /// An integer column.
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError>;
    /// A text column.
    fn text(&self, col: &str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    /// A JSON column (text on SQLite, `jsonb` on PostgreSQL), decoded as `T`.
    fn json_as<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError>;
    /// A JSON column as a value.
    fn json(&self, col: &str) -> Result<Option<Value>, StoreError> {
        self.json_as(col)
    }
}

fn data(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Data(format!("column {col}: {e}"))
}

/// The accessors that read the same on both drivers.
macro_rules! plain_columns {
    () => {
        fn int(&self, col: &str) -> Result<i64, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn text(&self, col: &str) -> Result<String, StoreError> {
            Ok(self.try_get(col)?)
        }
        fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
            Ok(self.try_get(col)?)
        }
    };
}

impl Cols for SqliteRow {
    plain_columns!();
    fn json_as<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError> {
        self.try_get::<Option<&str>, _>(col)?
            .map(|t| serde_json::from_str(t).map_err(|e| data(col, e)))
            .transpose()
    }
}

impl Cols for PgRow {
    plain_columns!();
    fn json_as<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError> {
        // Decoded from the JSON value here rather than by sqlx, so a value
        // that does not fit `T` is reported with its column.
        self.try_get::<Option<sqlx::types::Json<Value>>, _>(col)?
            .map(|j| serde_json::from_value(j.0).map_err(|e| data(col, e)))
            .transpose()
    }
}
