//! The daemon as a library. [`Daemon::start`] composes everything `sluiced`
//! serves from [`Settings`]: the store and the engine (unfinished runs
//! recovered), the pipeline registry and its directory watcher, cron, the
//! socket API, the HTTP listener (webhooks, `/metrics`), retention and the
//! watchdog; it tells the service manager it is ready and hands back a
//! [`Handle`] to reload or stop it. `sluiced`'s `main` parses flags, sets up
//! logging and signals and calls this; tests start a daemon in-process the
//! same way.

mod reload;
mod settings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_shared::validate::ValidateOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use reload::ReloadOutcome;
pub use settings::{Overrides, Settings};

use crate::api::identity::{Access, AccessError};
use crate::api::{ApiContext, ApiError, SocketFile, SocketLimits};
use crate::audit::{Audit, AuditError};
use crate::engine::{Engine, EngineError};
use crate::llm::LlmConfigError;
use crate::metrics::Metrics;
use crate::notify::NotifierError;
use crate::registry::Registry;
use crate::secrets::{Secrets, SecretsError};
use crate::statedir::{self, LockError, StateDirError, StateLock};
use crate::store::StoreError;
use crate::triggers::Triggers;
use crate::triggers::cron::{Scheduler, SystemClock};
use crate::triggers::webhook::{self, SizeError, WebhookOptions, WebhookState};
use crate::watcher::{WatchOptions, Watcher};

