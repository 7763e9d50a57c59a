//! Waits between attempts: exponential from `backoff`, capped at `max_backoff`,
//! with equal jitter (a random wait between half and all of the step) so
//! retries of many runs do not align, and never below what the other side
//! asked for (HTTP Retry-After).

use std::time::Duration;

use sluice_shared::model::RetryPolicy;

/// The wait before attempt `next_attempt` (2 for the first retry).
pub fn delay(policy: &RetryPolicy, next_attempt: u32, asked: Option<Duration>) -> Duration {
    let exponent = next_attempt.saturating_sub(2).min(30);
    let base = policy.backoff.std().saturating_mul(1u32 << exponent);
    let capped = base.min(policy.max_backoff.std());
    let jittered = if policy.jitter && !capped.is_zero() {
        let half = capped / 2;
        half + Duration::from_nanos(fastrand::u64(
            0..=u64::try_from((capped - half).as_nanos()).unwrap_or(u64::MAX),
        ))
    } else {
        capped
    };
    match asked {
        Some(a) => jittered.max(a),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::Duration as D;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            backoff: D::from_secs(2),
            max_backoff: D::from_secs(10),
            jitter,
        }
    }

    #[test]
    fn doubles_and_caps() {
        let p = policy(false);
        let secs: Vec<u64> = (2..=6).map(|a| delay(&p, a, None).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let p = policy(true);
        for _ in 0..200 {
            let d = delay(&p, 3, None);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        assert_eq!(
            delay(&policy(false), 2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
