//! The local socket API: newline-delimited JSON-RPC 2.0 over a Unix stream
//! socket (docs/protocol.md). Callers are identified by the socket's peer
//! credentials; roles come from `[access]`; every state-changing call is
//! audited, and calls refused for the caller's role are, in aggregate
//! ([`denials`]). Slow subscribers are told they lagged and never slow the engine.
//!
//! Methods are dispatched through the method table of `sluice_shared::method`
//! ([`dispatch`]), to one handler module per area (`runs`, `pipelines`,
//! `approvals`, `audit`, `schedules`, `limits`, `tokens`, `logs`, `status`);
//! `hello`, `subscribe` and `unsubscribe` act on the connection ([`conn`]).

mod approvals;
mod audit;
mod conn;
mod denials;
mod dispatch;
mod errors;
pub mod frame;
mod idempotency;
pub mod identity;
mod limits;
mod logs;
mod pipelines;
mod runs;
mod schedules;
pub mod slots;
mod status;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_shared::event::Event;
use sluice_shared::validate::ValidateOptions;
use tokio::net::UnixListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::SocketConfig;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::triggers::Triggers;
use crate::triggers::cron::Scheduler;
pub use dispatch::{check_params, parse as parse_params, required_role};
use identity::Access;
use slots::Slots;

/// Bounds on what socket clients may hold (`[socket]` in sluiced.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketLimits {
    /// Largest frame accepted.
    pub max_frame: usize,
    /// A connection that has not completed `hello` by then is closed.
    pub hello_timeout: Duration,
    /// Connections at once, everyone together (admins have [`slots::ADMIN_RESERVE`] more).
    pub max_connections: usize,
    /// Connections at once per uid.
    pub max_connections_per_user: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_frame: sluice_shared::protocol::DEFAULT_MAX_FRAME,
            hello_timeout: Duration::from_secs(5),
            max_connections: 512,
            max_connections_per_user: 64,
            max_subscriptions: 32,
        }
    }
}

