//! One daemon per state directory: an exclusive lock file, so two engines never
//! execute the same runs (which would run nodes twice).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the state directory {path} is in use by another sluiced (pid {pid}); stop it first, or use `sluiced submit` to queue work for it"
    )]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The holder, as it recorded itself.
        pid: String,
    },
    /// The lock file could not be opened.
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
    _file: File,
}

impl StateLock {
    /// Takes the lock of `state_dir` or says who has it.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        use std::io::{Read, Seek, Write};
        let path = state_dir.join("sluiced.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a valid open descriptor; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Busy {
                path: state_dir.to_owned(),
                pid: pid.trim().to_owned(),
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Self { _file: file })
    }
}
