//! `sluiced.toml`: paths, engine, retention (and sections later issues read).
//! Every key is optional; command-line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_shared::Duration;

use crate::store::Durability;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where things live.
    #[serde(default)]
    pub paths: Paths,
    /// The HTTP listener (webhooks, metrics).
    #[serde(default)]
    pub http: Http,
    /// Execution settings.
    #[serde(default)]
    pub engine: Engine,
    /// How long finished runs are kept.
    #[serde(default)]
    pub retention: Retention,
    /// The control socket.
    #[serde(default)]
    pub socket: SocketConfig,
    /// Access roles (read by the socket API).
    #[serde(default)]
    pub access: Option<toml::Table>,
    /// Limits: trigger rates, concurrency and daily caps (see [`crate::limits`]).
    #[serde(default)]
    pub limits: crate::limits::LimitsConfig,
    /// LLM providers (resolved by `crate::llm` for the llm node).
    #[serde(default)]
    pub llm: crate::llm::LlmConfig,
    /// Email delivery for notifications (see [`crate::notify::SmtpConfig`]).
    #[serde(default)]
    pub smtp: Option<crate::notify::SmtpConfig>,
    /// The daemon's own log: level and rolling files.
    #[serde(default)]
    pub log: Log,
    /// Where runs are kept: SQLite (default) or PostgreSQL.
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[store]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:///abs/path.db` or `postgres://user@host:port/db`; unset:
    /// `sluice.db` in the state directory.
    pub url: Option<String>,
    /// Name of the secret (a systemd credential or a secrets-file entry)
    /// holding the PostgreSQL password; a password in `url` is refused.
    pub password: Option<String>,
    /// PostgreSQL read connections at most (default 8).
    pub pool_size: Option<u32>,
    /// PostgreSQL: statements running longer are cancelled (default 30s).
    pub statement_timeout: Option<Duration>,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A tracing filter, e.g. `info` or `warn,sluice_daemon::triggers=debug`
    /// (`SLUICE_LOG` overrides it).
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Directory of rolling log files; unset: `$LOGS_DIRECTORY` under systemd,
    /// else no files (stderr only).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// When a new file starts.
    #[serde(default)]
    pub rotation: LogRotation,
    /// Files kept in `dir` (older ones are deleted); 0 keeps every file.
    #[serde(default = "default_log_keep")]
    pub keep: usize,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            dir: None,
            rotation: LogRotation::default(),
            keep: default_log_keep(),
        }
    }
}

impl Log {
    /// The directory files go to: the key, else `$LOGS_DIRECTORY` (systemd's `LogsDirectory=`).
    pub fn resolved_dir(&self) -> Option<PathBuf> {
        self.dir.clone().or_else(|| env_path("LOGS_DIRECTORY"))
    }
}

/// `[log] rotation`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    /// A file per hour: `sluiced.YYYY-MM-DD-HH.log` (UTC).
    Hourly,
    /// A file per day: `sluiced.YYYY-MM-DD.log` (UTC).
    #[default]
    Daily,
    /// One file, `sluiced.log`, never rotated (leave it to logrotate).
    Never,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_log_keep() -> usize {
    14
}

/// `[paths]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Database and state.
    pub state_dir: Option<PathBuf>,
    /// Pipeline files.
    pub pipelines: Option<PathBuf>,
    /// The control socket.
    pub socket: Option<PathBuf>,
    /// `sluice-node-<kind>` executables.
    pub plugins: Option<PathBuf>,
    /// A TOML file of `name = "value"` secrets (mode 0600).
    pub secrets: Option<PathBuf>,
}

/// `[http]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body, e.g. "1MiB".
    #[serde(default)]
    pub max_body: Option<String>,
    /// Connections one client address may hold open (raise it behind a local proxy).
    #[serde(default)]
    pub max_connections_per_peer: Option<usize>,
    /// The name of a secret whose value `GET /metrics` requires as a bearer
    /// token; unset: `/metrics` is open to whoever reaches the listener.
    #[serde(default)]
    pub metrics_token: Option<String>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body: None,
            max_connections_per_peer: None,
            metrics_token: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8677".into()
}

