//! Triggers: what starts runs besides the engine's own recovery. Cron
//! schedules ([`cron`]), webhooks ([`webhook`]) and manual requests all end in
//! [`Triggers::fire`], which applies the pipeline's overlap policy, commits the
//! run (deduplicated by a delivery key when there is one) and starts it.

pub mod cron;
pub mod peers;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};
use sluice_shared::model::OverlapPolicy;
use sluice_shared::run::{RetryMode, RunId, TriggerInfo, TriggerKind};

use crate::engine::{Engine, EngineError};
use crate::limits::LimitKind;
use crate::registry::{Entry, Registry};
use crate::store::usage::Charged;
use crate::store::{NewNode, NewRun, StoreError};

/// How long a delivery key names its run (redeliveries within it get the same run).
pub const KEY_TTL_MS: i64 = 24 * 3600 * 1000;

/// Why a trigger did not start a run.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No pipeline of that name.
    #[error("unknown pipeline '{0}'")]
    UnknownPipeline(String),
    /// The pipeline is disabled or its file was removed.
    #[error("pipeline '{name}' is {why}")]
    Disabled {
        /// The pipeline.
        name: String,
        /// "disabled" or "removed (its file was deleted)".
        why: String,
        /// The file is gone (rather than the pipeline switched off).
        removed: bool,
    },
    /// Inputs do not fit the pipeline.
    #[error("{0}")]
    Input(String),
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A limit refused the trigger (rate or daily cap); it says when to retry.
    #[error(transparent)]
    Limited(#[from] crate::limits::Refusal),
}

/// What a trigger did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Fired {
    /// A run was committed and started (or already existed for this delivery key).
    Started {
        /// The run.
        run: RunId,
        /// False when the delivery key named an earlier run.
        created: bool,
    },
    /// The overlap policy `skip` dropped the trigger.
    Skipped {
        /// Why, in words.
        reason: String,
    },
}

/// Counters for metrics; read with [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    /// Cron fires that started a run.
    pub cron_fires: AtomicU64,
    /// Cron fires that did not run as scheduled (each missed fire counts once).
    pub misfires: AtomicU64,
    /// Triggers dropped by `on_overlap: skip`.
    pub overlap_skipped: AtomicU64,
    /// Webhook deliveries that created a run.
    pub webhook_accepted: AtomicU64,
    /// Webhook deliveries answered with an earlier run (same delivery key).
    pub webhook_duplicates: AtomicU64,
    /// Webhook requests refused (4xx/5xx).
    pub webhook_rejected: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// See [`Counters::cron_fires`].
    pub cron_fires: u64,
    /// See [`Counters::misfires`].
    pub misfires: u64,
    /// See [`Counters::overlap_skipped`].
    pub overlap_skipped: u64,
    /// See [`Counters::webhook_accepted`].
    pub webhook_accepted: u64,
    /// See [`Counters::webhook_duplicates`].
    pub webhook_duplicates: u64,
    /// See [`Counters::webhook_rejected`].
    pub webhook_rejected: u64,
}

impl Counters {
    /// Reads every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            cron_fires: r(&self.cron_fires),
            misfires: r(&self.misfires),
            overlap_skipped: r(&self.overlap_skipped),
            webhook_accepted: r(&self.webhook_accepted),
            webhook_duplicates: r(&self.webhook_duplicates),
            webhook_rejected: r(&self.webhook_rejected),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Shared by every trigger source; cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    registry: Arc<Registry>,
    /// Serialises overlap decisions of one pipeline (count, then commit).
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counters: Counters,
}

impl Triggers {
    /// Trigger handling over an engine and the registry it runs pipelines from.
    pub fn new(engine: Engine, registry: Arc<Registry>) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                registry,
                gates: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The pipeline named `name` if triggers may start it.
    pub fn runnable(&self, name: &str) -> Result<Entry, TriggerError> {
        let entry = self
            .inner
            .registry
            .get(name)
            .ok_or_else(|| TriggerError::UnknownPipeline(name.to_owned()))?;
        if !entry.present {
            return Err(TriggerError::Disabled {
                name: name.to_owned(),
                why: "removed (its file was deleted)".into(),
                removed: true,
            });
        }
        if !entry.enabled {
            return Err(TriggerError::Disabled {
                name: name.to_owned(),
                why: "disabled".into(),
                removed: false,
            });
        }
        Ok(entry)
    }

    /// A manual run of `name` by `user`, through the overlap policy.
    pub async fn manual(
        &self,
        name: &str,
        inputs: &Map<String, Value>,
        user: Option<String>,
    ) -> Result<Fired, TriggerError> {
        let entry = self.runnable(name)?;
        let trigger = TriggerInfo {
            kind: TriggerKind::Manual,
            details: json!({ "user": user }),
            user,
        };
        self.fire(&entry, inputs, trigger, None).await
    }

