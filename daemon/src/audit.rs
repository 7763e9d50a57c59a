//! The audit trail: every state-changing call, append-only and hash-chained
//! (each row carries the hash of the previous one), so an altered or removed
//! row is found by [`Audit::verify`].
//!
//! A chain alone cannot show that rows were cut from its end, or that the
//! whole table was rewritten consistently: the newest row's id and hash (the
//! head) are therefore also kept outside the database, in a file written after
//! every append. At start and at every `verify` the stored chain must still
//! contain that head. When it does not, the trail is *broken*: nothing is
//! chained onto the cut tail until an admin acknowledges it ([`Audit::acknowledge`]),
//! which is itself the first row of the continued chain.

use sluice_shared::method::{AuditAck, Method};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_shared::event::Event;
use sluice_shared::protocol::AuditVerifyResult;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::audit::NewAudit;
use crate::store::{Store, StoreError};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Rows of the daemon's own (not a caller's) held while the trail is broken;
/// beyond this they are only logged.
const MAX_HELD: usize = 1000;

/// The action of the row that acknowledges a break.
pub const ACK_ACTION: &str = <AuditAck as Method>::NAME;

/// Why an audit row was not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The trail is broken; nothing is chained until an admin acknowledges it.
    #[error(
        "the audit trail is broken ({0}); nothing is added to it until an admin reviews it and runs `sluice audit ack`"
    )]
    Broken(String),
    /// `acknowledge` with nothing to acknowledge.
    #[error("the audit trail is intact: there is nothing to acknowledge")]
    NotBroken,
    /// The head file exists but cannot be read.
    #[error("cannot read the audit head file {path}: {message}")]
    Head {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

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
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The newest row as last written: id and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Row id (0 before the first row).
    pub id: i64,
    /// Its hash ([`GENESIS`] before the first row).
    pub hash: String,
}

