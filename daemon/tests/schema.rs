//! The SQLite and PostgreSQL migrations describe the same schema: the same
//! tables and views with the same columns (name, order, nullability, type
//! family), keys, foreign keys and indexes; JSON and JSONB exactly where the
//! store expects them. Also: the PostgreSQL migrations apply once and only once, and
//! the result takes a run as the store writes one.
//!
//! Needs PostgreSQL (see `sluice_daemon::store::testdb`); without it the tests
//! return early after a notice, unless `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sluice_daemon::store::testdb::TestDatabase;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, Row, SqliteConnection};

/// The columns that are JSON or JSONB on PostgreSQL, with their type; every
/// other JSON column is TEXT there.
const JSON_COLUMNS: [(&str, &str, &str); 4] = [
    ("approvals", "votes", "jsonb"),
    ("run_nodes", "output", "json"),
    ("run_payloads", "inputs", "json"),
    ("run_payloads", "trigger", "json"),
];

/// What a column's type is, across the two backends' names for it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Family {
    /// SQLite INTEGER, PostgreSQL bigint.
    Integer,
    /// SQLite TEXT, PostgreSQL text, json or jsonb.
    Text,
    /// SQLite REAL, PostgreSQL double precision.
    Real,
    /// Anything else (e.g. a PostgreSQL `integer`, which the conventions rule out).
    Other(String),
}

impl Family {
    fn sqlite(declared: &str) -> Self {
        match declared.to_ascii_uppercase().as_str() {
            "INTEGER" => Self::Integer,
            "TEXT" => Self::Text,
            "REAL" => Self::Real,
            other => Self::Other(format!("SQLite {other}")),
        }
    }

    fn postgres(data_type: &str) -> Self {
        match data_type {
            "bigint" => Self::Integer,
            "text" | "json" | "jsonb" => Self::Text,
            "double precision" => Self::Real,
            other => Self::Other(format!("PostgreSQL {other}")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Column {
    name: String,
    nullable: bool,
    family: Family,
    /// The type as the backend names it (for messages).
    declared: String,
}

/// A foreign key: column, referenced table and column, ON DELETE action.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    column: String,
    table: String,
    to: String,
    on_delete: String,
}

/// An index that is not the backing of a PRIMARY KEY or UNIQUE constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Index {
    table: String,
    columns: Vec<String>,
    unique: bool,
    partial: bool,
}

/// One backend's schema, as introspected.
#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    tables: BTreeMap<String, Vec<Column>>,
    views: BTreeMap<String, Vec<Column>>,
    primary_keys: BTreeMap<String, Vec<String>>,
    uniques: BTreeMap<String, BTreeSet<Vec<String>>>,
    foreign_keys: BTreeMap<String, BTreeSet<ForeignKey>>,
    indexes: BTreeMap<String, Index>,
}

/// A PostgreSQL constraint: table, kind (p, u, f), columns, referenced table
/// and columns, ON DELETE action (`confdeltype`).
type ConstraintRow = (String, String, Vec<String>, String, Vec<String>, String);

/// Bookkeeping tables of the migrator and of SQLite itself.
fn ignored(table: &str) -> bool {
    table == "_sqlx_migrations" || table.starts_with("sqlite_")
}

async fn sqlite_schema(conn: &mut SqliteConnection) -> Schema {
    let mut schema = Schema::default();
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (name, kind) in objects.into_iter().filter(|(n, _)| !ignored(n)) {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(&name)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let pk_columns = rows.iter().filter(|r| r.3 > 0).count();
        let columns = rows
            .iter()
            .map(|(column, declared, notnull, pk)| {
                // An INTEGER PRIMARY KEY is the rowid: never NULL, though
                // table_info does not say NOT NULL for it. (WITHOUT ROWID keys say so.)
                let rowid = *pk == 1 && pk_columns == 1 && declared.eq_ignore_ascii_case("INTEGER");
                Column {
                    name: column.clone(),
                    nullable: *notnull == 0 && !rowid,
                    family: Family::sqlite(declared),
                    declared: declared.clone(),
                }
            })
            .collect();
        if kind == "view" {
            schema.views.insert(name, columns);
            continue;
        }
        schema.tables.insert(name.clone(), columns);
        let mut pk: Vec<(i64, String)> = rows
            .iter()
            .filter(|r| r.3 > 0)
            .map(|r| (r.3, r.0.clone()))
            .collect();
        pk.sort();
        if !pk.is_empty() {
            schema
                .primary_keys
                .insert(name.clone(), pk.into_iter().map(|(_, c)| c).collect());
        }

        let indexes: Vec<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?) ORDER BY name",
        )
        .bind(&name)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for (index, unique, origin, partial) in indexes {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
            match origin.as_str() {
                "u" => {
                    schema
                        .uniques
                        .entry(name.clone())
                        .or_default()
                        .insert(columns);
                }
                "c" => {
                    schema.indexes.insert(
                        index,
                        Index {
                            table: name.clone(),
                            columns,
                            unique: unique != 0,
                            partial: partial != 0,
                        },
                    );
                }
                _ => {} // "pk": the primary key, compared above
            }
        }

