//! Idempotency keys: a state-changing call that carries `idempotency_key` is
//! applied once per (user, method, key); a repeat — a client resending after
//! a lost reply, or a duplicate in flight at the same time — gets the first
//! call's answer instead of a second effect. A key reused with other params
//! is refused: it names another request, and answering it with the first
//! one's reply would hide that nothing was done. Keys live in memory for a
//! while (a restart forgets them; runs and decisions themselves are durable),
//! bounded per user so that one busy client cannot push out another's keys.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_shared::protocol::{ErrorCode, RpcError};
use tokio::sync::OnceCell;

/// How long a key is remembered.
const KEEP: Duration = Duration::from_secs(15 * 60);
/// Most keys remembered for one user; their oldest go first.
const MAX_KEYS_PER_USER: usize = 1_000;
/// Most keys remembered in all; the oldest of the user with the most go first.
const MAX_KEYS: usize = 10_000;
/// Longest key accepted (longer keys are refused, not truncated).
pub const MAX_KEY_LEN: usize = 128;

type Outcome = Result<Value, RpcError>;
/// (method, key) within one user's keys.
type Key = (String, String);

/// Remembered outcomes by (user, method, key).
#[derive(Default)]
pub(crate) struct Idempotency {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, UserKeys>,
    total: usize,
}

#[derive(Default)]
struct UserKeys {
    cells: HashMap<Key, Remembered>,
    order: VecDeque<(Instant, Key)>,
}

struct Remembered {
    /// What the first call asked for (see [`fingerprint`]).
    request: [u8; 32],
    outcome: Arc<OnceCell<Outcome>>,
}

impl UserKeys {
    /// Forgets expired keys and, while over `max`, the oldest; returns how many went.
    fn trim(&mut self, now: Instant, max: usize) -> usize {
        let mut gone = 0;
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < KEEP && self.order.len() <= max {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.cells.remove(&old);
                gone += 1;
            }
        }
        gone
    }
}

impl State {
    /// Makes room for one more key of `user`.
    fn make_room(&mut self, user: &str, now: Instant) {
        if let Some(keys) = self.users.get_mut(user) {
            self.total -= keys.trim(now, MAX_KEYS_PER_USER - 1);
        }
        if self.total < MAX_KEYS {
            return;
        }
        for keys in self.users.values_mut() {
            self.total -= keys.trim(now, usize::MAX);
        }
        while self.total >= MAX_KEYS {
            let Some(keys) = self.users.values_mut().max_by_key(|k| k.order.len()) else {
                break;
            };
            let len = keys.order.len();
            self.total -= keys.trim(now, len.saturating_sub(1));
        }
        self.users.retain(|_, k| !k.order.is_empty());
    }
}

/// A digest of a call's params without the key itself, with object members in
/// name order, so the same request sent again matches however it is encoded.
fn fingerprint(params: &Value) -> [u8; 32] {
    fn feed(h: &mut Sha256, v: &Value, top: bool) {
        match v {
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map
                    .iter()
                    .filter(|(k, _)| !(top && k.as_str() == "idempotency_key"))
                    .collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                h.update(b"{");
                for (k, v) in members {
                    h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                    h.update(b":");
                    feed(h, v, false);
                    h.update(b",");
                }
                h.update(b"}");
            }
            Value::Array(items) => {
                h.update(b"[");
                for v in items {
                    feed(h, v, false);
                    h.update(b",");
                }
                h.update(b"]");
            }
            other => h.update(other.to_string().as_bytes()),
        }
    }
    let mut h = Sha256::new();
    feed(&mut h, params, true);
    h.finalize().into()
}

