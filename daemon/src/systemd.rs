//! What the daemon says to systemd and learns from it: `sd_notify` datagrams
//! (READY, RELOADING, STOPPING, STATUS, WATCHDOG), the watchdog interval, and
//! whether stderr is the journal.
//!
//! The datagram protocol is a few lines, so it is written here rather than
//! taken from a crate: the environment is read once, before the runtime starts
//! any thread, and removed at the same time, so no node process or plugin can
//! inherit `NOTIFY_SOCKET` and speak for the daemon, and nothing later needs to
//! touch the (process-wide, unsynchronised) environment again.

use std::ffi::OsString;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` names no usable address.
    #[error("NOTIFY_SOCKET={0:?} is not a usable socket address")]
    Address(OsString),
    /// Sending failed.
    #[error("cannot send to the service manager: {0}")]
    Io(#[from] std::io::Error),
}

/// The service manager's notification socket and watchdog, as given at start.
#[derive(Debug, Default)]
pub struct ServiceManager {
    socket: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl ServiceManager {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then removes
    /// them from the environment.
    ///
    /// # Safety
    ///
    /// Changes the process environment: call it before any other thread exists.
    pub unsafe fn from_env_and_unset() -> Result<Self, NotifyError> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        // SAFETY: the caller guarantees no other thread reads the environment now.
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        Self::from_values(socket, usec.as_deref(), pid.as_deref())
    }

    /// A manager from the variables' values (for tests and `from_env_and_unset`).
    pub fn from_values(
        socket: Option<OsString>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
    ) -> Result<Self, NotifyError> {
        let socket = match socket.filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => {
                let addr = address(&name).ok_or_else(|| NotifyError::Address(name.clone()))?;
                Some((UnixDatagram::unbound()?, addr))
            }
        };
        // sd_watchdog_enabled(3): the pings are ours only when WATCHDOG_PID is
        // unset or names this process.
        let ours = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>() == Ok(std::process::id()));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Ok(Self { socket, watchdog })
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to ping the watchdog (half its timeout), when it is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|t| t / 2)
    }

    /// Sends `state` (newline-separated `KEY=value` pairs); nothing without a manager.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        if let Some((sock, addr)) = &self.socket {
            sock.send_to_addr(state.as_bytes(), addr)?;
        }
        Ok(())
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `RELOADING=1`, with the monotonic time systemd ≥ 253 wants for `Type=notify-reload`.
    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.notify("STOPPING=1\nSTATUS=stopping: letting running nodes finish")
    }

    /// `STATUS=` (one line: what `systemctl status` shows).
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.notify(&format!("STATUS={}", one_line(status)))
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify("WATCHDOG=1")
    }
}

/// A path, or `@name` for the abstract namespace (sd_notify(3)).
fn address(name: &OsString) -> Option<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).ok()
        }
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(name)).ok(),
        _ => None,
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0;
    if !ok {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1000
}

/// Whether stderr is the journal: `JOURNAL_STREAM` (`device:inode`) names
/// the file stderr is (systemd.exec(5)); a redirected stderr no longer matches.
pub fn stderr_is_journal() -> bool {
    std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|v| journal_stream_matches(&v, 2))
}

/// Whether `value` (`device:inode`) names the file open as `fd`.
pub fn journal_stream_matches(value: &str, fd: i32) -> bool {
    let Some((dev, ino)) = value.trim().split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat fills a stat struct we own; an invalid fd only fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_belongs_to_the_named_pid_only() {
        let me = std::process::id().to_string();
        let m = ServiceManager::from_values(None, Some("1000000"), Some(&me)).unwrap();
        assert_eq!(m.watchdog_interval(), Some(Duration::from_millis(500)));
        let other = ServiceManager::from_values(None, Some("1000000"), Some("1")).unwrap();
        assert_eq!(other.watchdog_interval(), None);
        let off = ServiceManager::from_values(None, Some("0"), None).unwrap();
        assert_eq!(off.watchdog_interval(), None);
    }

    #[test]
    fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let m = ServiceManager::from_values(Some(path.into_os_string()), None, None).unwrap();
        m.ready("3 pipelines\nloaded").unwrap();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "READY=1\nSTATUS=3 pipelines loaded"
        );
    }

    #[test]
    fn a_relative_notify_socket_is_refused() {
        assert!(ServiceManager::from_values(Some("relative".into()), None, None).is_err());
    }

    #[test]
    fn journal_stream_must_name_the_open_file() {
        let f = tempfile::tempfile().unwrap();
        use std::os::unix::io::AsRawFd;
        let fd = f.as_raw_fd();
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        assert!(journal_stream_matches(
            &format!("{}:{}", st.st_dev, st.st_ino),
            fd
        ));
        assert!(!journal_stream_matches(
            &format!("{}:{}", st.st_dev, st.st_ino + 1),
            fd
        ));
        assert!(!journal_stream_matches("garbage", fd));
    }
}
