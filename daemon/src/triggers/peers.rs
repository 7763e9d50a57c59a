//! Connections per client address on the webhook listener, so one peer
//! cannot take every connection slot (and file descriptor) for itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts open connections per address against a cap.
#[derive(Clone, Debug)]
pub struct PeerSlots {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

/// One open connection of an address; its slot is given back on drop.
#[derive(Debug)]
pub struct PeerSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlots {
    /// At most `max` connections per address (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max: max.max(1),
        }
    }

    /// A slot for a new connection from `ip`, unless it has `max` open already.
    pub fn claim(&self, ip: IpAddr) -> Option<PeerSlot> {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            open: Arc::clone(&self.open),
            ip,
        })
    }

    /// Addresses with at least one open connection.
    pub fn peers(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            // Forget idle addresses, or a scan from many of them would grow the map forever.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_capped_others_are_not_and_slots_come_back() {
        let slots = PeerSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.claim(a).unwrap();
        let _second = slots.claim(mapped).unwrap();
        assert!(
            slots.claim(a).is_none(),
            "the same address, either spelling"
        );
        assert!(slots.claim(b).is_some(), "another address is not affected");
        drop(first);
        assert!(slots.claim(a).is_some());
        assert_eq!(slots.peers(), 1, "idle addresses are forgotten");
    }
}
