//! The state directory: private to the user sluiced runs as, and used by one
//! daemon at a time.
//!
//! Privacy: the database holds every input, webhook body, output, log line
//! and audit row, so the directory is 0700 and its files 0600 (the daemon runs
//! with umask 077, so whatever SQLite creates is private too). A directory or
//! file owned by another user, or writable by group or others, is refused: its
//! content may have been planted or edited, and the daemon would resume the
//! runs it finds there as its own. One that is merely readable by others is
//! tightened with a warning — nothing in it can have been forged that way, and
//! refusing would stop every installation made before modes were enforced.
//!
//! Exclusion: an exclusive POSIX record lock (`fcntl(F_SETLK)`) on
//! `sluiced.lock`. Unlike `flock`, such a lock belongs to the process and is
//! not inherited across `fork`, so a child caught between fork and exec (or
//! any child at all) never keeps it after the daemon dies.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "sluiced.lock";

/// Files of the state directory that must be private, with what they are.
const PRIVATE_FILES: &[(&str, &str)] = &[
    ("sluice.db", "database"),
    ("sluice.db-wal", "database journal"),
    ("sluice.db-shm", "database index"),
    (LOCK_FILE, "lock file"),
];

/// How long a start waits for a lock whose holder cannot be seen alive (it is
/// exiting, or lives in another pid namespace) before giving up.
pub const DEAD_HOLDER_WAIT: Duration = Duration::from_secs(5);

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// It could not be created or examined.
    #[error("cannot use the state directory {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The path is something other than expected (a file where the directory should be).
    #[error("refusing the {what} {path}: it is not a {expected}")]
    WrongKind {
        /// What the path is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// "directory" or "regular file".
        expected: &'static str,
    },
    /// Another user owns it.
    #[error(
        "refusing the {what} {path}: it is owned by {owner} (mode {mode:04o}), but sluiced runs as {me}; another user could have planted or edited it. Use a state directory of your own, or `chown {chown_to}` it if you trust its content"
    )]
    ForeignOwner {
        /// What the path is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its owner, `uid N (name)`.
        owner: String,
        /// Its permission bits.
        mode: u32,
        /// The user sluiced runs as, `uid N (name)`.
        me: String,
        /// The same, as `chown` takes it: the name, else the uid.
        chown_to: String,
    },
    /// Group or others may write it.
    #[error(
        "refusing the {what} {path}: it is writable by group or others (owner {owner}, mode {mode:04o}), so its content cannot be trusted. Check it, then `chmod {fix} {path}`"
    )]
    Writable {
        /// What the path is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Its owner, `uid N (name)`.
        owner: String,
        /// Its permission bits.
        mode: u32,
        /// The mode to set, octal.
        fix: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `uid N (name)`, or `uid N` for a uid without a name.
fn describe_uid(uid: u32) -> String {
    match crate::api::identity::user_name(uid) {
        Some((name, _)) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The user name of `uid`, else the number.
fn chown_name(uid: u32) -> String {
    crate::api::identity::user_name(uid).map_or_else(|| uid.to_string(), |(name, _)| name)
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Creates the state directory (0700) if missing, checks that it and its
/// database and lock files belong to this user and are not writable by
/// anyone else, and takes away read access from group and others.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?,
        Err(e) => return Err(io_error(dir)(e)),
        Ok(_) => {}
    }
    let me = effective_uid();
    check(dir, "state directory", true, me)?;
    for (name, what) in PRIVATE_FILES {
        check(&dir.join(name), what, false, me)?;
    }
    Ok(())
}

/// Checks one path (following symbolic links, as opening it would); a file
/// that does not exist yet is fine (the umask makes it private when created).
fn check(path: &Path, what: &'static str, is_dir: bool, me: u32) -> Result<(), StateDirError> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !is_dir => return Ok(()),
        other => other.map_err(io_error(path))?,
    };
    let (expected, private) = if is_dir {
        ("directory", 0o700)
    } else {
        ("regular file", 0o600)
    };
    if (is_dir && !meta.is_dir()) || (!is_dir && !meta.is_file()) {
        return Err(StateDirError::WrongKind {
            what,
            path: path.to_owned(),
            expected,
        });
    }
    let mode = meta.mode() & 0o7777;
    if meta.uid() != me {
        return Err(StateDirError::ForeignOwner {
            what,
            path: path.to_owned(),
            owner: describe_uid(meta.uid()),
            mode,
            me: describe_uid(me),
            chown_to: chown_name(me),
        });
    }
    if mode & 0o022 != 0 {
        return Err(StateDirError::Writable {
            what,
            path: path.to_owned(),
            owner: describe_uid(meta.uid()),
            mode,
            fix: format!("{private:o}"),
        });
    }
    if mode != private {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))
            .map_err(io_error(path))?;
        tracing::warn!(
            path = %path.display(),
            was = %format!("{mode:04o}"),
            now = %format!("{private:04o}"),
            "the {what} was readable by others; made it private"
        );
    }
    Ok(())
}

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the state directory {path} is in use by another sluiced (pid {pid}); stop it first, or trigger runs through it with `sluice trigger PIPELINE`"
    )]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The holder, as the kernel or its own record names it.
        pid: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Held for as long as the process uses the state directory.