        let fks: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
            "SELECT \"from\", \"table\", \"to\", on_delete FROM pragma_foreign_key_list(?)",
        )
        .bind(&name)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for (column, table, to, on_delete) in fks {
            // No column named: the referenced table's primary key (single-column here).
            let to = match to {
                Some(to) => to,
                None => sqlx::query_scalar("SELECT name FROM pragma_table_info(?) WHERE pk = 1")
                    .bind(&table)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap(),
            };
            schema
                .foreign_keys
                .entry(name.clone())
                .or_default()
                .insert(ForeignKey {
                    column,
                    table,
                    to,
                    on_delete,
                });
        }
    }
    schema
}

async fn postgres_schema(conn: &mut PgConnection) -> Schema {
    let mut schema = Schema::default();
    let objects: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, table_type::text FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY table_name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
         FROM information_schema.columns
         WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (name, kind) in objects.into_iter().filter(|(n, _)| !ignored(n)) {
        let cols = columns
            .iter()
            .filter(|c| c.0 == name)
            .map(|(_, column, data_type, nullable)| Column {
                name: column.clone(),
                nullable: nullable == "YES",
                family: Family::postgres(data_type),
                declared: data_type.clone(),
            })
            .collect();
        match kind.as_str() {
            "VIEW" => schema.views.insert(name, cols),
            _ => schema.tables.insert(name, cols),
        };
    }

    let constraints: Vec<ConstraintRow> = sqlx::query_as(
        "SELECT t.relname::text, c.contype::text,
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, ord)
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                      ORDER BY k.ord),
                coalesce(r.relname::text, ''),
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, ord)
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                      ORDER BY k.ord),
                c.confdeltype::text
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             LEFT JOIN pg_class r ON r.oid = c.confrelid
             WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (table, kind, cols, ref_table, ref_cols, on_delete) in constraints {
        if ignored(&table) {
            continue;
        }
        match kind.as_str() {
            "p" => {
                schema.primary_keys.insert(table, cols);
            }
            "u" => {
                schema.uniques.entry(table).or_default().insert(cols);
            }
            _ => {
                assert_eq!(
                    cols.len(),
                    1,
                    "multi-column foreign key on {table}: extend this test"
                );
                let on_delete = match on_delete.as_str() {
                    "a" => "NO ACTION",
                    "r" => "RESTRICT",
                    "c" => "CASCADE",
                    "n" => "SET NULL",
                    "d" => "SET DEFAULT",
                    other => panic!("unknown confdeltype {other:?}"),
                };
                schema
                    .foreign_keys
                    .entry(table)
                    .or_default()
                    .insert(ForeignKey {
                        column: cols[0].clone(),
                        table: ref_table,
                        to: ref_cols[0].clone(),
                        on_delete: on_delete.into(),
                    });
            }
        }
    }

    let indexes: Vec<(String, String, Vec<String>, bool, bool)> = sqlx::query_as(
        "SELECT i.relname::text, t.relname::text,
            ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(n, ord)
                  JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n
                  ORDER BY k.ord),
            x.indisunique, x.indpred IS NOT NULL
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema()
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                           WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u'))",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for (index, table, columns, unique, partial) in indexes {
        if !ignored(&table) {
            schema.indexes.insert(
                index,
                Index {
                    table,
                    columns,
                    unique,
                    partial,
                },
            );
        }
    }
    schema
}

/// Differences between the columns of one table or view, each naming the column.
fn compare_columns(
    what: &str,
    name: &str,
    sqlite: &[Column],
    postgres: &[Column],
    check_nullability: bool,
    out: &mut Vec<String>,
) {
    for s in sqlite {
        let Some(p) = postgres.iter().find(|p| p.name == s.name) else {
            out.push(format!(
                "{what} {name}, column {}: missing in PostgreSQL",
                s.name
            ));
            continue;
        };
        if s.family != p.family {
            out.push(format!(
                "{what} {name}, column {}: type {} in SQLite but {} in PostgreSQL \
                 (INTEGER is bigint there, TEXT text, json or jsonb, REAL double precision)",
                s.name, s.declared, p.declared
            ));
        }
        if check_nullability && s.nullable != p.nullable {
            let says = |nullable: bool| if nullable { "nullable" } else { "NOT NULL" };
            out.push(format!(
                "{what} {name}, column {}: {} in SQLite but {} in PostgreSQL",
                s.name,
                says(s.nullable),
                says(p.nullable)
            ));
        }
    }
    for p in postgres {
        if !sqlite.iter().any(|s| s.name == p.name) {
            out.push(format!(
                "{what} {name}, column {}: missing in SQLite",
                p.name
            ));
        }
    }
    let order = |cols: &[Column]| cols.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let (s, p) = (order(sqlite), order(postgres));
    if s != p && s.len() == p.len() && s.iter().all(|c| p.contains(c)) {
        out.push(format!(
            "{what} {name}: columns in another order (`SELECT *` differs): SQLite {s:?}, PostgreSQL {p:?}"
        ));
    }
}

