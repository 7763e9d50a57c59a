//! Trigger rates: one GCRA bucket per user and per rate-limited pipeline.
//! Users' quotas differ, so each key has its own quota. The bucket is a
//! theoretical arrival time (TAT) under a mutex — the algorithm governor
//! uses — kept here so that the usage view reads the very state the next
//! check decides on: the "N left" it shows is what the limiter will do, at
//! that moment, replenished as time passes (governor cannot be peeked without
//! taking a cell). A reload keeps the state of every key whose quota did not
//! change; a changed quota starts no fuller than the old one was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::config::Rate;

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

    /// The time one trigger "costs" (the emission interval), never zero.
    fn t(&self) -> Duration {
        self.rate.interval().max(Duration::from_nanos(1))
    }

    /// How far ahead of now the TAT may run: burst - 1 intervals.
    fn tau(&self) -> Duration {
        self.t().saturating_mul(self.burst.saturating_sub(1))
    }
}

/// One key's GCRA state.
struct Bucket {
    quota: RateQuota,
    /// When the next trigger would arrive at the sustained rate; `None`: never used.
    tat: Mutex<Option<Instant>>,
}

impl Bucket {
    /// Triggers that would be let through at `now`, from `tat`.
    fn remaining(quota: RateQuota, tat: Option<Instant>, now: Instant) -> u32 {
        let Some(tat) = tat else {
            return quota.burst;
        };
        // Allowed while tat - now <= tau: count = floor((now + tau + t - tat) / t).
        let ahead = tat.saturating_duration_since(now);
        let room = (quota.tau() + quota.t()).saturating_sub(ahead);
        let n = room.as_nanos() / quota.t().as_nanos();
        u32::try_from(n).unwrap_or(u32::MAX).min(quota.burst)
    }

    /// The TAT at which `left` triggers remain at `now` (for a new quota).
    fn tat_for(quota: RateQuota, left: u32, now: Instant) -> Option<Instant> {
        let used = quota.burst.saturating_sub(left);
        (used > 0).then(|| now + quota.t().saturating_mul(used))
    }
}

/// The outcome of a check that let the trigger through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// Triggers that may follow at once.
    pub remaining: u32,
}

/// Per-key buckets.
#[derive(Default)]
pub(crate) struct RateLimiters {
    buckets: RwLock<HashMap<String, Arc<Bucket>>>,
}

impl RateLimiters {
    /// `key`'s bucket under `quota`, made (or remade for a changed quota) on first use.
    fn bucket(&self, key: &str, quota: RateQuota, now: Instant) -> Option<Arc<Bucket>> {
        if let Ok(map) = self.buckets.read()
            && let Some(b) = map.get(key)
            && b.quota == quota
        {
            return Some(Arc::clone(b));
        }
        let mut map = self.buckets.write().ok()?;
        let left = match map.get(key) {
            Some(b) if b.quota == quota => return Some(Arc::clone(b)),
            // A new quota must not hand out a fresh burst: start as used as the old one is now.
            Some(old) => {
                let tat = *old.tat.lock().ok()?;
                Bucket::remaining(old.quota, tat, now).min(quota.burst)
            }
            None => quota.burst,
        };
        let bucket = Arc::new(Bucket {
            quota,
            tat: Mutex::new(Bucket::tat_for(quota, left, now)),
        });
        map.insert(key.to_owned(), Arc::clone(&bucket));
        Some(bucket)
    }

    /// Takes one trigger from `key`'s allowance, or says how long until one is free.
    pub fn check(&self, key: &str, quota: RateQuota) -> Result<Allowed, Duration> {
        self.check_at(key, quota, Instant::now())
    }

    fn check_at(&self, key: &str, quota: RateQuota, now: Instant) -> Result<Allowed, Duration> {
        let Some(bucket) = self.bucket(key, quota, now) else {
            return Ok(Allowed { remaining: 0 });
        };
        let Ok(mut tat) = bucket.tat.lock() else {
            return Ok(Allowed { remaining: 0 });
        };
        let base = tat.map_or(now, |t| t.max(now));
        let ahead = base - now;
        if ahead > quota.tau() {
            return Err(ahead - quota.tau());
        }
        *tat = Some(base + quota.t());
        Ok(Allowed {
            remaining: Bucket::remaining(quota, *tat, now),
        })
    }

    /// Triggers `key` may start at once now, without taking any: exactly
    /// what the next checks will let through (a changed quota as the next
    /// check will carry it over).
    pub fn remaining(&self, key: &str, quota: RateQuota) -> u32 {
        self.remaining_at(key, quota, Instant::now())
    }

    fn remaining_at(&self, key: &str, quota: RateQuota, now: Instant) -> u32 {
        let Ok(map) = self.buckets.read() else {
            return 0;
        };
        let Some(b) = map.get(key) else {
            return quota.burst;
        };
        let tat = b.tat.lock().map_or(None, |t| *t);
        let left = Bucket::remaining(b.quota, tat, now);
        if b.quota == quota {
            left
        } else {
            left.min(quota.burst)
        }
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

    /// What the usage view says is what the limiter does, at any moment:
    /// after triggers, as time replenishes the bucket, and across a raised quota.
    #[test]
    fn remaining_is_what_the_next_checks_let_through() {
        let limiters = RateLimiters::default();
        let t0 = Instant::now();
        let q = RateQuota::new("2/min".parse().unwrap(), None);
        assert_eq!(limiters.remaining_at("u:a", q, t0), 2);
        limiters.check_at("u:a", q, t0).unwrap();
        limiters.check_at("u:a", q, t0).unwrap();
        assert_eq!(limiters.remaining_at("u:a", q, t0), 0);
        assert!(limiters.check_at("u:a", q, t0).is_err());
        // One interval (30 s) later one is free again, and only one.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(
            limiters.remaining_at("u:a", q, t1 - Duration::from_millis(1)),
            0
        );
        assert_eq!(limiters.remaining_at("u:a", q, t1), 1);
        // A raised rate (SIGHUP): what it shows before the next check is what
        // that check and the ones after it do.
        let raised = RateQuota::new("100/min".parse().unwrap(), Some(5));
        let shown = limiters.remaining_at("u:a", raised, t1);
        let mut let_through = 0;
        while limiters.check_at("u:a", raised, t1).is_ok() {
            let_through += 1;
        }
        assert_eq!(shown, 1);
        assert_eq!(let_through, shown);
        assert_eq!(limiters.remaining_at("u:a", raised, t1), 0);
        // 0.6 s per trigger at 100/min: after 3 s, five are free (the burst).
        let t2 = t1 + Duration::from_secs(3);
        let shown = limiters.remaining_at("u:a", raised, t2);
        let mut let_through = 0;
        while limiters.check_at("u:a", raised, t2).is_ok() {
            let_through += 1;
        }
        assert_eq!((shown, let_through), (5, 5));
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
