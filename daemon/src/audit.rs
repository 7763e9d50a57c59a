//! The audit trail: every state-changing call, append-only and hash-chained
//! (each row carries the hash of the previous one), so an altered or removed
//! row is found by [`Audit::verify`].

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_shared::protocol::AuditVerifyResult;
use tokio::sync::Mutex;

use crate::store::audit::NewAudit;
use crate::store::{Store, StoreError};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hash(
    prev: &str,
    at: i64,
    user: &str,
    action: &str,
    target: Option<&str>,
    detail: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &at.to_string(),
        user,
        action,
        target.unwrap_or(""),
        detail,
    ] {
        // Length-prefixed so fields cannot run into each other.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends audit rows one at a time (the chain needs the previous hash).
pub struct Audit {
    store: Store,
    last: Mutex<String>,
}

impl Audit {
    /// Starts from the newest stored row.
    pub async fn open(store: Store) -> Result<Self, StoreError> {
        let last = store
            .last_audit()
            .await?
            .map_or_else(|| GENESIS.to_owned(), |(_, h)| h);
        Ok(Self {
            store,
            last: Mutex::new(last),
        })
    }

    /// Records `user` doing `action` on `target`.
    pub async fn record(
        &self,
        user: &str,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> Result<i64, StoreError> {
        let mut last = self.last.lock().await;
        let at = jiff::Timestamp::now().as_millisecond();
        let detail = detail.to_string();
        let h = hash(&last, at, user, action, target.as_deref(), &detail);
        let id = self
            .store
            .append_audit(NewAudit {
                at,
                user: user.to_owned(),
                action: action.to_owned(),
                target,
                detail,
                prev_hash: last.clone(),
                hash: h.clone(),
            })
            .await?;
        *last = h;
        Ok(id)
    }

    /// Checks the whole chain and names the first row that was altered or
    /// after which rows were removed.
    pub async fn verify(store: &Store) -> Result<AuditVerifyResult, StoreError> {
        let rows = store.audit_all().await?;
        let mut prev = GENESIS.to_owned();
        let mut prev_id = 0;
        for (e, raw_detail) in &rows {
            let bad = |problem: String| AuditVerifyResult {
                rows: rows.len() as u64,
                ok: false,
                first_bad: Some(e.id),
                problem: Some(problem),
            };
            if e.prev_hash != prev {
                return Ok(bad(if e.id != prev_id + 1 {
                    format!(
                        "rows {}..{} were removed before row {}",
                        prev_id + 1,
                        e.id - 1,
                        e.id
                    )
                } else {
                    format!(
                        "row {} does not follow row {prev_id} (its previous hash differs)",
                        e.id
                    )
                }));
            }
            if hash(
                &prev,
                e.at,
                &e.user,
                &e.action,
                e.target.as_deref(),
                raw_detail,
            ) != e.hash
            {
                return Ok(bad(format!(
                    "row {} was altered (its content does not match its hash)",
                    e.id
                )));
            }
            prev = e.hash.clone();
            prev_id = e.id;
        }
        Ok(AuditVerifyResult {
            rows: rows.len() as u64,
            ok: true,
            first_bad: None,
            problem: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn altered_and_removed_rows_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let store = Store::open(&db, crate::store::Durability::Normal)
            .await
            .unwrap();
        let audit = Audit::open(store.clone()).await.unwrap();
        for i in 0..5 {
            audit
                .record(
                    "alice",
                    "runs.cancel",
                    Some(format!("run #{i}")),
                    serde_json::json!({"i": i}),
                )
                .await
                .unwrap();
        }
        assert!(Audit::verify(&store).await.unwrap().ok);
        // Tamper behind the daemon's back, as an attacker with the file would.
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE audit SET user = 'mallory' WHERE id = 3")
            .execute(&mut conn)
            .await
            .unwrap();
        let r = Audit::verify(&store).await.unwrap();
        assert_eq!((r.ok, r.first_bad), (false, Some(3)), "{r:?}");
        sqlx::query("UPDATE audit SET user = 'alice' WHERE id = 3")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit WHERE id = 4")
            .execute(&mut conn)
            .await
            .unwrap();
        let r = Audit::verify(&store).await.unwrap();
        assert_eq!(r.first_bad, Some(5));
        assert!(r.problem.unwrap().contains("removed"));
    }

    use sqlx::Connection;
}
