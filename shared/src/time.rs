//! The clock and the waits between attempts, in one place for the daemon (its
//! store, engine, metrics and notifier) and the console.
//!
//! A leaf: beside std, jiff and fastrand it reads only the plain retry policy
//! of the model, so anything may import it without a cycle.
//!
//! One jitter everywhere: *equal jitter*. The step before a retry doubles from
//! the first wait up to a cap; the wait actually taken is drawn uniformly
//! between half of that step and all of it. Half keeps a floor under every
//! wait (a retry never comes at once, unlike full jitter's zero); the random
//! half spreads the retries of many runs (or many consoles reconnecting) so
//! they do not arrive together.

use std::time::Duration;

use crate::model::RetryPolicy;

/// Now, in milliseconds since the Unix epoch: how runs, nodes, events and the
/// wire carry time.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The step before attempt `next_attempt` (2 for the first retry): `first`,
/// doubled for every retry before this one, never more than `max`.
pub fn exponential(first: Duration, max: Duration, next_attempt: u32) -> Duration {
    let exponent = next_attempt.saturating_sub(2).min(30);
    first.saturating_mul(1u32 << exponent).min(max)
}

/// Equal jitter: a wait drawn uniformly between half of `step` and all of it.
pub fn equal_jitter(step: Duration) -> Duration {
    if step.is_zero() {
        return step;
    }
    let half = step / 2;
    let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=spread))
}

/// The wait before attempt `next_attempt` (2 for the first retry) under
/// `policy`: [`exponential`] from `backoff`, capped at `max_backoff`, with
/// [`equal_jitter`] when the policy asks for it, and never shorter than what
/// the other side `asked` for (an HTTP `Retry-After`).
pub fn delay(policy: &RetryPolicy, next_attempt: u32, asked: Option<Duration>) -> Duration {
    let step = exponential(policy.backoff.std(), policy.max_backoff.std(), next_attempt);
    let wait = if policy.jitter {
        equal_jitter(step)
    } else {
        step
    };
    match asked {
        Some(a) => wait.max(a),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Duration as D;

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
        // Far past the cap the doubling saturates instead of overflowing.
        assert_eq!(delay(&p, u32::MAX, None), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let p = policy(true);
        let waits: Vec<Duration> = (0..200).map(|_| delay(&p, 3, None)).collect();
        for d in &waits {
            assert!(
                *d >= Duration::from_secs(2) && *d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
        // Random, not a constant: 200 draws from two seconds of nanoseconds differ.
        assert!(waits.iter().any(|d| *d != waits[0]), "{waits:?}");
    }

    #[test]
    fn zero_steps_stay_zero() {
        assert_eq!(equal_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_honoured() {
        assert_eq!(
            delay(&policy(false), 2, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        // A shorter ask does not shorten the wait.
        assert_eq!(
            delay(&policy(false), 2, Some(Duration::from_secs(1))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn now_is_after_this_code_was_written() {
        // 2024-01-01T00:00:00Z: a clock in seconds or microseconds fails this.
        let now = now_ms();
        assert!(
            now > 1_704_067_200_000 && now < 1_704_067_200_000 * 10,
            "{now}"
        );
    }
}