#[derive(Debug)]
pub struct StateLock {
    // The record lock lasts while this descriptor is open. POSIX drops a
    // process's record locks on a file when it closes *any* descriptor of that
    // file, so nothing else in the daemon may open `sluiced.lock`.
    _file: File,
}

/// A whole-file write lock request for `fcntl`.
fn whole_file_lock() -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// Whether `pid` names a live process (EPERM: alive, someone else's).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl StateLock {
    /// Takes the lock of `state_dir` or says who has it.
    ///
    /// A holder that is alive is reported at once. One the kernel cannot show
    /// alive (exiting right now, or in another pid namespace, where it is
    /// named by the pid it recorded) is waited for, up to [`DEAD_HOLDER_WAIT`].
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        Self::acquire_waiting(state_dir, DEAD_HOLDER_WAIT)
    }

    /// [`StateLock::acquire`] with another bound on waiting for a dead holder.
    pub fn acquire_waiting(state_dir: &Path, wait: Duration) -> Result<Self, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let request = whole_file_lock();
            // SAFETY: F_SETLK with a valid descriptor and a pointer to a live flock.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &request) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                return Err(io(err));
            }
            let holder = holder(&mut file);
            if let Some((pid, true)) = holder {
                return Err(LockError::Busy {
                    path: state_dir.to_owned(),
                    pid: pid.to_string(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LockError::Busy {
                    path: state_dir.to_owned(),
                    pid: holder.map_or_else(|| "unknown".to_owned(), |(pid, _)| pid.to_string()),
                });
            }
            tracing::debug!(
                ?holder,
                "the state lock's holder is not alive; waiting for the lock"
            );
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// Who holds the lock, and whether it is alive: the kernel's answer, else
/// the pid the holder recorded in the file. `None`: nobody can be named.
fn holder(file: &mut File) -> Option<(i32, bool)> {
    let mut query = whole_file_lock();
    // SAFETY: F_GETLK with a valid descriptor and a pointer to a live flock it fills in.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut query) };
    if rc == 0 && query.l_type == libc::F_UNLCK as libc::c_short {
        // Released since our attempt: no holder, try again.
        return None;
    }
    let pid = if rc == 0 && query.l_pid > 0 {
        query.l_pid
    } else {
        // The holder is outside our pid namespace (or F_GETLK failed): its record.
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        text.trim().parse().ok()?
    };
    Some((pid, alive(pid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        prepare(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn readable_files_are_tightened_and_writable_ones_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let db = dir.join("sluice.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o600);

        let wal = dir.join("sluice.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o606)).unwrap();
        let err = prepare(&dir).unwrap_err().to_string();
        assert!(err.contains(&wal.display().to_string()), "{err}");
        assert!(err.contains("mode 0606"), "{err}");
        assert!(err.contains("writable by group or others"), "{err}");
        // Refused, not silently fixed.
        assert_eq!(std::fs::metadata(&wal).unwrap().mode() & 0o777, 0o606);
    }

    #[test]
    fn a_directory_where_the_database_should_be_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("sluice.db")).unwrap();
        let err = prepare(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn the_lock_records_its_holder_and_is_taken_again_once_released() {
        // Conflicts need two processes (record locks never conflict within
        // one); daemon/tests/statedir.rs covers them with the real binary.
        let tmp = tempfile::tempdir().unwrap();
        let lock = StateLock::acquire(tmp.path()).unwrap();
        let recorded = std::fs::read_to_string(tmp.path().join(LOCK_FILE)).unwrap();
        assert_eq!(recorded, std::process::id().to_string());
        drop(lock);
        StateLock::acquire_waiting(tmp.path(), Duration::ZERO).unwrap();
    }
}