/// Every difference between the two schemas, one line each.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    for (what, s, p, nullability) in [
        ("table", &sqlite.tables, &postgres.tables, true),
        // Views report every column nullable on PostgreSQL and NOT NULL-less on SQLite.
        ("view", &sqlite.views, &postgres.views, false),
    ] {
        for name in s.keys().chain(p.keys()).collect::<BTreeSet<_>>() {
            match (s.get(name), p.get(name)) {
                (Some(sc), Some(pc)) => compare_columns(what, name, sc, pc, nullability, &mut out),
                (Some(_), None) => out.push(format!("{what} {name}: missing in PostgreSQL")),
                (None, Some(_)) => out.push(format!("{what} {name}: missing in SQLite")),
                (None, None) => unreachable!(),
            }
        }
    }
    let mut same = |label: &str, table: &str, s: String, p: String| {
        if s != p {
            out.push(format!(
                "table {table}: {label} differ: SQLite {s}, PostgreSQL {p}"
            ));
        }
    };
    let tables: BTreeSet<&String> = sqlite.tables.keys().chain(postgres.tables.keys()).collect();
    for table in tables {
        same(
            "primary keys",
            table,
            format!("{:?}", sqlite.primary_keys.get(table)),
            format!("{:?}", postgres.primary_keys.get(table)),
        );
        same(
            "UNIQUE constraints",
            table,
            format!("{:?}", sqlite.uniques.get(table)),
            format!("{:?}", postgres.uniques.get(table)),
        );
        same(
            "foreign keys",
            table,
            format!("{:?}", sqlite.foreign_keys.get(table)),
            format!("{:?}", postgres.foreign_keys.get(table)),
        );
    }
    let names: BTreeSet<&String> = sqlite
        .indexes
        .keys()
        .chain(postgres.indexes.keys())
        .collect();
    for name in names {
        match (sqlite.indexes.get(name), postgres.indexes.get(name)) {
            (Some(s), Some(p)) if s != p => out.push(format!(
                "table {}, index {name}: SQLite {s:?}, PostgreSQL {p:?}",
                s.table
            )),
            (Some(_), Some(_)) => {}
            (Some(s), None) => out.push(format!(
                "table {}, index {name}: missing in PostgreSQL",
                s.table
            )),
            (None, Some(p)) => out.push(format!(
                "table {}, index {name}: missing in SQLite",
                p.table
            )),
            (None, None) => unreachable!(),
        }
    }
    out
}

async fn migrated_sqlite(dir: &tempfile::TempDir) -> SqliteConnection {
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.path().join("schema.db"))
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::migrate!("./migrations/sqlite")
        .run(&mut conn)
        .await
        .unwrap();
    conn
}

async fn migrated_postgres(db: &TestDatabase) -> PgConnection {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_describe_the_same_schema() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_schema(&mut migrated_sqlite(&dir).await).await;
    let postgres = postgres_schema(&mut migrated_postgres(&db).await).await;

    // The introspection itself found something (a broken query would compare empty to empty).
    assert!(sqlite.tables.contains_key("runs") && sqlite.views.contains_key("runs_full"));
    assert!(sqlite.indexes.contains_key("runs_lease_until"));

    let mut diffs = differences(&sqlite, &postgres);
    for (table, columns) in &postgres.tables {
        for c in columns {
            let expected = JSON_COLUMNS
                .iter()
                .find(|(t, n, _)| *t == table.as_str() && *n == c.name.as_str())
                .map_or("text-or-other", |(_, _, kind)| *kind);
            let is_json = c.declared == "json" || c.declared == "jsonb";
            if (expected == "text-or-other" && is_json)
                || (expected != "text-or-other" && c.declared != expected)
            {
                diffs.push(format!(
                    "table {table}, column {}: {} in PostgreSQL, but the JSON columns are \
                     exactly {JSON_COLUMNS:?}",
                    c.name, c.declared
                ));
            }
        }
    }
    let mut report = String::new();
    for d in &diffs {
        let _ = writeln!(report, "  {d}");
    }
    assert!(
        diffs.is_empty(),
        "daemon/migrations/sqlite and daemon/migrations/postgres differ:\n{report}"
    );
}

