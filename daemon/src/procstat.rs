//! The daemon process's own figures from `/proc/self` (CPU time, memory,
//! descriptors, threads, start time), for `process_*` metrics.

/// One reading of the process's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft descriptor limit.
    pub max_fds: u64,
    /// OS threads.
    pub threads: u64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: f64,
}

/// Reads the figures; `None` where `/proc` is not there or not as expected.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads configuration values.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let page = u64::try_from(page).ok().filter(|&p| p > 0)?;
    let (utime, stime) = (field(14)?, field(15)?);
    // /proc/stat is hidden under ProcSubset=pid: then the time `mark_start` noted.
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
    });
    let start_time_seconds = match (boot, field(22)) {
        (Some(boot), Some(since_boot)) => boot as f64 + since_boot as f64 / ticks as f64,
        _ => *STARTED.get_or_init(now_seconds),
    };
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    };
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks as f64,
        resident_bytes: field(24)?.saturating_mul(page),
        virtual_bytes: field(23)?,
        open_fds,
        max_fds,
        threads: field(20)?,
        start_time_seconds,
    })
}

static STARTED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

fn now_seconds() -> f64 {
    sluice_shared::time::now_ms() as f64 / 1000.0
}

/// Notes now as the start time, for when `/proc/stat` cannot be read (call early).
pub fn mark_start() {
    STARTED.get_or_init(now_seconds);
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_threads_memory_and_a_start() {
        let p = super::read().expect("/proc/self");
        assert!(p.threads >= 1);
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds >= 3, "{p:?}");
        let now = jiff::Timestamp::now().as_second() as f64;
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86400.0);
    }
}
