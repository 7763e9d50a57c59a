//! Process groups left behind by a crash. Every child an attempt starts leads
//! its own process group; the engine records the group and its leader's start
//! time, and at the next start stops a group that is still alive before the
//! attempt runs again — so a node interrupted by a crash never runs twice at once.

use std::time::Duration;

/// The start time of process `pid` (clock ticks since boot), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')':
    // fields are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether any process of group `pgid` is alive. Zombies do not count: an
/// orphan's parent (init, or a container's first process) may reap them late.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(-pgid, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let rest = stat.get(stat.rfind(')')? + 1..)?.to_owned();
                let mut f = rest.split_whitespace();
                let state = f.next()?.to_owned();
                let pgrp: i32 = f.nth(1)?.parse().ok()?;
                Some(pgrp == pgid && state != "Z")
            })
            .unwrap_or(false)
    })
}

/// Whether group `pgid` is still the one an attempt started (leader started at
/// `leader_start`). A living leader must have that start time (else the pid was
/// reused by an unrelated process). With the leader gone, a living group is
/// still ours: Linux does not reuse a pid while a process group of that id exists.
fn is_ours(pgid: i32, leader_start: u64) -> bool {
    if pgid <= 1 {
        return false;
    }
    match start_time(pgid) {
        Some(t) => leader_start != 0 && t == leader_start && group_alive(pgid),
        None => group_alive(pgid),
    }
}

/// Stops what is left of an attempt's process group: SIGTERM, then SIGKILL
/// after `grace`. Returns whether anything was left to stop.
pub async fn stop_leftover(pgid: i32, leader_start: u64, grace: Duration) -> bool {
    if !is_ours(pgid, leader_start) {
        return false;
    }
    // SAFETY: signals a process group verified above to be the attempt's.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = tokio::time::Instant::now() + grace;
    while group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if group_alive(pgid) {
        // SAFETY: as above; the group ignored SIGTERM.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while group_alive(pgid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    true
}

/// Live processes whose environment holds `name=value` (the attempt marker).
/// Only processes of our own user are readable, which are the only ones an
/// attempt can have started.
fn marked(name: &str, value: &str) -> Vec<i32> {
    let needle = format!("{name}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != me))
        .filter(|&pid| has_marker(pid, needle.as_bytes()))
        .collect()
}

fn has_marker(pid: i32, needle: &[u8]) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 1..)?.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    });
    alive
        && std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle))
}

/// A process handle that stays valid if the process dies and its pid is
/// reused, so a signal can only reach the process that was checked.
struct PidFd(i32);

impl PidFd {
    fn open(pid: i32) -> Option<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        i32::try_from(fd).ok().filter(|&fd| fd >= 0).map(Self)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signals the process the descriptor refers to, nothing else.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

impl Drop for PidFd {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// Stops every process carrying the attempt marker `name=value`: SIGTERM,
/// then SIGKILL after `grace`. Returns whether any was found.
pub async fn stop_marked(name: &str, value: &str, grace: Duration) -> bool {
    let needle = format!("{name}={value}");
    // Checked again once the handle is open: the pid may have been reused
    // between the scan and the open.
    let handles = |pids: Vec<i32>| -> Vec<PidFd> {
        pids.into_iter()
            .filter_map(|pid| PidFd::open(pid).filter(|_| has_marker(pid, needle.as_bytes())))
            .collect()
    };
    let found = handles(marked(name, value));
    if found.is_empty() {
        return false;
    }
    for p in &found {
        p.signal(libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !marked(name, value).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let left = handles(marked(name, value));
        if left.is_empty() {
            break;
        }
        for p in &left {
            p.signal(libc::SIGKILL);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !marked(name, value).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marked_processes_are_stopped_even_outside_their_group() {
        use std::os::unix::process::CommandExt;
        let value = format!("test.{}:n:1", std::process::id());
        // One ignores TERM, one runs in a session of its own (as a daemonised
        // child would): both carry the marker and both are stopped.
        let mut kids: Vec<std::process::Child> =
            ["trap '' TERM; sleep 60 & wait", "exec setsid sleep 60"]
                .into_iter()
                .map(|script| {
                    std::process::Command::new("sh")
                        .args(["-c", script])
                        .env("SLUICE_TEST_MARK", &value)
                        .process_group(0)
                        .spawn()
                        .expect("spawn sh")
                })
                .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while marked("SLUICE_TEST_MARK", &value).len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "children never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!stop_marked("SLUICE_TEST_MARK", "other", Duration::from_millis(50)).await);
        assert!(stop_marked("SLUICE_TEST_MARK", &value, Duration::from_millis(200)).await);
        assert!(marked("SLUICE_TEST_MARK", &value).is_empty());
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    #[test]
    fn own_start_time_is_read() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert!(start_time(i32::MAX).is_none());
    }

    #[tokio::test]
    async fn a_leftover_group_is_stopped_and_a_reused_pid_is_left_alone() {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 60 & sleep 60; wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let pgid = i32::try_from(child.id()).expect("pid fits");
        let start = start_time(pgid).expect("start time");
        // Reaped as soon as it dies, as init reaps a crashed daemon's orphans.
        let reaper = std::thread::spawn(move || {
            let mut child = child;
            child.wait()
        });
        // A wrong start time means "not ours": nothing is signalled.
        assert!(!stop_leftover(pgid, start + 1, Duration::from_millis(50)).await);
        assert!(group_alive(pgid));
        // The group ignores TERM (the shell does): KILL follows the grace.
        assert!(stop_leftover(pgid, start, Duration::from_millis(200)).await);
        assert!(!group_alive(pgid));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !reaper.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after 30 s waiting for the killed shell to be reaped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reaper.join().expect("reaper").is_ok());
    }
}