    /// Applies the overlap policy, commits the run and starts it. With a `key`
    /// (pipeline-scoped), a key seen in the last 24 h returns its run instead.
    pub async fn fire(
        &self,
        entry: &Entry,
        inputs: &Map<String, Value>,
        trigger: TriggerInfo,
        key: Option<&str>,
    ) -> Result<Fired, TriggerError> {
        let resolved = sluice_shared::inputs::resolve(&entry.pipeline.inputs, inputs)
            .map(Value::Object)
            .map_err(|p| TriggerError::Input(p.to_string()))?;
        // A redelivery of an accepted trigger gets its run back before the
        // limits: it spends no rate token and is never refused. With no limit
        // that could refuse it, the write below finds the earlier run itself,
        // so the common case costs no read.
        let user = crate::limits::user_key(trigger.user.as_deref());
        if self.inner.engine.limits().may_refuse_trigger(
            user,
            &entry.pipeline.name,
            uses_llm(entry),
        ) && let Some(fired) = self.redelivered(entry, key).await?
        {
            return Ok(fired);
        }
        // Every trigger passes the limits before a run is created (the daily run
        // cap is charged with the run itself, in `commit`). A refusal looks for
        // an earlier run once more: limits reloaded since the look above may
        // have added the rate that refuses.
        if let Err(refused) = self.check_limits(entry, &trigger).await {
            if let Some(fired) = self.redelivered(entry, key).await? {
                return Ok(fired);
            }
            return Err(refused);
        }
        // The backlog is bounded: a place is reserved before the run is written,
        // so a full queue refuses before anything is acknowledged.
        let place = match self
            .inner
            .engine
            .limits()
            .reserve_queued(user, &entry.pipeline.name)
        {
            Ok(place) => place,
            Err(refused) => {
                if let Some(fired) = self.redelivered(entry, key).await? {
                    return Ok(fired);
                }
                return Err(TriggerError::Limited(refused));
            }
        };
        let concurrency = entry.pipeline.concurrency;
        let decides = concurrency.max_runs.is_some()
            && matches!(
                concurrency.on_overlap,
                OverlapPolicy::Skip | OverlapPolicy::CancelPrevious
            );
        if !decides {
            // `queue` needs no decision here: admission holds the run queued until a slot frees.
            return self.commit(entry, resolved, trigger, key, place).await;
        }
        let gate = self.gate(&entry.pipeline.name);
        let _held = gate.lock().await;
        if let Some(fired) = self.redelivered(entry, key).await? {
            return Ok(fired);
        }
        let max = concurrency
            .max_runs
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        let active = self
            .inner
            .engine
            .store()
            .active_runs(&entry.pipeline.name)
            .await?;
        if active.len() >= max {
            match concurrency.on_overlap {
                OverlapPolicy::Skip => {
                    Counters::add(&self.inner.counters.overlap_skipped, 1);
                    return Ok(Fired::Skipped {
                        reason: format!(
                            "{} run(s) in flight (max_runs {max}, on_overlap: skip)",
                            active.len()
                        ),
                    });
                }
                _ => {
                    // Cancel the oldest so that the new run makes `max`; admission starts
                    // it once the cancelled runs have finished.
                    for (run, _) in active.iter().take(active.len() + 1 - max) {
                        if let Err(e) = self.inner.engine.cancel(*run).await {
                            tracing::warn!(%run, error = %e, "cancel_previous: cannot cancel");
                        }
                    }
                }
            }
        }
        self.commit(entry, resolved, trigger, key, place).await
    }

    /// The run an earlier delivery with the same key started, if any.
    async fn redelivered(
        &self,
        entry: &Entry,
        key: Option<&str>,
    ) -> Result<Option<Fired>, TriggerError> {
        let Some(k) = key else { return Ok(None) };
        let run = self
            .inner
            .engine
            .store()
            .run_for_key(&entry.pipeline.name, k)
            .await?;
        Ok(run.map(|run| Fired::Started {
            run,
            created: false,
        }))
    }

    async fn commit(
        &self,
        entry: &Entry,
        inputs: Value,
        trigger: TriggerInfo,
        key: Option<&str>,
        place: crate::limits::backlog::Reservation,
    ) -> Result<Fired, TriggerError> {
        let run = Arc::new(new_run(entry, inputs, trigger));
        let (run, created) = self
            .commit_run(&entry.pipeline.name, run, key, place)
            .await?;
        Ok(Fired::Started { run, created })
    }

