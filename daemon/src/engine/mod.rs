//! The engine: turns accepted triggers into committed runs and drives each
//! run's DAG to the end. Ready nodes go to a bounded pool of workers; a run
//! whose nodes all wait (delays, backoffs, decisions) holds no task — its next
//! deadline sits in a timer map and is rebuilt from the store at start.

pub(crate) mod admission;
mod approval;
mod background;
mod context;
pub(crate) mod dispatch;
mod drivers;
pub use dispatch::DispatchView;
mod driver;
mod recovery;

pub use approval::{Decider, Decision};

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use sluice_shared::Pipeline;
use sluice_shared::event::Event;
use sluice_shared::graph::{Graph, Upstream};
use sluice_shared::run::{Resolution, RetryMode, RunId, RunState, TriggerInfo, TriggerKind};
use sluice_shared::template::TemplateEngine;
// The engine's clock and its retry waits (`backoff::delay` in the driver) are
// the shared ones: one clock and one jitter for the whole daemon.
use sluice_shared::time::now_ms;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::nodes::LogMsg;
use crate::secrets::{Redactor, Secrets};
use crate::store::{NewNode, NewRun, RunRecord, Store, StoreError, VersionId};

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Node attempts executing at once across all runs.
    pub workers: usize,
    /// Where `sluice-node-<kind>` executables live.
    pub plugins_dir: PathBuf,
    /// Environment every child process starts with (PATH and the like).
    pub base_env: Vec<(String, String)>,
    /// How long running nodes may finish after a stop is asked for.
    pub shutdown_grace: Duration,
    /// Concurrency caps applied when queued runs start (and the rest of the limits).
    pub limits: Arc<crate::limits::Limits>,
    /// LLM providers for `llm` nodes (none by default).
    pub llm: Arc<crate::llm::LlmProviders>,
    /// Delivers `notify` nodes and approval notifications (webhooks only by default).
    pub notifier: Arc<crate::notify::Notifier>,
    /// Where finished runs and attempts are counted for `/metrics`.
    pub telemetry: crate::telemetry::Telemetry,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            workers: 16,
            plugins_dir: PathBuf::from("/usr/lib/sluice/plugins"),
            base_env: default_base_env(),
            shutdown_grace: Duration::from_secs(30),
            limits: Arc::default(),
            llm: Arc::default(),
            notifier: Arc::default(),
            telemetry: crate::telemetry::Telemetry::default(),
        }
    }
}

