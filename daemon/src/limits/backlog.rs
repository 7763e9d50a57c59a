//! The bounded backlog: runs accepted but not yet started (`queued`), counted
//! globally and per user against `max_queued`. A trigger reserves its place
//! before its run is written, so refusal happens before anything is
//! acknowledged, and concurrent triggers cannot overshoot the bound. A run
//! leaves the backlog when admission starts it or its driver finishes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_shared::run::RunId;

/// Runs queued at once across every user when `[limits.global] max_queued` is unset.
pub const DEFAULT_MAX_QUEUED: u64 = 10_000;
/// Runs of one user queued at once when its `max_queued` is unset.
pub const DEFAULT_MAX_QUEUED_PER_USER: u64 = 2_000;

#[derive(Default)]
struct State {
    /// Queued runs and their users.
    runs: HashMap<RunId, String>,
    /// Queued runs plus reservations, per user.
    per_user: HashMap<String, u64>,
    /// Queued runs alone (no reservations), per user.
    queued_per_user: HashMap<String, u64>,
    total: u64,
}

/// Which bound a trigger hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Every user's queued runs together.
    Global {
        /// Runs queued now.
        depth: u64,
        /// The bound.
        max: u64,
    },
    /// The user's own queued runs.
    User {
        /// The user's runs queued now.
        depth: u64,
        /// The bound.
        max: u64,
    },
}

/// Queued runs, counted.
#[derive(Default)]
pub struct Backlog {
    state: Mutex<State>,
}

/// A place reserved for a run being written; given back on drop unless the
/// run was created ([`Reservation::created`]).
pub struct Reservation {
    backlog: Arc<Backlog>,
    user: String,
    live: bool,
}

impl Reservation {
    /// The run was written: it holds the place until it starts.
    pub fn created(mut self, run: RunId) {
        self.live = false;
        let mut s = self.backlog.lock();
        if s.runs.insert(run, self.user.clone()).is_some() {
            // Already counted (a recovered or redelivered run): give the place back.
            drop(s);
            self.backlog.unreserve(&self.user);
        } else {
            *s.queued_per_user.entry(self.user.clone()).or_default() += 1;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.live {
            self.backlog.unreserve(&self.user);
        }
    }
}

impl Backlog {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Counts stay consistent after every statement; a panic elsewhere must not stop intake.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves a place for a run of `user`, or says which bound is full.
    pub fn reserve(
        self: &Arc<Self>,
        user: &str,
        max_total: u64,
        max_user: u64,
    ) -> Result<Reservation, Full> {
        let mut s = self.lock();
        if s.total >= max_total {
            return Err(Full::Global {
                depth: s.total,
                max: max_total,
            });
        }
        let mine = s.per_user.get(user).copied().unwrap_or(0);
        if mine >= max_user {
            return Err(Full::User {
                depth: mine,
                max: max_user,
            });
        }
        s.total += 1;
        *s.per_user.entry(user.to_owned()).or_default() += 1;
        Ok(Reservation {
            backlog: Arc::clone(self),
            user: user.to_owned(),
            live: true,
        })
    }

    /// Counts a run found queued at start, whatever the bounds (nothing
    /// accepted is dropped). Every run created later reserves its place
    /// first ([`Backlog::reserve`]).
    pub fn insert(&self, run: RunId, user: &str) {
        let mut s = self.lock();
        if s.runs.insert(run, user.to_owned()).is_none() {
            s.total += 1;
            *s.per_user.entry(user.to_owned()).or_default() += 1;
            *s.queued_per_user.entry(user.to_owned()).or_default() += 1;
        }
    }

    /// The run is no longer queued (started, cancelled or failed). Idempotent.
    pub fn leave(&self, run: RunId) {
        let mut s = self.lock();
        if let Some(user) = s.runs.remove(&run) {
            s.total = s.total.saturating_sub(1);
            Self::dec(&mut s.per_user, &user);
            Self::dec(&mut s.queued_per_user, &user);
        }
    }

    /// Whether `user` has a run written and not yet started (reservations of
    /// triggers still being written do not count).
    pub fn has_queued(&self, user: &str) -> bool {
        self.lock().queued_per_user.contains_key(user)
    }

    fn unreserve(&self, user: &str) {
        let mut s = self.lock();
        s.total = s.total.saturating_sub(1);
        Self::dec(&mut s.per_user, user);
    }

    fn dec(counts: &mut HashMap<String, u64>, user: &str) {
        if let Some(n) = counts.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(user);
            }
        }
    }

    /// Queued runs (and reservations) now: in all, and for `user`.
    pub fn depth(&self, user: Option<&str>) -> (u64, u64) {
        let s = self.lock();
        let mine = user.and_then(|u| s.per_user.get(u).copied()).unwrap_or(0);
        (s.total, mine)
    }

    /// Queued runs per user, most first.
    pub fn per_user(&self) -> Vec<(String, u64)> {
        let s = self.lock();
        let mut v: Vec<(String, u64)> = s.per_user.iter().map(|(u, n)| (u.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_and_places_come_back() {
        let b = Arc::new(Backlog::default());
        let r1 = b.reserve("alice", 3, 2).expect("room");
        let r2 = b.reserve("alice", 3, 2).expect("room");
        assert_eq!(
            b.reserve("alice", 3, 2).err(),
            Some(Full::User { depth: 2, max: 2 })
        );
        let r3 = b.reserve("bob", 3, 2).expect("room for bob");
        assert_eq!(
            b.reserve("carol", 3, 2).err(),
            Some(Full::Global { depth: 3, max: 3 })
        );
        // A write that failed gives its place back; a created run keeps it until it leaves.
        drop(r3);
        r1.created(RunId(1));
        r2.created(RunId(2));
        assert_eq!(b.depth(Some("alice")), (2, 2));
        assert!(b.has_queued("alice") && !b.has_queued("bob"));
        b.leave(RunId(1));
        b.leave(RunId(1));
        assert_eq!(b.depth(Some("alice")), (1, 1));
        assert!(b.has_queued("alice"));
        b.leave(RunId(2));
        assert!(
            !b.has_queued("alice"),
            "reservations alone are not queued runs"
        );
        assert!(b.reserve("alice", 3, 2).is_ok());
    }

    #[test]
    fn a_run_counted_twice_holds_one_place() {
        let b = Arc::new(Backlog::default());
        b.insert(RunId(7), "u");
        b.reserve("u", 10, 10).expect("room").created(RunId(7));
        assert_eq!(b.depth(Some("u")), (1, 1));
        b.leave(RunId(7));
        assert_eq!(b.depth(None), (0, 0));
    }
}
