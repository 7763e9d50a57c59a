//! Idempotency keys: a state-changing call that carries `idempotency_key` is
//! applied once per (user, method, key); a repeat — a client resending after
//! a lost reply, or a duplicate in flight at the same time — gets the first
//! call's answer instead of a second effect. Keys live in memory for a while
//! (a restart forgets them; runs and decisions themselves are durable).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_shared::protocol::{ErrorCode, RpcError};
use tokio::sync::OnceCell;

/// How long a key is remembered.
const KEEP: Duration = Duration::from_secs(15 * 60);
/// Most keys remembered at once; the oldest go first.
const MAX_KEYS: usize = 10_000;
/// Longest key accepted (longer keys are refused, not truncated).
pub const MAX_KEY_LEN: usize = 128;

type Outcome = Result<Value, RpcError>;
type Key = (String, String, String);

/// Remembered outcomes by (user, method, key).
#[derive(Default)]
pub(crate) struct Idempotency {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    cells: HashMap<Key, Arc<OnceCell<Outcome>>>,
    order: VecDeque<(Instant, Key)>,
}

impl Idempotency {
    /// Runs `call` unless the same key ran it already (or runs it now), in
    /// which case the first outcome is returned.
    pub(crate) async fn once<F>(&self, user: &str, method: &str, key: &str, call: F) -> Outcome
    where
        F: Future<Output = Outcome>,
    {
        let k = k_owned(user, method, key);
        let cell = {
            let Ok(mut s) = self.inner.lock() else {
                return call.await;
            };
            let now = Instant::now();
            while let Some((at, _)) = s.order.front() {
                if now.duration_since(*at) < KEEP && s.order.len() < MAX_KEYS {
                    break;
                }
                if let Some((_, old)) = s.order.pop_front() {
                    s.cells.remove(&old);
                }
            }
            match s.cells.get(&k) {
                Some(c) => Arc::clone(c),
                None => {
                    let c = Arc::new(OnceCell::new());
                    s.cells.insert(k.clone(), Arc::clone(&c));
                    s.order.push_back((now, k));
                    c
                }
            }
        };
        let outcome = cell.get_or_init(|| call).await.clone();
        // A refusal by a limit or an internal failure may pass later: the same
        // key may try again.
        if let Err(e) = &outcome
            && (e.code == ErrorCode::Refused as i64 || e.code == ErrorCode::Internal as i64)
            && let Ok(mut s) = self.inner.lock()
        {
            s.cells.remove(&k_owned(user, method, key));
        }
        outcome
    }
}

fn k_owned(user: &str, method: &str, key: &str) -> Key {
    (user.to_owned(), method.to_owned(), key.to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_key_runs_its_call_once_even_when_repeats_overlap() {
        let ids = Idempotency::default();
        let runs = AtomicUsize::new(0);
        let call = || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::task::yield_now().await;
            Ok(json!({ "run": n }))
        };
        let (a, b) = tokio::join!(
            ids.once("alice", "runs.retry", "k1", call()),
            ids.once("alice", "runs.retry", "k1", call()),
        );
        assert_eq!(a.unwrap(), json!({ "run": 1 }));
        assert_eq!(b.unwrap(), json!({ "run": 1 }));
        let again = ids.once("alice", "runs.retry", "k1", call()).await;
        assert_eq!(again.unwrap(), json!({ "run": 1 }));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another user, method or key is another call.
        ids.once("bob", "runs.retry", "k1", call()).await.unwrap();
        ids.once("alice", "runs.cancel", "k1", call())
            .await
            .unwrap();
        ids.once("alice", "runs.retry", "k2", call()).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 4);
    }
}