impl Head {
    fn genesis() -> Self {
        Self {
            id: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// Reads the head file; `None` when there is none yet.
fn read_head(path: &Path) -> Result<Option<Head>, AuditError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AuditError::Head {
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| AuditError::Head {
            path: path.to_owned(),
            message: format!("not a head record: {e}"),
        })
}

/// Replaces the head file atomically (a crash leaves the old or the new one, owner-only).
fn write_head(path: &Path, head: &Head) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(
        serde_json::to_string(head)
            .map_err(std::io::Error::other)?
            .as_bytes(),
    )?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A row of the daemon's own kept back while the trail is broken.
struct Held {
    at: i64,
    user: String,
    action: String,
    target: Option<String>,
    detail: Value,
}

struct Chain {
    /// The newest row written (the head).
    head: Head,
    /// Why the trail is broken, until acknowledged.
    broken: Option<String>,
    held: Vec<Held>,
}

/// Appends audit rows one at a time (the chain needs the previous hash).
pub struct Audit {
    store: Store,
    head_file: Option<PathBuf>,
    chain: Mutex<Chain>,
}

/// Compares the stored chain's end with the recorded head: `Some(problem)` when
/// rows the head covers are gone or were rewritten.
async fn compare_head(store: &Store, head: &Head) -> Result<Option<String>, StoreError> {
    if head.id == 0 {
        return Ok(None);
    }
    let last = store.last_audit().await?;
    let at_head = store.audit_hash(head.id).await?;
    Ok(match at_head {
        Some(h) if h == head.hash => None,
        Some(_) => Some(format!(
            "row {} was rewritten: its hash differs from the recorded head",
            head.id
        )),
        None => Some(match last {
            Some((id, _)) if id < head.id => format!(
                "rows after {id} were removed: the trail ends at row {id} but row {} was written",
                head.id
            ),
            Some(_) => format!("row {} was removed", head.id),
            None => format!(
                "every row was removed: the trail is empty but row {} was written",
                head.id
            ),
        }),
    })
}

impl Audit {
    /// Starts from the newest stored row, with no head kept outside the
    /// database (tests; a cut tail then goes unnoticed).
    pub async fn open(store: Store) -> Result<Self, AuditError> {
        Self::open_with_head(store, None).await
    }

    /// Starts from the newest stored row and checks it against the head file
    /// `head_file`; a mismatch leaves the trail broken (logged, shown by
    /// `status` and `audit.verify`). A missing head file is created from the
    /// stored chain (first start, or an upgrade).
    pub async fn open_with_head(
        store: Store,
        head_file: Option<PathBuf>,
    ) -> Result<Self, AuditError> {
        let stored = store
            .last_audit()
            .await?
            .map_or_else(Head::genesis, |(id, hash)| Head { id, hash });
        let mut broken = None;
        let mut head = stored.clone();
        if let Some(path) = &head_file {
            match read_head(path) {
                Ok(Some(recorded)) => {
                    if let Some(problem) = compare_head(&store, &recorded).await? {
                        broken = Some(problem);
                        // The recorded head stays: the break is measured against it.
                        head = recorded;
                    }
                }
                Ok(None) => {
                    if stored.id > 0 {
                        tracing::warn!(
                            file = %path.display(),
                            rows = stored.id,
                            "no audit head file: recording the current end of the trail (rows cut before now cannot be detected)"
                        );
                    }
                    if let Err(e) = write_head(path, &stored) {
                        tracing::error!(file = %path.display(), error = %e, "cannot write the audit head file");
                    }
                }
                Err(e) => broken = Some(e.to_string()),
            }
        }
        if let Some(problem) = &broken {
            tracing::error!(
                problem = %problem,
                "AUDIT TRAIL BROKEN: nothing is added to it until an admin reviews it and runs `sluice audit ack`"
            );
        }
        Ok(Self {
            store,
            head_file,
            chain: Mutex::new(Chain {
                head,
                broken,
                held: Vec::new(),
            }),
        })
    }

    /// Why the trail is broken, if it is (until acknowledged).
    pub async fn problem(&self) -> Option<String> {
        self.chain.lock().await.broken.clone()
    }

    async fn append(
        &self,
        chain: &mut Chain,
        at: i64,
        user: &str,
        action: &str,
        target: Option<String>,
        detail: &Value,
    ) -> Result<i64, AuditError> {
        let detail = detail.to_string();
        let prev = chain.head.hash.clone();
        let h = hash(&prev, at, user, action, target.as_deref(), &detail);
        let id = self
            .store
            .append_audit(NewAudit {
                at,
                user: user.to_owned(),
                action: action.to_owned(),
                target,
                detail,
                prev_hash: prev,
                hash: h.clone(),
            })
            .await?;
        chain.head = Head { id, hash: h };
        if let Some(path) = &self.head_file
            && let Err(e) = write_head(path, &chain.head)
        {
            // The row is committed; a head one row behind is accepted at the next start.
            tracing::error!(file = %path.display(), error = %e, "cannot write the audit head file");
        }
        Ok(id)
    }

    /// Records `user` doing `action` on `target`. While the trail is broken
    /// nothing is written: the row is held (up to a bound) and written after
    /// the acknowledgement, and the call fails with [`AuditError::Broken`].
    pub async fn record(
        &self,
        user: &str,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> Result<i64, AuditError> {
        let mut chain = self.chain.lock().await;
        let at = sluice_shared::time::now_ms();
        if let Some(problem) = &chain.broken {
            let problem = problem.clone();
            if chain.held.len() < MAX_HELD {
                chain.held.push(Held {
                    at,
                    user: user.to_owned(),
                    action: action.to_owned(),
                    target,
                    detail,
                });
            }
            return Err(AuditError::Broken(problem));
        }
        self.append(&mut chain, at, user, action, target, &detail)
            .await
    }

    /// Acknowledges a break: `user` (an admin) records it as a row chained to
    /// what the store now holds, then the held rows follow. Returns the new row's id.
    pub async fn acknowledge(&self, user: &str, note: Option<String>) -> Result<i64, AuditError> {
        let mut chain = self.chain.lock().await;
        let Some(problem) = chain.broken.clone() else {
            return Err(AuditError::NotBroken);
        };
        let found = self
            .store
            .last_audit()
            .await?
            .map_or_else(Head::genesis, |(id, hash)| Head { id, hash });
        let detail = json!({
            "problem": problem,
            "recorded_head": chain.head,
            "found_head": found,
            "note": note,
            "held_rows": chain.held.len(),
        });
        chain.head = found;
        let at = sluice_shared::time::now_ms();
        let id = self
            .append(&mut chain, at, user, ACK_ACTION, None, &detail)
            .await?;
        chain.broken = None;
        tracing::warn!(user, row = id, problem = %problem, "audit trail break acknowledged");
        for h in std::mem::take(&mut chain.held) {
            if let Err(e) = self
                .append(&mut chain, h.at, &h.user, &h.action, h.target, &h.detail)
                .await
            {
                tracing::error!(error = %e, action = %h.action, "cannot write a held audit row");
            }
        }
        Ok(id)
    }

    /// Checks the whole chain and names the first row that was altered or
    /// after which rows were removed; then that the chain still reaches the
    /// head recorded outside the database. A break found here is kept until
    /// acknowledged.
    pub async fn verify(&self) -> Result<AuditVerifyResult, AuditError> {
        let mut chain = self.chain.lock().await;
        let rows = Self::verify_chain(&self.store).await?;
        if !rows.ok {
            return Ok(rows);
        }
        if chain.broken.is_none()
            && self.head_file.is_some()
            && let Some(problem) = compare_head(&self.store, &chain.head).await?
        {
            tracing::error!(problem = %problem, "AUDIT TRAIL BROKEN: found by verify");
            chain.broken = Some(problem);
        }
        Ok(match &chain.broken {
            Some(problem) => AuditVerifyResult {
                first_bad: Some(chain.head.id),
                problem: Some(format!("{problem} (acknowledge with `sluice audit ack`)")),
                ok: false,
                ..rows
            },
            None => rows,
        })
    }

    /// Checks the stored chain alone (see [`Audit::verify`] for the head).
    pub async fn verify_chain(store: &Store) -> Result<AuditVerifyResult, StoreError> {
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

/// Audits pipeline file changes (added, updated, removed) as the registry
/// announces them, each with its stored version's content hash, until `stop`.
pub async fn watch_pipelines(
    audit: std::sync::Arc<Audit>,
    mut events: broadcast::Receiver<Event>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = stop.cancelled() => return,
        };
        let (name, version, change) = match event {
            Ok(Event::PipelineChanged {
                name,
                version,
                change,
                ..
            }) => (name, version, change),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::error!(
                    missed = n,
                    "the audit trail missed events: pipeline file changes among them are not audited"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (definition, source): (String, Option<String>) = match version {
            Some(v) => audit
                .store
                .version_definition(&name, v)
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
            None => Default::default(),
        };
        // The file's bytes as they are now (gone once removed) and the definition that runs.
        let file_sha256 = source
            .as_deref()
            .filter(|_| change != "removed")
            .and_then(|f| std::fs::read(f).ok())
            .map(|b| sha256_hex(&b));
        let detail = json!({
            "change": change,
            "version": version,
            "file": source,
            "file_sha256": file_sha256,
            "definition_sha256": sha256_hex(definition.as_bytes()),
        });
        if let Err(e) = audit
            .record(
                "sluiced",
                &format!("pipelines.file.{change}"),
                Some(format!("pipeline {name}")),
                detail,
            )
            .await
        {
            tracing::error!(error = %e, pipeline = %name, change = %change, "cannot audit a pipeline file change");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::method::{RunsCancel, RunsRetry};

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
                    RunsCancel::NAME,
                    Some(format!("run #{i}")),
                    serde_json::json!({"i": i}),
                )
                .await
                .unwrap();
        }
        assert!(audit.verify().await.unwrap().ok);
        // Tamper behind the daemon's back, as an attacker with the file would.
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE audit SET user = 'mallory' WHERE id = 3")
            .execute(&mut conn)
            .await
            .unwrap();
        let r = audit.verify().await.unwrap();
        assert_eq!((r.ok, r.first_bad), (false, Some(3)), "{r:?}");
        sqlx::query("UPDATE audit SET user = 'alice' WHERE id = 3")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit WHERE id = 4")
            .execute(&mut conn)
            .await
            .unwrap();
        let r = audit.verify().await.unwrap();
        assert_eq!(r.first_bad, Some(5));
        assert!(r.problem.unwrap().contains("removed"));
    }

    #[tokio::test]
    async fn a_cut_tail_is_found_by_the_head_and_held_rows_follow_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let head = dir.path().join("audit.head");
        let store = Store::open(&db, crate::store::Durability::Normal)
            .await
            .unwrap();
        let audit = Audit::open_with_head(store.clone(), Some(head.clone()))
            .await
            .unwrap();
        for i in 0..4 {
            audit
                .record("alice", RunsCancel::NAME, None, json!({ "i": i }))
                .await
                .unwrap();
        }
        assert_eq!(read_head(&head).unwrap().unwrap().id, 4);
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit WHERE id >= 3")
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(
            Audit::verify_chain(&store).await.unwrap().ok,
            "the chain alone cannot tell"
        );
        // Found while running, and kept.
        let r = audit.verify().await.unwrap();
        assert!(
            !r.ok && r.problem.as_deref().unwrap_or("").contains("removed"),
            "{r:?}"
        );
        let err = audit
            .record("bob", RunsRetry::NAME, None, json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Broken(_)), "{err}");
        assert_eq!(
            store.last_audit().await.unwrap().unwrap().0,
            2,
            "nothing chained onto the cut"
        );
        // Found again at the next start.
        let reopened = Audit::open_with_head(store.clone(), Some(head.clone()))
            .await
            .unwrap();
        assert!(
            reopened
                .problem()
                .await
                .unwrap()
                .contains("rows after 2 were removed")
        );
        drop(reopened);
        // The ack is a row naming what was found; the held row follows it.
        let ack = audit
            .acknowledge("root", Some("restored from backup".into()))
            .await
            .unwrap();
        assert!(audit.problem().await.is_none());
        let rows = store.audit_page(None, 10).await.unwrap();
        assert_eq!(rows[1].id, ack);
        assert_eq!(rows[1].action, ACK_ACTION);
        assert_eq!(rows[1].detail["recorded_head"]["id"], 4);
        assert_eq!(rows[1].detail["found_head"]["id"], 2);
        assert_eq!(rows[0].user, "bob");
        assert!(audit.verify().await.unwrap().ok);
        assert!(matches!(
            audit.acknowledge("root", None).await,
            Err(AuditError::NotBroken)
        ));
        // A malformed head file is a break too, not a crash.
        std::fs::write(&head, "{not json").unwrap();
        let reopened = Audit::open_with_head(store, Some(head)).await.unwrap();
        assert!(
            reopened
                .problem()
                .await
                .unwrap()
                .contains("not a head record")
        );
    }

    use sqlx::Connection;
}