/// How long a stop waits for the HTTP listener's open requests.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Why a daemon did not start. Whatever it had started is stopped again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory cannot be made private and ours.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// Another daemon (or `run-once`) holds the state directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The database cannot be opened or migrated.
    #[error("opening the store at {location}")]
    OpenStore {
        /// The database file or URL (never a password).
        location: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// Reading from or writing to the store failed while starting.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The secrets cannot be read.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// `[llm]` is not usable.
    #[error(transparent)]
    Llm(#[from] LlmConfigError),
    /// `[smtp]` is not usable.
    #[error(transparent)]
    Notifier(#[from] NotifierError),
    /// The engine did not start or recover.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `[access]` is not valid.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The audit trail cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The control socket cannot be set up (`[socket]` limits, binding).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// `[http] max_body` is not a size.
    #[error("[http] max_body")]
    MaxBody(#[source] SizeError),
    /// The HTTP listener cannot be bound.
    #[error("binding the HTTP listener to {addr}")]
    HttpBind {
        /// The configured address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Starts daemons; see [`Daemon::start`].
#[derive(Debug)]
pub struct Daemon;

/// A running daemon: its addresses, reload and stop. Cheap to clone; every
/// clone controls the same daemon.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    engine: Engine,
    registry: Arc<Registry>,
    watcher: Option<Watcher>,
    webhook: WebhookState,
    socket: PathBuf,
    http_addr: SocketAddr,
    stop_triggers: CancellationToken,
    stop_api: CancellationToken,
    stop_retention: CancellationToken,
    /// The validation options of the last reload; held while one runs, so
    /// reloads happen one at a time.
    reloading: tokio::sync::Mutex<ValidateOptions>,
    /// What a stop releases, taken by the first stop (the others wait for it).
    stop: tokio::sync::Mutex<Option<Held>>,
}

/// What a stop gives back: the listener task, the socket file, the state lock.
struct Held {
    http_done: JoinHandle<()>,
    socket_file: SocketFile,
    lock: StateLock,
}

/// The parts built first, which the listeners share.
struct Core {
    engine: Engine,
    secrets: Secrets,
    registry: Arc<Registry>,
    triggers: Triggers,
    validate: ValidateOptions,
    recovered: usize,
}

/// The listeners and watchers started on the core, with their stop tokens.
struct Serving {
    watcher: Option<Watcher>,
    webhook: WebhookState,
    http_addr: SocketAddr,
    http_done: JoinHandle<()>,
    socket_file: SocketFile,
}

impl Daemon {
    /// Starts a daemon: opens the store (recovering unfinished runs), loads
    /// and watches the pipelines, binds the socket and the HTTP listener,
    /// then reports ready (to the service manager too). Returns once every
    /// listener accepts.
    pub async fn start(settings: Settings) -> Result<Handle, StartError> {
        let manager = Arc::clone(&settings.service_manager);
        if let Err(e) = manager.status("starting: opening the store") {
            tracing::warn!(error = %e, "cannot reach the service manager");
        }
        statedir::prepare(&settings.paths.state_dir)?;
        let lock = StateLock::acquire(&settings.paths.state_dir)?;
        let core = Core::open(&settings).await?;
        let stop_triggers = CancellationToken::new();
        let stop_api = CancellationToken::new();
        let serving = match serve(&settings, &core, &stop_triggers, &stop_api).await {
            Ok(s) => s,
            Err(e) => {
                // Nothing half-started keeps running in the caller's runtime.
                stop_triggers.cancel();
                stop_api.cancel();
                core.engine.shutdown().await;
                return Err(e);
            }
        };
        let stop_retention = CancellationToken::new();
        crate::retention::spawn(
            core.engine.store().clone(),
            settings.config.retention.clone(),
            stop_retention.clone(),
        );
        tracing::info!(state_dir = %settings.paths.state_dir.display(), recovered = core.recovered, "sluiced ready");
        // The store is open, recovery has started, the pipelines are loaded and
        // both listeners are bound (and /readyz answers 200): now systemd may
        // start what orders itself after us.
        let status = crate::watchdog::status_line(&core.engine, &core.registry).await;
        if let Err(e) = manager.ready(&status) {
            tracing::warn!(error = %e, "cannot tell the service manager we are ready");
        }
        crate::watchdog::spawn(
            manager,
            core.engine.clone(),
            Arc::clone(&core.registry),
            stop_retention.clone(),
        );
        Ok(Handle {
            inner: Arc::new(Inner {
                socket: settings.paths.socket.clone(),
                http_addr: serving.http_addr,
                engine: core.engine,
                registry: core.registry,
                watcher: serving.watcher,
                webhook: serving.webhook,
                stop_triggers,
                stop_api,
                stop_retention,
                reloading: tokio::sync::Mutex::new(core.validate),
                stop: tokio::sync::Mutex::new(Some(Held {
                    http_done: serving.http_done,
                    socket_file: serving.socket_file,
                    lock,
                })),
                settings,
            }),
        })
    }
}

impl Core {
    /// The store, the engine (recovery started) and the pipelines loaded.
    async fn open(s: &Settings) -> Result<Self, StartError> {
        let store = s.open_store().await?;
        let secrets = s.load_secrets()?;
        let mut opts = s.engine_options();
        opts.llm = s.llm_providers(&secrets)?;
        opts.notifier = s.notifier(&secrets)?;
        let engine = Engine::start(store, &secrets, opts)?;
        let recovered = engine.recover_in_background().await?;
        // The pipeline registry, shared by the triggers and the socket API.
        let registry = Arc::new(Registry::new(engine.store().clone(), engine.events()).await?);
        registry.set_secrets(&secrets);
        let validate = s.validate_options();
        let report = registry.reload(&s.paths.pipelines, &validate).await?;
        tracing::info!(pipelines = registry.list().len(), rejected = report.rejected.len(), dir = %s.paths.pipelines.display(), "pipelines loaded");
        let triggers = Triggers::new(engine.clone(), Arc::clone(&registry));
        Ok(Self {
            engine,
            secrets,
            registry,
            triggers,
            validate,
            recovered,
        })
    }
}

/// Starts the pipeline watcher, cron, the socket API and the HTTP listener.
async fn serve(
    s: &Settings,
    core: &Core,
    stop_triggers: &CancellationToken,
    stop_api: &CancellationToken,
) -> Result<Serving, StartError> {
    let watcher = match Watcher::start(
        Arc::clone(&core.registry),
        &s.paths.pipelines,
        core.validate.clone(),
        WatchOptions::default(),
        stop_triggers.clone(),
    )
    .await
    {
        Ok((w, _)) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "pipeline files are not watched; SIGHUP still rescans");
            None
        }
    };
    let scheduler = Scheduler::spawn(
        core.triggers.clone(),
        Arc::new(SystemClock),
        stop_triggers.clone(),
    );
    let socket_file = serve_socket(s, core, scheduler, stop_triggers, stop_api).await?;
    let (webhook, http_addr, http_done) = serve_http(s, core, stop_triggers).await?;
    Ok(Serving {
        watcher,
        webhook,
        http_addr,
        http_done,
        socket_file,
    })
}

/// The socket API with its audit trail, limit ledger and metrics.
async fn serve_socket(
    s: &Settings,
    core: &Core,
    scheduler: Scheduler,
    stop_triggers: &CancellationToken,
    stop_api: &CancellationToken,
) -> Result<SocketFile, StartError> {
    let engine = &core.engine;
    let access = Access::from_config(s.config.access.as_ref())?;
    // The chain's head is also kept outside the database, so a cut tail is found.
    let audit = Arc::new(
        Audit::open_with_head(
            engine.store().clone(),
            Some(s.paths.state_dir.join("audit.head")),
        )
        .await?,
    );
    tokio::spawn(crate::audit::watch_pipelines(
        Arc::clone(&audit),
        core.registry.subscribe_changes(),
        stop_triggers.clone(),
    ));
    // Limit refusals reach the store and the audit trail in aggregate, every few seconds.
    crate::limits::ledger::spawn(
        Arc::clone(engine.limits()),
        engine.store().clone(),
        Some(Arc::clone(&audit)),
        Some(engine.events()),
        stop_triggers.clone(),
    );
    let metrics = Arc::new(Metrics::default());
    metrics.seed(engine.store()).await?;
    let api = ApiContext::new(
        engine.clone(),
        Arc::clone(&core.registry),
        core.triggers.clone(),
        Some(scheduler),
        access,
        audit,
        metrics,
        s.paths.pipelines.clone(),
        core.validate.clone(),
        s.paths.state_dir.clone(),
        SocketLimits::from_config(&s.config.socket)?,
    );
    let listener = crate::api::bind(&s.paths.socket)?;
    // From here every way out removes the socket file (a failed start included).
    let socket_file = SocketFile::new(&s.paths.socket);
    tokio::spawn(crate::api::serve(listener, api, stop_api.clone()));
    Ok(socket_file)
}

/// The HTTP listener: webhooks, `/metrics`, `/healthz` and `/readyz`.
async fn serve_http(
    s: &Settings,
    core: &Core,
    stop_triggers: &CancellationToken,
) -> Result<(WebhookState, SocketAddr, JoinHandle<()>), StartError> {
    let budget = s.fd_budget;
    let mut opts = WebhookOptions {
        max_connections: budget.webhook_connections(),
        ..Default::default()
    };
    if let Some(n) = s.config.http.max_connections_per_peer {
        opts.max_per_peer = n;
    }
    tracing::info!(
        nofile = budget.soft,
        per_peer = opts.max_per_peer,
        webhook_connections = opts.max_connections,
        "file descriptor budget"
    );
    if let Some(text) = &s.config.http.max_body {
        opts.max_body = webhook::parse_size(text).map_err(StartError::MaxBody)?;
    }
    let exporter = Arc::new(crate::prometheus::Exporter::new(
        core.engine.clone(),
        core.triggers.clone(),
    ));
    if let Some(name) = &s.config.http.metrics_token
        && core.secrets.get(name).is_none()
    {
        tracing::warn!(secret = %name, "[http] metrics_token names a secret that is not set; /metrics refuses every scrape");
    }
    let state = WebhookState::new(
        core.triggers.clone(),
        core.secrets.clone(),
        opts,
        stop_triggers.clone(),
    )
    .with_metrics(exporter, s.config.http.metrics_token.clone());
    let addr = &s.config.http.listen;
    let bind_error = |source| StartError::HttpBind {
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    tracing::info!(listen = %bound, "webhook listener ready");
    let done = tokio::spawn(webhook::serve(
        listener,
        state.clone(),
        stop_triggers.clone(),
    ));
    state.set_ready(true);
    Ok((state, bound, done))
}

impl Handle {
    /// The control socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket
    }

    /// The address the HTTP listener is bound to (the port chosen for `:0`).
    pub fn http_addr(&self) -> SocketAddr {
        self.inner.http_addr
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.settings.paths.state_dir
    }

    /// The engine (to submit or wait for runs in-process).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The pipelines the daemon knows.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Stops gracefully, as on SIGTERM: intake first (no new runs, open
    /// webhook requests answered for up to ten seconds), then the socket,
    /// retention and the engine (running nodes get `[engine]
    /// shutdown_grace`, the rest stays in the store for the next start).
    /// Returns once everything is stopped and the state directory is free.
    /// A second call waits for the first and returns.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let mut stop = inner.stop.lock().await;
        let Some(held) = stop.take() else {
            return;
        };
        if let Err(e) = inner.settings.service_manager.stopping() {
            tracing::warn!(error = %e, "cannot tell the service manager we are stopping");
        }
        tracing::info!("stopping: letting running nodes finish");
        inner.stop_triggers.cancel();
        let _ = tokio::time::timeout(HTTP_DRAIN, held.http_done).await;
        inner.stop_api.cancel();
        let _ = std::fs::remove_file(&inner.socket);
        inner.stop_retention.cancel();
        inner.engine.shutdown().await;
        // The socket file guard and the state lock go last.
        drop(held.socket_file);
        drop(held.lock);
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("socket", &self.inner.socket)
            .field("http_addr", &self.inner.http_addr)
            .finish_non_exhaustive()
    }
}
