//! The file descriptor budget: RLIMIT_NOFILE raised to its hard limit at
//! start, connection caps derived from it, and running out of descriptors
//! (EMFILE/ENFILE) treated as the passing condition it is.

use std::io;
use std::time::Duration;

/// Descriptors kept for everything but webhook connections and children:
/// the database and its pools, listeners, stdio, the runtime, and the
/// control socket's clients (at most [`crate::api`]'s 512).
const RESERVED: u64 = 64 + 512;

/// Fewest and most webhook connections served at once, whatever the budget.
const WEBHOOK_CONNECTIONS: (u64, u64) = (16, 4096);

/// The descriptor limits before and after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The soft limit sluiced was started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
}

impl Budget {
    /// Webhook connections served at once: half of what the reserve leaves,
    /// the other half being for node children's pipes and outgoing requests.
    pub fn webhook_connections(&self) -> usize {
        let share = self.soft.saturating_sub(RESERVED) / 2;
        share.clamp(WEBHOOK_CONNECTIONS.0, WEBHOOK_CONNECTIONS.1) as usize
    }
}

fn get() -> io::Result<libc::rlimit> {
    // SAFETY: an all-zero rlimit is valid; getrlimit fills it in.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid resource and a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises the soft RLIMIT_NOFILE to the hard one (to the kernel's `nr_open`
/// when the hard limit is unlimited, which setrlimit would refuse).
pub fn raise() -> io::Result<Budget> {
    let lim = get()?;
    let before = lim.rlim_cur as u64;
    let mut target = lim.rlim_max;
    if target == libc::RLIM_INFINITY {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(1 << 20);
        target = nr_open;
    }
    if target <= lim.rlim_cur {
        return Ok(Budget {
            before,
            soft: before,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: a valid resource and a pointer to a live rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Budget {
        before,
        soft: target as u64,
    })
}

/// Whether an error means the process (EMFILE) or the system (ENFILE) is out
/// of file descriptors: a passing condition to wait out, not a failure.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Pauses between attempts after `accept` or `spawn` failed, doubling from
/// 50 ms to 1 s, and says whether this failure is the first of a streak (the
/// one worth a log line: a full descriptor table must not flood the log).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    failing: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Self::FIRST,
            failing: false,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    /// Records a failure: the pause to take, and whether it starts a streak.
    pub fn failed(&mut self) -> (Duration, bool) {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let first = !std::mem::replace(&mut self.failing, true);
        (pause, first)
    }

    /// Records a success; true when it ends a streak of failures.
    pub fn succeeded(&mut self) -> bool {
        self.next = Self::FIRST;
        std::mem::replace(&mut self.failing, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_emfile_or_enfile_only() {
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_exhaustion(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(!is_exhaustion(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(!is_exhaustion(&io::Error::other("EMFILE")));
    }

    #[test]
    fn backoff_doubles_to_a_second_and_logs_once_per_streak() {
        let mut b = Backoff::default();
        let pauses: Vec<(u64, bool)> = (0..7)
            .map(|_| {
                let (p, first) = b.failed();
                (p.as_millis() as u64, first)
            })
            .collect();
        assert_eq!(
            pauses,
            [
                (50, true),
                (100, false),
                (200, false),
                (400, false),
                (800, false),
                (1000, false),
                (1000, false)
            ]
        );
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert_eq!(b.failed(), (Duration::from_millis(50), true));
    }

    #[test]
    fn the_webhook_cap_follows_the_budget() {
        let cap = |soft| Budget { before: soft, soft }.webhook_connections();
        assert_eq!(cap(256), 16);
        assert_eq!(cap(1024), 224);
        assert_eq!(cap(1 << 20), 4096);
    }
}