/// PATH, LANG and HOME from the daemon's environment; nothing else.
pub fn default_base_env() -> Vec<(String, String)> {
    let mut env = vec![(
        "PATH".to_owned(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
    )];
    for name in ["LANG", "HOME", "TZ"] {
        if let Ok(v) = std::env::var(name) {
            env.push((name.to_owned(), v));
        }
    }
    env
}

/// Why the engine refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Inputs do not fit the pipeline.
    #[error("invalid inputs: {0}")]
    Input(String),
    /// No such run.
    #[error("run {0} not found")]
    NotFound(RunId),
    /// The request does not fit the run's state.
    #[error("{0}")]
    Conflict(String),
    /// Something other than a run is not there (an approval).
    #[error("{0} not found")]
    Missing(String),
    /// The caller may not do this.
    #[error("{0}")]
    Denied(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine is shutting down.
    #[error("the engine is stopping")]
    Stopping,
    /// Setting up failed.
    #[error("cannot start the engine: {0}")]
    Setup(String),
}

/// What the timer loop is told.
pub(crate) enum TimerMsg {
    /// Wake `run` at `at` (ms since the epoch).
    Wake(i64, RunId),
    /// Answer at once: the loop is turning (the watchdog's liveness probe).
    Ping(oneshot::Sender<()>),
}

/// Why the liveness probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A loop did not answer in time.
    #[error("the {0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
    /// A loop is gone.
    #[error("the {0} has stopped")]
    Gone(&'static str),
    /// The store writer failed the no-op write.
    #[error("the store writer failed a no-op write: {0}")]
    Store(#[from] StoreError),
}

pub(crate) enum Command {
    Resolve(String, Resolution, oneshot::Sender<Result<(), EngineError>>),
    /// An approval of this node was decided: look at it now.
    Recheck(String),
}

struct DriverHandle {
    cancel: CancellationToken,
    commands: mpsc::UnboundedSender<Command>,
}

/// How a driver stopped.
pub(crate) enum DriverExit {
    /// The run finished (or cannot be driven).
    Done,
    /// Nothing to do until `wake_at` (or a command, when `None`).
    Waiting(Option<i64>),
    /// The daemon is stopping; in-flight attempts stay recorded as running.
    Stopped,
}

/// A pipeline version with its graph, shared by every run of that version.
pub(crate) struct LoadedVersion {
    pub pipeline: Pipeline,
    pub version: i64,
    pub graph: Graph,
    pub upstream: Vec<Upstream>,
    pub order: Vec<usize>,
    /// Its runs may execute before they are written (see `driver::inline`).
    pub inline: bool,
}

impl LoadedVersion {
    /// Builds `pipeline`'s graph; a stored pipeline with a cycle is refused.
    pub(crate) fn new(pipeline: Pipeline, version: i64) -> Result<Self, EngineError> {
        let graph = Graph::new(
            pipeline
                .nodes
                .iter()
                .map(|n| (n.id.as_str(), n.needs.iter().map(String::as_str))),
        );
        let order = graph.topo_order().map_err(|cycle| {
            EngineError::Conflict(format!(
                "stored pipeline has a cycle: {}",
                cycle.join(" -> ")
            ))
        })?;
        let upstream = graph.upstream_sets();
        let inline = driver::inline::eligible(&pipeline);
        Ok(Self {
            pipeline,
            version,
            graph,
            upstream,
            order,
            inline,
        })
    }
}

pub(crate) struct Inner {
    pub store: Store,
    pub events: broadcast::Sender<Event>,
    pub templates: Arc<TemplateEngine>,
    pub secrets_json: Arc<Value>,
    pub redactor: Arc<Redactor>,
    /// `opts.base_env`, shared by every node context.
    pub base_env: Arc<[(String, String)]>,
    pub http: reqwest::Client,
    pub(crate) dispatch: Arc<dispatch::Dispatch>,
    pub logs: mpsc::Sender<LogMsg>,
    pub opts: EngineOptions,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    drivers: Mutex<HashMap<RunId, DriverHandle>>,
    /// Unfinished runs found at start whose interrupted attempts are not yet
    /// repaired: whoever reaches a run first (recovery or a driver started by
    /// a command meanwhile) repairs it while the others wait, so no driver
    /// goes on from stale state.
    pub(crate) recovering: Mutex<HashMap<RunId, recovery::Pending>>,
    timers: mpsc::UnboundedSender<TimerMsg>,
    versions: Mutex<HashMap<VersionId, Arc<LoadedVersion>>>,
    /// True while the log pump holds lines not yet handed to the store.
    log_busy: Arc<std::sync::atomic::AtomicBool>,
    /// Queued runs of concurrency-limited pipelines wait here for a slot.
    pub(crate) admission: admission::Admission,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Approval nodes and every node downstream of one.
fn behind_approval(version: &LoadedVersion) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<usize> = version
        .pipeline
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.kind, sluice_shared::model::NodeKind::Approval(_)))
        .map(|(i, _)| i)
        .collect();
    while let Some(i) = stack.pop() {
        if i < version.graph.len() && out.insert(version.graph.id(i)) {
            stack.extend_from_slice(version.graph.dependents(i));
        }
    }
    out
}

/// Commits a queued run of `pipeline` without executing it. Returns once the
/// run is durable. For seeding a store no daemon serves (tests, benchmarks):
/// a daemon starts the queued runs it finds when it starts, never ones written
/// behind its back while it runs. Runs reach a running daemon through its
/// triggers and socket, where roles, limits and the audit trail apply.
pub async fn enqueue(
    store: &Store,
    pipeline: &Pipeline,
    source: Option<&Path>,
    inputs: &Map<String, Value>,
    trigger: TriggerInfo,
) -> Result<RunId, EngineError> {
    enqueue_shared(store, pipeline, source, inputs, trigger)
        .await
        .map(|c| c.id)
}

