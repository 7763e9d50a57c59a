//! Default locations shared by the daemon and its clients, so `sluice` finds
//! the socket `sluiced` created without being told.

use std::path::PathBuf;

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| {
        // systemd may list several directories separated by ':'; the first is ours.
        let s = v.to_string_lossy().into_owned();
        PathBuf::from(s.split(':').next().unwrap_or_default())
    })
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

fn home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The state directory: `$STATE_DIRECTORY`, else `/var/lib/sluice` as root, else `$XDG_STATE_HOME/sluice`.
pub fn default_state_dir() -> PathBuf {
    env_path("STATE_DIRECTORY").unwrap_or_else(|| {
        if is_root() {
            PathBuf::from("/var/lib/sluice")
        } else {
            env_path("XDG_STATE_HOME")
                .unwrap_or_else(|| home().join(".local/state"))
                .join("sluice")
        }
    })
}

/// The socket: `$SLUICE_SOCKET`, else `$RUNTIME_DIRECTORY/sluice.sock`, else
/// `/run/sluice/sluice.sock` as root, else `$XDG_RUNTIME_DIR/sluice/sluice.sock`,
/// else `sluice.sock` in the state directory.
pub fn default_socket() -> PathBuf {
    env_path("SLUICE_SOCKET")
        .or_else(|| env_path("RUNTIME_DIRECTORY").map(|d| d.join("sluice.sock")))
        .unwrap_or_else(|| {
            if is_root() {
                PathBuf::from("/run/sluice/sluice.sock")
            } else {
                env_path("XDG_RUNTIME_DIR").map_or_else(
                    || default_state_dir().join("sluice.sock"),
                    |d| d.join("sluice/sluice.sock"),
                )
            }
        })
}

/// The configuration directory: `$CONFIGURATION_DIRECTORY`, else `/etc/sluice` as root, else `$XDG_CONFIG_HOME/sluice`.
pub fn default_config_dir() -> PathBuf {
    env_path("CONFIGURATION_DIRECTORY").unwrap_or_else(|| {
        if is_root() {
            PathBuf::from("/etc/sluice")
        } else {
            env_path("XDG_CONFIG_HOME")
                .unwrap_or_else(|| home().join(".config"))
                .join("sluice")
        }
    })
}
