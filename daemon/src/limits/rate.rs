//! Trigger rates: one GCRA limiter (governor) per user and per rate-limited
//! pipeline. Users' quotas differ, and a keyed governor limiter has one quota
//! for every key, so each key gets a direct limiter built from its own quota.
//! A reload keeps the limiter (and its state) of every key whose quota did not
//! change; a changed quota starts no fuller than the old one was.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::config::Rate;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A rate and its burst, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateQuota {
    /// The sustained rate.
    pub rate: Rate,
    /// Triggers accepted at once.
    pub burst: u32,
}

impl RateQuota {
    /// The quota for `rate` with `burst` (default: the rate's count).
    pub fn new(rate: Rate, burst: Option<u32>) -> Self {
        Self {
            rate,
            burst: burst.unwrap_or(rate.count).max(1),
        }
    }

    fn governor(&self) -> Option<Quota> {
        Quota::with_period(self.rate.interval())
            .map(|q| q.allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN)))
    }
}

struct Bucket {
    quota: RateQuota,
    limiter: Limiter,
    /// Capacity left after the last check, for the usage view and for carrying
    /// state over a quota change (governor cannot peek without taking a cell).
    remaining: AtomicU32,
}

/// The outcome of a check that let the trigger through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Triggers that may follow at once.
    pub remaining: u32,
}

/// Per-key limiters.
#[derive(Default)]
pub(crate) struct RateLimiters {
    buckets: RwLock<HashMap<String, Arc<Bucket>>>,
    clock: DefaultClock,
}

impl RateLimiters {
    fn bucket(&self, key: &str, quota: RateQuota) -> Option<Arc<Bucket>> {
        if let Ok(map) = self.buckets.read()
            && let Some(b) = map.get(key)
            && b.quota == quota
        {
            return Some(Arc::clone(b));
        }
        let mut map = self.buckets.write().ok()?;
        let old = map.get(key).cloned();
        if let Some(b) = &old
            && b.quota == quota
        {
            return Some(Arc::clone(b));
        }
        let limiter = RateLimiter::direct_with_clock(quota.governor()?, self.clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        let mut remaining = quota.burst;
        if let Some(old) = old {
            // A new quota must not hand out a fresh burst: start as used as the old one was.
            let left = old.remaining.load(Ordering::Relaxed).min(quota.burst);
            if let Some(used) = NonZeroU32::new(quota.burst - left) {
                let _ = limiter.check_n(used);
            }
            remaining = left;
        }
        let bucket = Arc::new(Bucket {
            quota,
            limiter,
            remaining: AtomicU32::new(remaining),
        });
        map.insert(key.to_owned(), Arc::clone(&bucket));
        Some(bucket)
    }

    /// Takes one trigger from `key`'s allowance, or says how long until one is free.
    pub fn check(&self, key: &str, quota: RateQuota) -> Result<Allowed, Duration> {
        let Some(bucket) = self.bucket(key, quota) else {
            return Ok(Allowed { remaining: 0 });
        };
        match bucket.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                bucket.remaining.store(remaining, Ordering::Relaxed);
                Ok(Allowed { remaining })
            }
            Err(not_until) => {
                bucket.remaining.store(0, Ordering::Relaxed);
                Err(not_until.wait_time_from(self.clock.now()))
            }
        }
    }

    /// Capacity left after `key`'s last check (the burst when never checked).
    pub fn remaining(&self, key: &str, quota: RateQuota) -> u32 {
        self.buckets
            .read()
            .ok()
            .and_then(|m| {
                m.get(key)
                    .map(|b| (b.quota, b.remaining.load(Ordering::Relaxed)))
            })
            .filter(|(q, _)| *q == quota)
            .map_or(quota.burst, |(_, r)| r)
    }

    /// Forgets keys that no longer have a quota.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut m) = self.buckets.write() {
            m.retain(|k, _| keep(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gets_exactly_its_size_then_waits_one_interval() {
        let limiters = RateLimiters::default();
        let q = RateQuota::new("10/min".parse().unwrap(), Some(5));
        for i in 0..5 {
            assert!(limiters.check("u:a", q).is_ok(), "trigger {i}");
        }
        let wait = limiters.check("u:a", q).unwrap_err();
        assert!(
            wait <= Duration::from_secs(6) && wait > Duration::from_secs(5),
            "{wait:?}"
        );
        // Another key is unaffected.
        assert!(limiters.check("u:b", q).is_ok());
    }

    #[test]
    fn a_changed_quota_keeps_what_was_used() {
        let limiters = RateLimiters::default();
        let q = RateQuota::new("10/min".parse().unwrap(), Some(3));
        for _ in 0..3 {
            limiters.check("u:a", q).unwrap();
        }
        let bigger = RateQuota::new("10/min".parse().unwrap(), Some(4));
        // Not a fresh burst of four: the used-up allowance stays used.
        assert!(limiters.check("u:a", bigger).is_err());
        assert_eq!(limiters.remaining("u:a", bigger), 0);
    }
}