#[tokio::test]
async fn postgres_migrations_apply_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let migrator = sqlx::migrate!("./migrations/postgres");
    let mut conn = migrated_postgres(&db).await;
    let before = postgres_schema(&mut conn).await;
    conn.close().await.unwrap();

    // Again, on a new connection as a restarted daemon would: nothing to do.
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    migrator.run(&mut conn).await.unwrap();
    migrator.run(&mut conn).await.unwrap();
    assert_eq!(postgres_schema(&mut conn).await, before);
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    assert_eq!(applied, known, "each migration recorded once");
}

#[tokio::test]
async fn postgres_schema_takes_a_run_as_the_store_writes_it() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let mut conn = migrated_postgres(&db).await;

    let version: i64 = sqlx::query_scalar(
        "INSERT INTO pipeline_versions (pipeline, version, hash, definition, created_at)
         VALUES ('p', 1, 'h', '{\"name\":\"p\"}', 1) RETURNING id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let mut runs = Vec::new();
    for user in ["alice", "bob"] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (pipeline, version_id, state, trigger_kind, \"user\", created_at)
             VALUES ('p', $1, 'queued', 'manual', $2, 2) RETURNING id",
        )
        .bind(version)
        .bind(user)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        runs.push(id);
    }
    assert!(
        runs[1] > runs[0],
        "run ids come from the identity: {runs:?}"
    );
    let run = runs[0];
    sqlx::query("INSERT INTO run_payloads (run_id, trigger, inputs) VALUES ($1, '{\"x\":\"\\u0000\"}'::json, $2)")
        .bind(run)
        .bind(sqlx::types::Json(serde_json::json!({"topic": "rust"})))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO run_nodes (run_id, node_id, position, state, output)
         VALUES ($1, 'fetch', 0, 'succeeded', '{}'::json)",
    )
    .bind(run)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO attempts (run_id, node_id, attempt, state, started_at, pgid, pstart)
         VALUES ($1, 'fetch', 1, 'running', 3, 4242, 123456789)",
    )
    .bind(run)
    .execute(&mut conn)
    .await
    .unwrap();
    let mut logs = Vec::new();
    for seq in 0..2_i64 {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO logs (run_id, node_id, attempt, seq, at, stream, line)
             VALUES ($1, 'fetch', 1, $2, 4, 'stdout', 'hello') RETURNING id",
        )
        .bind(run)
        .bind(seq)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        logs.push(id);
    }
    assert!(logs[1] > logs[0], "log ids order lines as stored: {logs:?}");
    let votes: serde_json::Value = sqlx::query_scalar(
        "INSERT INTO approvals (run_id, node_id, attempt, state, requested_at)
         VALUES ($1, 'gate', 1, 'pending', 5) RETURNING votes",
    )
    .bind(run)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(votes, serde_json::json!([]));

    let row = sqlx::query("SELECT * FROM runs_full WHERE id = $1")
        .bind(run)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("user"), "alice");
    assert_eq!(row.get::<Option<String>, _>("claimed_by"), None);
    assert_eq!(row.get::<Option<i64>, _>("lease_until"), None);
    assert_eq!(
        row.get::<serde_json::Value, _>("inputs"),
        serde_json::json!({"topic": "rust"})
    );
    assert_eq!(
        row.get::<serde_json::Value, _>("trigger"),
        serde_json::json!({"x": "\u{0}"}),
        "json keeps the \\u0000 escape that jsonb refuses"
    );

    // A claim, as several daemons would take one, is found through its index's predicate.
    sqlx::query("UPDATE runs SET claimed_by = 'd1', lease_until = 10 WHERE id = $1")
        .bind(run)
        .execute(&mut conn)
        .await
        .unwrap();
    let expired: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE lease_until IS NOT NULL AND lease_until < 11",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(expired, vec![run]);

    // Deleting the run deletes everything that hangs off it.
    sqlx::query("DELETE FROM runs WHERE id = $1")
        .bind(run)
        .execute(&mut conn)
        .await
        .unwrap();
    for table in ["run_payloads", "run_nodes", "attempts", "logs", "approvals"] {
        let left: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE run_id = $1"
        )))
        .bind(run)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table} rows of a deleted run are deleted with it");
    }
}

#[tokio::test]
async fn a_test_database_is_gone_once_dropped() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let name = db.name().to_owned();
    // A connection left open does not keep it (DROP DATABASE … WITH (FORCE)).
    let _open = migrated_postgres(&db).await;
    let mut admin = PgConnection::connect(&TestDatabase::admin_url())
        .await
        .unwrap();
    let exists = "SELECT count(*) FROM pg_database WHERE datname = $1";
    let count: i64 = sqlx::query_scalar(exists)
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(count, 1, "{name} exists while in use");
    drop(db);
    let count: i64 = sqlx::query_scalar(exists)
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(count, 0, "{name} is dropped with its TestDatabase");
}