/// `[engine]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    /// Node attempts executing at once across all runs.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// `full` (default) or `normal`.
    #[serde(default)]
    pub durability: Durability,
    /// How long running nodes may finish after SIGTERM before they are stopped.
    #[serde(default = "default_grace")]
    pub shutdown_grace: Duration,
    /// Runtime worker threads; unset: the available parallelism (CPUs this
    /// process may use, cgroup quotas included).
    #[serde(default)]
    pub threads: Option<usize>,
}

impl Engine {
    /// The runtime's worker threads: `threads`, else the available parallelism.
    pub fn runtime_threads(&self) -> usize {
        self.threads.filter(|&n| n > 0).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            durability: Durability::default(),
            shutdown_grace: default_grace(),
            threads: None,
        }
    }
}

fn default_workers() -> usize {
    16
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// `[socket]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Largest request frame in bytes (default 1 MiB).
    pub max_frame: Option<usize>,
    /// A connection that has not completed `hello` by then is closed (default 5s).
    pub hello_timeout: Option<Duration>,
    /// Connections open at once, all users together (default 512; admins get 32 more).
    pub max_connections: Option<usize>,
    /// Connections open at once per uid (default 64).
    pub max_connections_per_user: Option<usize>,
    /// Subscriptions per connection (default 32).
    pub max_subscriptions: Option<usize>,
}

/// `[retention]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Finished runs older than this are deleted.
    #[serde(default = "default_max_age")]
    pub max_age: Duration,
    /// At most this many runs are kept per pipeline.
    #[serde(default = "default_max_runs")]
    pub max_runs_per_pipeline: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: default_max_age(),
            max_runs_per_pipeline: default_max_runs(),
        }
    }
}

fn default_max_age() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_max_runs() -> u32 {
    10_000
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            });
            ConfigError::Invalid {
                path: path.to_owned(),
                message: format!("{}{}", at.unwrap_or_default(), e.message()),
            }
        })
    }
}

/// Resolved paths: the file's values, else defaults for root, systemd or a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPaths {
    /// Database and state.
    pub state_dir: PathBuf,
    /// Pipeline files.
    pub pipelines: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Plugin executables.
    pub plugins: PathBuf,
    /// Secrets file.
    pub secrets: PathBuf,
    /// systemd's credentials directory, when set.
    pub credentials: Option<PathBuf>,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(|v| {
        // systemd may list several directories separated by ':'; the first is ours.
        let s = v.to_string_lossy().into_owned();
        PathBuf::from(s.split(':').next().unwrap_or_default())
    })
}

impl Paths {
    /// Fills unset paths with the defaults for this process (shared with the
    /// `sluice` client, so both find the same socket).
    pub fn resolve(&self) -> ResolvedPaths {
        use sluice_shared::paths;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let config_dir = paths::default_config_dir();
        let plugins = self.plugins.clone().unwrap_or_else(|| {
            if root {
                PathBuf::from("/usr/lib/sluice/plugins")
            } else {
                env_path("XDG_DATA_HOME")
                    .unwrap_or_else(|| {
                        env_path("HOME")
                            .unwrap_or_else(|| PathBuf::from("/tmp"))
                            .join(".local/share")
                    })
                    .join("sluice/plugins")
            }
        });
        ResolvedPaths {
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(paths::default_state_dir),
            socket: self.socket.clone().unwrap_or_else(paths::default_socket),
            pipelines: self
                .pipelines
                .clone()
                .unwrap_or_else(|| config_dir.join("pipelines")),
            secrets: self
                .secrets
                .clone()
                .unwrap_or_else(|| config_dir.join("secrets.toml")),
            credentials: env_path("CREDENTIALS_DIRECTORY"),
            plugins,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_sketch_parses() {
        let text = r#"
[paths]
state_dir = "/var/lib/sluice"
pipelines = "/etc/sluice/pipelines"

[engine]
workers = 4
durability = "normal"

[retention]
max_age = "30d"

[limits.default]
rate = "60/min"
"#;
        let c = Config::parse(text, Path::new("sluiced.toml")).unwrap();
        assert_eq!(c.engine.workers, 4);
        assert_eq!(c.engine.durability, Durability::Normal);
        assert_eq!(c.retention.max_age.std().as_secs(), 30 * 24 * 3600);
        assert_eq!(
            c.limits.default.rate.map(|r| r.to_string()),
            Some("60/min".into())
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err = Config::parse("[engine]\nworkerz = 3\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.toml: line 2") && err.contains("workerz"),
            "{err}"
        );
    }
}