impl Idempotency {
    /// Runs `call` unless the same key ran it already (or runs it now), in
    /// which case the first outcome is returned; a key seen with other
    /// `params` is refused.
    pub(crate) async fn once<F>(
        &self,
        user: &str,
        method: &str,
        key: &str,
        params: &Value,
        call: F,
    ) -> Outcome
    where
        F: Future<Output = Outcome>,
    {
        let k: Key = (method.to_owned(), key.to_owned());
        let request = fingerprint(params);
        let cell = {
            let Ok(mut s) = self.inner.lock() else {
                return call.await;
            };
            let now = Instant::now();
            // The caller's expired keys go before the look-up: an old key is unknown.
            if let Some(keys) = s.users.get_mut(user) {
                let gone = keys.trim(now, usize::MAX);
                s.total -= gone;
            }
            let known = s
                .users
                .get(user)
                .and_then(|u| u.cells.get(&k))
                .map(|r| (r.request, Arc::clone(&r.outcome)));
            match known {
                Some((first, _)) if first != request => {
                    return Err(RpcError::new(
                        ErrorCode::InvalidParams,
                        format!(
                            "idempotency_key '{key}' was used for a different {method} request in the last {} minutes; use a new key for a new request",
                            KEEP.as_secs() / 60
                        ),
                    ));
                }
                Some((_, cell)) => cell,
                None => {
                    s.make_room(user, now);
                    let cell = Arc::new(OnceCell::new());
                    let keys = s.users.entry(user.to_owned()).or_default();
                    keys.cells.insert(
                        k.clone(),
                        Remembered {
                            request,
                            outcome: Arc::clone(&cell),
                        },
                    );
                    keys.order.push_back((now, k.clone()));
                    s.total += 1;
                    cell
                }
            }
        };
        let outcome = cell.get_or_init(|| call).await.clone();
        // A refusal by a limit or an internal failure may pass later: the same
        // key may try again. Only this call's entry goes: a retry may already
        // have put a new one (still running) under the key.
        if let Err(e) = &outcome
            && (e.code == ErrorCode::Refused as i64 || e.code == ErrorCode::Internal as i64)
            && let Ok(mut s) = self.inner.lock()
            && let Some(keys) = s.users.get_mut(user)
            && keys
                .cells
                .get(&k)
                .is_some_and(|r| Arc::ptr_eq(&r.outcome, &cell))
        {
            keys.cells.remove(&k);
            keys.order.retain(|(_, o)| *o != k);
            s.total -= 1;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use sluice_shared::method::{Method, PipelinesTrigger, RunsCancel, RunsRetry};

    #[tokio::test]
    async fn a_key_runs_its_call_once_even_when_repeats_overlap() {
        let ids = Idempotency::default();
        let runs = AtomicUsize::new(0);
        let call = || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::task::yield_now().await;
            Ok(json!({ "run": n }))
        };
        let p = json!({ "id": 7, "idempotency_key": "k1" });
        let (a, b) = tokio::join!(
            ids.once("alice", RunsRetry::NAME, "k1", &p, call()),
            ids.once("alice", RunsRetry::NAME, "k1", &p, call()),
        );
        assert_eq!(a.unwrap(), json!({ "run": 1 }));
        assert_eq!(b.unwrap(), json!({ "run": 1 }));
        let again = ids.once("alice", RunsRetry::NAME, "k1", &p, call()).await;
        assert_eq!(again.unwrap(), json!({ "run": 1 }));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another user, method or key is another call.
        ids.once("bob", RunsRetry::NAME, "k1", &p, call())
            .await
            .unwrap();
        ids.once("alice", RunsCancel::NAME, "k1", &p, call())
            .await
            .unwrap();
        ids.once("alice", RunsRetry::NAME, "k2", &p, call())
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_key_reused_with_other_params_is_refused_and_member_order_does_not_matter() {
        let ids = Idempotency::default();
        let first =
            json!({ "name": "deploy", "inputs": { "a": 1, "b": [1, 2] }, "idempotency_key": "k" });
        let reordered =
            json!({ "idempotency_key": "k", "inputs": { "b": [1, 2], "a": 1 }, "name": "deploy" });
        let other =
            json!({ "name": "deploy", "inputs": { "a": 2, "b": [1, 2] }, "idempotency_key": "k" });
        let ok = || async { Ok(json!({ "run": 1 })) };
        ids.once("alice", PipelinesTrigger::NAME, "k", &first, ok())
            .await
            .unwrap();
        assert_eq!(
            ids.once("alice", PipelinesTrigger::NAME, "k", &reordered, ok())
                .await
                .unwrap(),
            json!({ "run": 1 })
        );
        let err = ids
            .once("alice", PipelinesTrigger::NAME, "k", &other, ok())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParams as i64);
        assert!(
            err.message.contains("different pipelines.trigger request"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn an_expired_key_is_a_new_call() {
        let ids = Idempotency::default();
        let ok = || async { Ok(json!({})) };
        ids.once("alice", RunsCancel::NAME, "k", &json!({ "id": 1 }), ok())
            .await
            .unwrap();
        {
            let mut s = ids.inner.lock().unwrap();
            let Some(long_ago) = Instant::now().checked_sub(KEEP + Duration::from_secs(1)) else {
                return; // a machine up for less than KEEP cannot date a key that far back
            };
            s.users.get_mut("alice").unwrap().order[0].0 = long_ago;
        }
        // Other params under the old key: not refused, since the key is forgotten.
        ids.once("alice", RunsCancel::NAME, "k", &json!({ "id": 2 }), ok())
            .await
            .unwrap();
        assert_eq!(ids.inner.lock().unwrap().total, 1);
    }

    #[tokio::test]
    async fn one_user_cannot_push_out_anothers_keys() {
        let ids = Idempotency::default();
        let runs = AtomicUsize::new(0);
        let call = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(json!({}))
        };
        let p = json!({});
        ids.once("alice", RunsCancel::NAME, "mine", &p, call())
            .await
            .unwrap();
        for i in 0..MAX_KEYS_PER_USER + 10 {
            ids.once("bob", RunsCancel::NAME, &format!("b{i}"), &p, call())
                .await
                .unwrap();
        }
        let before = runs.load(Ordering::SeqCst);
        ids.once("alice", RunsCancel::NAME, "mine", &p, call())
            .await
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), before, "alice's key is kept");
        ids.once("bob", RunsCancel::NAME, "b0", &p, call())
            .await
            .unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            before + 1,
            "bob's oldest key made room for his newer ones"
        );
        let s = ids.inner.lock().unwrap();
        assert_eq!(s.users["bob"].order.len(), MAX_KEYS_PER_USER);
        assert_eq!(s.total, MAX_KEYS_PER_USER + 1);
    }
}