/// [`enqueue`], keeping what was committed for the run's first driver.
async fn enqueue_shared(
    store: &Store,
    pipeline: &Pipeline,
    source: Option<&Path>,
    inputs: &Map<String, Value>,
    trigger: TriggerInfo,
) -> Result<driver::Created, EngineError> {
    let inputs = sluice_shared::inputs::resolve(&pipeline.inputs, inputs)
        .map(Value::Object)
        .map_err(|p| EngineError::Input(p.to_string()))?;
    let version_id = store.save_version(pipeline, source).await?;
    // The run's time limit starts when it starts running, not while it waits in the queue.
    let deadline: Option<i64> = None;
    let run = Arc::new(NewRun {
        done: None,
        pipeline: pipeline.name.clone(),
        version_id,
        trigger,
        inputs,
        retry_of: None,
        deadline,
        nodes: NewNode::fresh(pipeline),
    });
    let (id, created_at) = store.create_run_shared(Arc::clone(&run)).await?;
    Ok(driver::Created {
        id,
        created_at,
        run,
    })
}

impl Engine {
    /// Starts the engine's background tasks (log writer, timers, admission's housekeeping).
    pub fn start(
        store: Store,
        secrets: &Secrets,
        opts: EngineOptions,
    ) -> Result<Self, EngineError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EngineError::Setup(format!("HTTP client: {e}")))?;
        let (events, _) = broadcast::channel(4096);
        let (log_tx, log_rx) = mpsc::channel(8192);
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let opts_limits = Arc::clone(&opts.limits);
        let inner = Arc::new(Inner {
            store,
            events,
            templates: Arc::new(TemplateEngine::new()),
            secrets_json: Arc::new(secrets.as_json()),
            redactor: Arc::new(secrets.redactor()),
            base_env: opts.base_env.clone().into(),
            http,
            dispatch: dispatch::Dispatch::new(opts.workers),
            logs: log_tx,
            opts,
            shutdown: shutdown.clone(),
            tracker,
            drivers: Mutex::new(HashMap::new()),
            recovering: Mutex::new(HashMap::new()),
            timers: timer_tx,
            versions: Mutex::new(HashMap::new()),
            log_busy: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            admission: admission::Admission::new(Arc::clone(&opts_limits)),
        });
        // Background tasks run outside the tracker: they must outlive the drivers' drain.
        tokio::spawn(background::log_pump(
            inner.store.clone(),
            inner.events.clone(),
            log_rx,
            Arc::clone(&inner.log_busy),
        ));
        tokio::spawn(background::timer_loop(
            Arc::downgrade(&inner),
            timer_rx,
            shutdown.clone(),
        ));
        tokio::spawn(admission::wake_on_finish(
            Arc::downgrade(&inner),
            inner.events.subscribe(),
            shutdown,
        ));
        Ok(Self { inner })
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where runs, attempts and triggers are counted for `/metrics`.
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.inner.opts.telemetry
    }

    /// The limits in force (trigger rates, concurrency and daily caps).
    pub fn limits(&self) -> &Arc<crate::limits::Limits> {
        &self.inner.opts.limits
    }

    /// Concurrency slots and queued runs as admission sees them (`limits.usage`, `limits.explain`).
    pub fn admission(&self) -> admission::AdmissionView {
        self.inner.admission.view()
    }

    /// Worker slots in use and runs waiting for one.
    pub fn workers(&self) -> DispatchView {
        self.inner.dispatch.view()
    }

    /// Masks the secret values the engine was started with.
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.inner.redactor
    }

    /// The event bus (for components that announce their own events).
    pub fn events(&self) -> broadcast::Sender<Event> {
        self.inner.events.clone()
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Picks up unfinished runs after a start: queued runs start, waiting runs
    /// keep their deadlines, interrupted attempts are retried or held for a decision.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        recovery::recover(&self.inner, false).await
    }

    /// [`Engine::recover`], returning as soon as running runs hold their slots
    /// and queued runs are counted; the per-run work goes on in the background,
    /// so a daemon with a large backlog answers at once.
    pub async fn recover_in_background(&self) -> Result<usize, EngineError> {
        recovery::recover(&self.inner, true).await
    }

    /// Accepts a run: commits it, then starts it. The id is durable on return.
    pub async fn submit(
        &self,
        pipeline: &Pipeline,
        source: Option<&Path>,
        inputs: &Map<String, Value>,
        trigger: TriggerInfo,
    ) -> Result<RunId, EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::Stopping);
        }
        let created = enqueue_shared(&self.inner.store, pipeline, source, inputs, trigger).await?;
        let run = created.id;
        let _ = self.inner.events.send(Event::RunCreated {
            run,
            pipeline: pipeline.name.clone(),
        });
        self.inner.spawn_driver_created(created);
        Ok(run)
    }

    /// Starts a run that a trigger committed itself (e.g. with a delivery key);
    /// the run must be queued in this engine's store.
    pub fn start_committed(&self, run: RunId, pipeline: &str) -> Result<(), EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::Stopping);
        }
        let _ = self.inner.events.send(Event::RunCreated {
            run,
            pipeline: pipeline.to_owned(),
        });
        self.inner.spawn_driver(run, false);
        Ok(())
    }

    /// [`Engine::start_committed`] of a run this process has just created from
    /// `new` (stored with `created_at`): its driver reads nothing back.
    pub(crate) fn start_created(
        &self,
        run: RunId,
        created_at: i64,
        new: Arc<NewRun>,
    ) -> Result<(), EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::Stopping);
        }
        let _ = self.inner.events.send(Event::RunCreated {
            run,
            pipeline: new.pipeline.clone(),
        });
        self.inner.spawn_driver_created(driver::Created {
            id: run,
            created_at,
            run: new,
        });
        Ok(())
    }

    /// Executes `run` before it is written, when it is a run of instant nodes
    /// that would start at once (see `driver::inline`); gives it back otherwise.
    pub(crate) async fn execute_inline(
        &self,
        run: Arc<NewRun>,
    ) -> Result<driver::inline::Executed, Arc<NewRun>> {
        driver::inline::execute(&self.inner, run).await
    }

    /// Announces run `id`, committed finished from `executed`.
    pub(crate) fn announce_inline(&self, id: RunId, executed: driver::inline::Executed) {
        driver::inline::announce(&self.inner, id, executed);
    }

    /// Fails unless `run` exists and has not finished.
    async fn unfinished(&self, run: RunId) -> Result<(), EngineError> {
        let record = self
            .inner
            .store
            .run(run)
            .await?
            .ok_or(EngineError::NotFound(run))?;
        if record.state.is_finished() {
            return Err(EngineError::Conflict(format!(
                "run {run} already {}",
                record.state
            )));
        }
        Ok(())
    }

    /// Cancels a run: running nodes are stopped (process groups killed), the rest marked cancelled.
    pub async fn cancel(&self, run: RunId) -> Result<(), EngineError> {
        self.unfinished(run).await?;
        self.inner.spawn_driver(run, true);
        Ok(())
    }

    /// Retries a finished run as a new run linked to it. `Failed` reuses the
    /// outputs of nodes that succeeded; `All` runs everything again. This
    /// bypasses the registry and the limits: the socket and triggers retry
    /// through [`crate::triggers::Triggers::retry`].
    pub async fn retry(
        &self,
        run: RunId,
        mode: RetryMode,
        user: Option<String>,
    ) -> Result<RunId, EngineError> {
        let new_run = self.retry_plan(run, mode, user).await?;
        let (new, created_at) = self
            .inner
            .store
            .create_run_shared(Arc::clone(&new_run))
            .await?;
        if let Err(e) = self.start_created(new, created_at, new_run) {
            tracing::info!(run = %new, error = %e, "retry committed; it starts when the daemon starts again");
        }
        Ok(new)
    }

    /// The new run a retry of `run` would create, not yet committed.
    /// Approval nodes, and everything downstream of one, are never reused:
    /// a decision was about that run, and the retried run asks again.
    pub async fn retry_plan(
        &self,
        run: RunId,
        mode: RetryMode,
        user: Option<String>,
    ) -> Result<Arc<NewRun>, EngineError> {
        let record = self
            .inner
            .store
            .run(run)
            .await?
            .ok_or(EngineError::NotFound(run))?;
        if !record.state.is_finished() {
            return Err(EngineError::Conflict(format!(
                "run {run} is still {}; cancel it first",
                record.state
            )));
        }
        if mode == RetryMode::Failed && record.state == RunState::Succeeded {
            return Err(EngineError::Conflict(format!(
                "run {run} succeeded: nothing failed to retry; run it all again with `sluice retry {} --all` (R in the console)",
                run.0
            )));
        }
        let nodes = self.inner.store.nodes(run).await?;
        let version = self.inner.version(record.version_id).await?;
        let reused: HashMap<String, Value> = match mode {
            RetryMode::All => HashMap::new(),
            RetryMode::Failed => {
                let behind_approval = behind_approval(&version);
                nodes
                    .into_iter()
                    .filter(|n| n.state == sluice_shared::run::NodeState::Succeeded)
                    .filter(|n| !behind_approval.contains(n.node_id.as_str()))
                    .map(|n| (n.node_id, n.output.unwrap_or(Value::Null)))
                    .collect()
            }
        };
        // The run's time limit starts when it starts running.
        let deadline: Option<i64> = None;
        let trigger = TriggerInfo {
            kind: TriggerKind::Retry,
            user: user.or(record.trigger.user.clone()),
            details: serde_json::json!({ "retry_of": run.0, "mode": mode, "original": record.trigger }),
        };
        Ok(Arc::new(NewRun {
            done: None,
            pipeline: record.pipeline.clone(),
            version_id: record.version_id,
            trigger,
            inputs: record.inputs.clone(),
            retry_of: Some(run),
            deadline,
            nodes: version
                .pipeline
                .nodes
                .iter()
                .map(|n| NewNode {
                    id: n.id.clone(),
                    reused: reused.get(&n.id).map(|o| (run, o.clone())),
                })
                .collect(),
        }))
    }

    /// Resolves a node held in `needs_decision` after a crash.
    pub async fn resolve(
        &self,
        run: RunId,
        node: &str,
        resolution: Resolution,
    ) -> Result<(), EngineError> {
        self.unfinished(run).await?;
        let (tx, rx) = oneshot::channel();
        let handle = self
            .inner
            .spawn_driver(run, false)
            .ok_or(EngineError::Stopping)?;
        handle
            .send(Command::Resolve(node.to_owned(), resolution, tx))
            .map_err(|_| EngineError::Stopping)?;
        rx.await.map_err(|_| EngineError::Stopping)?
    }

    /// Waits until `run` has finished and returns its record.
    pub async fn wait(&self, run: RunId) -> Result<RunRecord, EngineError> {
        let mut events = self.inner.events.subscribe();
        loop {
            let record = self
                .inner
                .store
                .run(run)
                .await?
                .ok_or(EngineError::NotFound(run))?;
            if record.state.is_finished() {
                return Ok(record);
            }
            loop {
                match events.recv().await {
                    Ok(Event::RunState { run: r, state, .. })
                        if r == run && state.is_finished() =>
                    {
                        break;
                    }
                    Ok(_) => {}
                    // Missed events: look at the store again.
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Err(EngineError::Stopping),
                }
            }
        }
    }

    /// Stops: no new work; running nodes get the grace period, then are stopped
    /// and left to be retried on the next start. Everything committed stays.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let grace = self.inner.opts.shutdown_grace + Duration::from_secs(5);
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
        // Every line the nodes wrote reaches the store before the final flush.
        let drained = async {
            while self.inner.logs.capacity() < self.inner.logs.max_capacity()
                || self
                    .inner
                    .log_busy
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
        let _ = self.inner.store.flush().await;
    }

    /// Proves the engine turns: a no-op goes round the timer loop (which wakes
    /// every waiting run), a barrier through the log pump, and a no-op write
    /// through the store's single writer, each within `within`. The systemd
    /// watchdog pings only after this succeeds, so a wedged loop or writer
    /// stops the pings and systemd restarts the daemon.
    pub async fn probe(&self, within: Duration) -> Result<(), ProbeError> {
        let timed = |what: &'static str| move |_| ProbeError::Timeout(what, within);
        let (tx, rx) = oneshot::channel();
        self.inner
            .timers
            .send(TimerMsg::Ping(tx))
            .map_err(|_| ProbeError::Gone("timer loop"))?;
        tokio::time::timeout(within, rx)
            .await
            .map_err(timed("timer loop"))?
            .map_err(|_| ProbeError::Gone("timer loop"))?;
        tokio::time::timeout(within, self.inner.logs_settled())
            .await
            .map_err(timed("log pump"))?;
        tokio::time::timeout(within, self.inner.store.flush())
            .await
            .map_err(timed("store writer"))??;
        Ok(())
    }

    /// Runs currently driven by a task (not waiting).
    pub fn active_runs(&self) -> usize {
        self.inner.drivers.lock().map_or(0, |d| d.len())
    }
}

/// The deadline of a run of `pipeline` that starts running at `now` (ms).
pub(crate) fn run_deadline(pipeline: &Pipeline, now: i64) -> Option<i64> {
    pipeline
        .timeout
        .map(|t| now.saturating_add(i64::try_from(t.std().as_millis()).unwrap_or(i64::MAX / 2)))
}

/// Whether a run state means a driver has work.
pub(crate) fn needs_driver(state: RunState) -> bool {
    matches!(state, RunState::Queued | RunState::Running)
}
