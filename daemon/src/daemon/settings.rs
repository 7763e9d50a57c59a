//! What a daemon starts with: `sluiced.toml` (or its defaults), the flags
//! that override it, and two things of the process it runs in (the service
//! manager to notify, the file descriptor budget). Also the pieces every
//! entry point builds the same way from them: the store, the secrets, the
//! engine's options, the LLM providers and the notifier.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_shared::validate::ValidateOptions;

use super::StartError;
use crate::config::{Config, ConfigError, ResolvedPaths};
use crate::engine::{EngineOptions, default_base_env};
use crate::fdlimit::Budget;
use crate::limits::Limits;
use crate::llm::{LlmConfigError, LlmProviders};
use crate::notify::{Notifier, NotifierError};
use crate::secrets::{Secrets, SecretsError};
use crate::store::{Location, Store, StoreError, StoreOptions};
use crate::systemd::ServiceManager;

/// The command line's overrides of `sluiced.toml`, kept so that a reload
/// reads the file again with the same flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `sluiced.toml`; without one every key has its default.
    pub config_file: Option<PathBuf>,
    /// Directory for the database and state.
    pub state_dir: Option<PathBuf>,
    /// Directory of pipeline files.
    pub pipelines: Option<PathBuf>,
    /// Control socket path (wins over `SLUICE_SOCKET`, which wins over the file).
    pub socket: Option<PathBuf>,
    /// HTTP listen address (`127.0.0.1:0` picks a free port).
    pub listen: Option<String>,
    /// Directory of `sluice-node-<kind>` plugins.
    pub plugins: Option<PathBuf>,
}

/// Everything [`super::Daemon::start`] needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The configuration, flags applied.
    pub config: Config,
    /// Its paths with defaults filled in for this process.
    pub paths: ResolvedPaths,
    /// Told about readiness, reloads and the stop (a no-op outside systemd).
    pub service_manager: Arc<ServiceManager>,
    /// File descriptors the process may hold (sizes the webhook connection cap).
    pub fd_budget: Budget,
    /// Where the configuration came from; None when it was given as a value
    /// (a reload then keeps it and re-reads only secrets and pipelines).
    source: Option<Overrides>,
}

/// The budget assumed when the limit cannot be read or raised.
const DEFAULT_BUDGET: Budget = Budget {
    before: 1024,
    soft: 1024,
};