    /// Commits `run`, charging it to its user's daily run cap in the same
    /// write, and starts it. Returns the run and whether it is new (not an
    /// earlier run of the same key).
    async fn commit_run(
        &self,
        pipeline: &str,
        run: Arc<NewRun>,
        key: Option<&str>,
        place: crate::limits::backlog::Reservation,
    ) -> Result<(RunId, bool), TriggerError> {
        let limits = self.inner.engine.limits();
        let user = crate::limits::user_key(run.trigger.user.as_deref()).to_owned();
        let now = jiff::Timestamp::now();
        let (charge, next_day) = limits.daily(&user, now);
        let store = self.inner.engine.store();
        // A run of instant nodes is executed first and written finished.
        let (run, executed) = match self.inner.engine.execute_inline(run).await {
            Ok(executed) => (Arc::clone(&executed.run), Some(executed)),
            Err(run) => (run, None),
        };
        // The daily count is checked and charged in the write that creates the run.
        let (charged, created_at) = store
            .create_run_charged_shared(Arc::clone(&run), key.map(|k| (k, KEY_TTL_MS)), &charge)
            .await?;
        let id = match charged {
            Charged::Created(id) => id,
            Charged::Existing(id) => return Ok((id, false)),
            Charged::OverCap(used) => {
                return Err(TriggerError::Limited(limits.daily_refusal(
                    LimitKind::DailyRuns,
                    &user,
                    pipeline,
                    (used, u64::try_from(charge.cap).unwrap_or(0)),
                    (now, next_day),
                )));
            }
        };
        match executed {
            // Finished already: it never waits in the backlog.
            Some(executed) => {
                drop(place);
                self.inner.engine.announce_inline(id, executed);
            }
            None => {
                place.created(id);
                // Once committed the run exists: if the engine is stopping, the next start
                // picks it up, so the caller must still hear "started" (or it would retry).
                // Its driver starts from what was written, reading nothing back.
                if let Err(e) = self.inner.engine.start_created(id, created_at, run) {
                    tracing::info!(run = %id, error = %e, "run committed; it starts when the daemon starts again");
                }
            }
        }
        Ok((id, true))
    }

    /// Retries finished run `run` for `user` like a trigger: its pipeline must
    /// still be present and enabled, and the retry passes the trigger rate and
    /// is charged to the user's daily run cap.
    pub async fn retry(
        &self,
        run: RunId,
        mode: RetryMode,
        user: Option<String>,
    ) -> Result<RunId, TriggerError> {
        let engine = &self.inner.engine;
        let record = engine
            .store()
            .run(run)
            .await?
            .ok_or(EngineError::NotFound(run))?;
        let entry = self.runnable(&record.pipeline).map_err(|e| match e {
            // A pipeline that is gone from the registry was removed, as far as its runs go.
            TriggerError::UnknownPipeline(name) => TriggerError::Disabled {
                name,
                why: "removed (its file was deleted)".into(),
                removed: true,
            },
            other => other,
        })?;
        let new_run = engine.retry_plan(run, mode, user).await?;
        self.check_limits(&entry, &new_run.trigger).await?;
        // A retry takes a place in the bounded backlog like any trigger.
        let place = engine.limits().reserve_queued(
            crate::limits::user_key(new_run.trigger.user.as_deref()),
            &record.pipeline,
        )?;
        let (new, _) = self
            .commit_run(&record.pipeline, new_run, None, place)
            .await?;
        Ok(new)
    }

    /// The trigger rates (user and pipeline) and, for pipelines with an LLM
    /// node, the user's daily LLM token budget.
    async fn check_limits(&self, entry: &Entry, trigger: &TriggerInfo) -> Result<(), TriggerError> {
        let limits = self.inner.engine.limits();
        let user = crate::limits::user_key(trigger.user.as_deref());
        limits.check_rate(user, &entry.pipeline.name)?;
        if uses_llm(entry)
            && let Some(cap) = limits.config().for_user(user).daily_llm_tokens
        {
            let now = jiff::Timestamp::now();
            let (charge, next_day) = limits.daily(user, now);
            let used = self
                .inner
                .engine
                .store()
                .usage(user, &charge.day)
                .await?
                .llm_tokens;
            if u64::try_from(used).unwrap_or(0) >= cap {
                return Err(TriggerError::Limited(limits.daily_refusal(
                    LimitKind::DailyLlmTokens,
                    user,
                    &entry.pipeline.name,
                    (used, cap),
                    (now, next_day),
                )));
            }
        }
        Ok(())
    }

    fn gate(&self, pipeline: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.inner.gates.lock() {
            Ok(mut g) => Arc::clone(g.entry(pipeline.to_owned()).or_default()),
            // A poisoned map only loses serialisation; admission still bounds runs.
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// Whether the pipeline has an LLM node (and so a daily token cap applies to its triggers).
fn uses_llm(entry: &Entry) -> bool {
    entry
        .pipeline
        .nodes
        .iter()
        .any(|n| matches!(n.kind, sluice_shared::model::NodeKind::Llm(_)))
}

/// A new queued run of the entry's active version.
fn new_run(entry: &Entry, inputs: Value, trigger: TriggerInfo) -> NewRun {
    let p = &entry.pipeline;
    // The time limit starts when the run starts running (see the engine's driver).
    let deadline = None;
    NewRun {
        done: None,
        pipeline: p.name.clone(),
        version_id: entry.version_id,
        trigger,
        inputs,
        retry_of: None,
        deadline,
        nodes: NewNode::fresh(p),
    }
}