impl SocketLimits {
    /// The limits `[socket]` asks for, defaults for what it leaves out.
    pub fn from_config(c: &SocketConfig) -> Result<Self, ApiError> {
        let d = Self::default();
        let at_least_one = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(ApiError::Config(format!(
                "[socket] {key} must be at least 1"
            ))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let limits = Self {
            max_frame: at_least_one("max_frame", c.max_frame, d.max_frame)?,
            hello_timeout: c.hello_timeout.map_or(d.hello_timeout, |t| t.std()),
            max_connections: at_least_one("max_connections", c.max_connections, d.max_connections)?,
            max_connections_per_user: at_least_one(
                "max_connections_per_user",
                c.max_connections_per_user,
                d.max_connections_per_user,
            )?,
            max_subscriptions: at_least_one(
                "max_subscriptions",
                c.max_subscriptions,
                d.max_subscriptions,
            )?,
        };
        if limits.hello_timeout.is_zero() {
            return Err(ApiError::Config(
                "[socket] hello_timeout must be longer than 0s".into(),
            ));
        }
        Ok(limits)
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A live daemon already listens there.
    #[error("another sluiced is already listening on {0}")]
    InUse(PathBuf),
    /// `[socket]` asks for something impossible.
    #[error("{0}")]
    Config(String),
    /// Binding or preparing the socket failed.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket: a stale file from a crashed daemon is replaced, a live
/// socket never; the socket is made group-accessible (0660).
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ApiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ApiError::InUse(path.to_owned())),
            // Nobody answers: a leftover from a daemon that did not clean up.
            Err(_) => std::fs::remove_file(path).map_err(io)?,
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// The socket file a daemon bound, removed when this is dropped: on a normal
/// stop and on every early return of a start that fails after binding it (a
/// busy HTTP port, say), so no dead socket is left for clients to find.
pub struct SocketFile(PathBuf);

impl SocketFile {
    /// Owns the socket file at `path` (just bound by [`bind`]).
    pub fn new(path: &Path) -> Self {
        Self(path.to_owned())
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Numbered events for subscribers; `(n, None)` says `n` events were lost before numbering.
pub(crate) type Sequenced = Arc<(u64, Option<Event>)>;

/// Everything handlers need.
pub struct ApiContext {
    /// The engine.
    pub engine: Engine,
    /// Known pipelines.
    pub registry: Arc<Registry>,
    /// Trigger handling (overlap policies apply to manual triggers too).
    pub triggers: Triggers,
    /// The cron scheduler (pause, resume, list).
    pub scheduler: Option<Scheduler>,
    /// Roles.
    pub access: Access,
    /// The audit trail.
    pub audit: Arc<Audit>,
    /// Charts.
    pub metrics: Arc<Metrics>,
    /// Where pipelines are read from (for `config.reload`).
    pub pipelines_dir: PathBuf,
    /// Validation settings (plugin kinds) for reloads.
    pub validate: ValidateOptions,
    /// Shown by `status`.
    pub state_dir: PathBuf,
    /// Connection, handshake and subscription bounds.
    pub limits: SocketLimits,
    pub(crate) slots: Slots,
    pub(crate) started: Instant,
    /// Outcomes of calls that carried an idempotency key.
    pub(crate) idempotency: idempotency::Idempotency,
    /// Calls refused for the caller's role, not yet audited.
    pub(crate) denials: Arc<denials::Denials>,
    feed: broadcast::Sender<Sequenced>,
    seq: Arc<AtomicU64>,
}

impl ApiContext {
    /// Builds the context and starts numbering the engine's events (which also feeds the metrics).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Engine,
        registry: Arc<Registry>,
        triggers: Triggers,
        scheduler: Option<Scheduler>,
        access: Access,
        audit: Arc<Audit>,
        metrics: Arc<Metrics>,
        pipelines_dir: PathBuf,
        validate: ValidateOptions,
        state_dir: PathBuf,
        limits: SocketLimits,
    ) -> Arc<Self> {
        let (feed, _) = broadcast::channel(16_384);
        let seq = Arc::new(AtomicU64::new(0));
        let mut events = engine.subscribe();
        let tx = feed.clone();
        let counter = Arc::clone(&seq);
        let m = Arc::clone(&metrics);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        m.observe(&e);
                        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                        let _ = tx.send(Arc::new((n, Some(e))));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "event numbering fell behind the engine");
                        counter.fetch_add(missed, Ordering::Relaxed);
                        // Subscribers must learn about the gap, or they would wait for events that never come.
                        let _ = tx.send(Arc::new((missed, None)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Arc::new(Self {
            engine,
            registry,
            triggers,
            scheduler,
            access,
            audit,
            metrics,
            pipelines_dir,
            validate,
            state_dir,
            slots: Slots::new(limits.max_connections, limits.max_connections_per_user),
            limits,
            started: Instant::now(),
            idempotency: idempotency::Idempotency::default(),
            denials: Arc::default(),
            feed,
            seq,
        })
    }

    pub(crate) fn subscribe_feed(&self) -> (broadcast::Receiver<Sequenced>, u64) {
        let rx = self.feed.subscribe();
        (rx, self.seq.load(Ordering::Relaxed))
    }
}

/// Serves connections until `shutdown` is cancelled. A connection past its
/// uid's share or the global cap gets an error line and is closed at once.
pub async fn serve(listener: UnixListener, ctx: Arc<ApiContext>, shutdown: CancellationToken) {
    // Refused calls reach the audit trail in aggregate, every few seconds and at the stop.
    denials::spawn(
        Arc::clone(&ctx.denials),
        Arc::clone(&ctx.audit),
        shutdown.clone(),
    );
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let uid = match stream.peer_cred() {
                    Ok(c) => c.uid(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read peer credentials; closing");
                        continue;
                    }
                };
                let slot = match ctx.slots.take(uid) {
                    Ok(s) => s,
                    Err(refusal) => {
                        conn::turn_away(&stream, &refusal);
                        continue;
                    }
                };
                let ctx = Arc::clone(&ctx);
                let stop = shutdown.child_token();
                tokio::spawn(conn::serve(stream, slot, ctx, stop));
            }
            Err(e) => {
                // Out of descriptors, most likely: give closing connections a moment.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