impl Settings {
    /// Reads `overrides.config_file` (if any) and applies the overrides.
    pub fn load(overrides: Overrides) -> Result<Self, ConfigError> {
        let mut config = match &overrides.config_file {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(d) = &overrides.state_dir {
            config.paths.state_dir = Some(d.clone());
        }
        if let Some(d) = &overrides.pipelines {
            config.paths.pipelines = Some(d.clone());
        }
        // The flag wins, then SLUICE_SOCKET, then the file.
        if let Some(s) = &overrides.socket {
            config.paths.socket = Some(s.clone());
        } else if let Some(env) = std::env::var_os("SLUICE_SOCKET").filter(|v| !v.is_empty()) {
            config.paths.socket = Some(PathBuf::from(env));
        }
        if let Some(p) = &overrides.plugins {
            config.paths.plugins = Some(p.clone());
        }
        if let Some(l) = &overrides.listen {
            config.http.listen = l.clone();
        }
        Ok(Self::assemble(config, Some(overrides)))
    }

    /// A configuration given as a value (tests, embedding): nothing is read
    /// from a file, now or on reload.
    pub fn from_config(config: Config) -> Self {
        Self::assemble(config, None)
    }

    fn assemble(config: Config, source: Option<Overrides>) -> Self {
        Self {
            paths: config.paths.resolve(),
            config,
            service_manager: Arc::new(ServiceManager::default()),
            fd_budget: DEFAULT_BUDGET,
            source,
        }
    }

    /// The same settings notifying `manager`.
    pub fn with_service_manager(mut self, manager: Arc<ServiceManager>) -> Self {
        self.service_manager = manager;
        self
    }

    /// The same settings with the file descriptor budget `budget`.
    pub fn with_fd_budget(mut self, budget: Budget) -> Self {
        self.fd_budget = budget;
        self
    }

    /// The settings read again from where they came from (SIGHUP), with this
    /// process's service manager and budget.
    pub fn reread(&self) -> Result<Self, ConfigError> {
        let Some(source) = &self.source else {
            return Ok(self.clone());
        };
        Ok(Self::load(source.clone())?
            .with_service_manager(Arc::clone(&self.service_manager))
            .with_fd_budget(self.fd_budget))
    }

    /// How pipeline files are validated (plugin kinds from the plugins directory).
    pub fn validate_options(&self) -> ValidateOptions {
        ValidateOptions::with_plugin_dir(&self.paths.plugins)
    }

    /// The default database file: `sluice.db` in the state directory.
    pub fn database(&self) -> PathBuf {
        self.paths.state_dir.join("sluice.db")
    }

    /// How to open the store: `[store]`, with the password read from the
    /// secret it names.
    pub fn store_options(&self) -> Result<StoreOptions, StartError> {
        let c = &self.config.store;
        let location = match &c.url {
            Some(url) => Location::parse(url).map_err(|source| StartError::OpenStore {
                location: "[store] url".into(),
                source,
            })?,
            None => Location::Sqlite(self.database()),
        };
        let password = match &c.password {
            None => None,
            Some(name) => Some(
                self.load_secrets()?
                    .get(name)
                    .ok_or_else(|| StartError::OpenStore {
                        location: location.display(),
                        source: StoreError::Config(format!(
                            "[store] password names the secret '{name}', which is not defined (put it in $CREDENTIALS_DIRECTORY/{name} or the secrets file)"
                        )),
                    })?
                    .to_owned(),
            ),
        };
        Ok(StoreOptions {
            location,
            durability: self.config.engine.durability,
            password,
            pool_size: c.pool_size.unwrap_or(StoreOptions::DEFAULT_POOL_SIZE),
            statement_timeout: c
                .statement_timeout
                .map_or(StoreOptions::DEFAULT_STATEMENT_TIMEOUT, |d| d.std()),
        })
    }

    /// Opens (creating and migrating) the store.
    pub async fn open_store(&self) -> Result<Store, StartError> {
        let options = self.store_options()?;
        Store::connect(&options)
            .await
            .map_err(|source| StartError::OpenStore {
                location: options.location.display(),
                source,
            })
    }

    /// The secrets: systemd credentials first, then the secrets file.
    pub fn load_secrets(&self) -> Result<Secrets, SecretsError> {
        Secrets::load(self.paths.credentials.as_deref(), Some(&self.paths.secrets))
    }

    /// The engine's options. `llm` and `notifier` need the secrets: callers set them.
    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            workers: self.config.engine.workers,
            plugins_dir: self.paths.plugins.clone(),
            base_env: default_base_env(),
            shutdown_grace: self.config.engine.shutdown_grace.std(),
            limits: Arc::new(Limits::new(self.config.limits.clone())),
            ..EngineOptions::default()
        }
    }

    /// The `[llm]` providers, API keys read from their secrets (fixed until
    /// restart, like the secrets node templates see).
    pub fn llm_providers(&self, secrets: &Secrets) -> Result<Arc<LlmProviders>, LlmConfigError> {
        Ok(Arc::new(LlmProviders::from_config(
            &self.config.llm,
            secrets,
        )?))
    }

    /// Webhook and `[smtp]` email delivery; the SMTP password is read from
    /// its secret now, so a missing one stops the start with a clear error.
    pub fn notifier(&self, secrets: &Secrets) -> Result<Arc<Notifier>, NotifierError> {
        Ok(Arc::new(Notifier::new(self.config.smtp.as_ref(), secrets)?))
    }
}
