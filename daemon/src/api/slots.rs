//! Connection slots: how many socket connections one uid, and everyone
//! together, may hold. A uid's count is taken at accept, before anything else
//! is spent on the connection, so one user cannot exhaust the global slots;
//! admins may use a reserve above the global cap, so they still get in when
//! others hog it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Connections beyond the global cap that only admins may take.
pub const ADMIN_RESERVE: usize = 32;

/// Why a connection was turned away.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefusal {
    /// The uid already holds its share.
    #[error(
        "too many connections from uid {uid} (at most {max} per user); close idle clients and try again"
    )]
    PerUser {
        /// The uid.
        uid: u32,
        /// Its cap.
        max: usize,
    },
    /// Every slot is taken.
    #[error("the daemon serves {max} connections already; try again later")]
    Global {
        /// The global cap.
        max: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    per_uid: HashMap<u32, usize>,
    /// Connections past the per-uid check and admitted globally.
    admitted: usize,
}

/// The counters shared by the accept loop and the connections.
#[derive(Clone, Debug)]
pub struct Slots {
    counts: Arc<Mutex<Counts>>,
    per_user: usize,
    global: usize,
}

impl Slots {
    /// Slots for `global` connections in all and `per_user` per uid.
    pub fn new(global: usize, per_user: usize) -> Self {
        Self {
            counts: Arc::default(),
            per_user,
            global,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under every panic point (plain integer updates).
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one of `uid`'s slots; its global slot comes with [`UserSlot::admit`].
    pub fn take(&self, uid: u32) -> Result<UserSlot, SlotRefusal> {
        let mut c = self.counts();
        let n = c.per_uid.entry(uid).or_insert(0);
        if *n >= self.per_user {
            return Err(SlotRefusal::PerUser {
                uid,
                max: self.per_user,
            });
        }
        *n += 1;
        Ok(UserSlot {
            slots: self.clone(),
            uid,
            admitted: false,
        })
    }

    /// Connections held now (admitted ones).
    pub fn admitted(&self) -> usize {
        self.counts().admitted
    }
}

/// One uid's slot, released on drop.
#[derive(Debug)]
pub struct UserSlot {
    slots: Slots,
    uid: u32,
    admitted: bool,
}

impl UserSlot {
    /// Takes a global slot: anyone below the cap, admins also from the reserve.
    pub fn admit(&mut self, admin: bool) -> Result<(), SlotRefusal> {
        if self.admitted {
            return Ok(());
        }
        let cap = if admin {
            self.slots.global + ADMIN_RESERVE
        } else {
            self.slots.global
        };
        let mut c = self.slots.counts();
        if c.admitted >= cap {
            return Err(SlotRefusal::Global {
                max: self.slots.global,
            });
        }
        c.admitted += 1;
        self.admitted = true;
        Ok(())
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut c = self.slots.counts();
        if self.admitted {
            c.admitted -= 1;
        }
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_uid_cannot_take_every_slot_and_admins_have_a_reserve() {
        let slots = Slots::new(4, 3);
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = slots.take(1000).expect("below the per-user cap");
            s.admit(false).expect("below the global cap");
            held.push(s);
        }
        assert_eq!(
            slots.take(1000).unwrap_err(),
            SlotRefusal::PerUser { uid: 1000, max: 3 }
        );
        let mut other = slots.take(1001).expect("another uid has its own share");
        other.admit(false).expect("one global slot left");
        held.push(other);
        let mut late = slots.take(1002).expect("per-user slot");
        assert_eq!(late.admit(false), Err(SlotRefusal::Global { max: 4 }));
        late.admit(true).expect("an admin takes the reserve");
        held.push(late);
        assert_eq!(slots.admitted(), 5);
        held.clear();
        assert_eq!(slots.admitted(), 0);
        assert!(slots.counts().per_uid.is_empty(), "every slot returned");
    }

    #[test]
    fn a_refused_connection_returns_its_user_slot() {
        let slots = Slots::new(0, 1);
        let mut s = slots.take(7).expect("first");
        assert!(s.admit(false).is_err());
        drop(s);
        slots.take(7).expect("the slot came back");
    }
}
