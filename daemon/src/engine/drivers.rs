//! The engine's table of run drivers: starting one per run, and what
//! happens when one exits.

use super::{
    Command, DriverExit, DriverHandle, EngineError, Inner, LoadedVersion, TimerMsg, admission,
    driver,
};
use crate::nodes::LogMsg;
use crate::store::VersionId;
use sluice_shared::event::Event;
use sluice_shared::run::RunId;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

impl Inner {
    /// Starts a driver for `run` unless one is active; returns its command channel.
    pub(crate) fn spawn_driver(
        self: &Arc<Self>,
        run: RunId,
        cancel: bool,
    ) -> Option<mpsc::UnboundedSender<Command>> {
        self.spawn_driver_with(run, cancel, None)
    }

    /// Starts the first driver of a run this process has just created.
    pub(super) fn spawn_driver_created(self: &Arc<Self>, created: driver::Created) {
        self.spawn_driver_with(created.id, false, Some(created));
    }

    pub(super) fn spawn_driver_with(
        self: &Arc<Self>,
        run: RunId,
        cancel: bool,
        created: Option<driver::Created>,
    ) -> Option<mpsc::UnboundedSender<Command>> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        let mut drivers = self.drivers.lock().ok()?;
        if let Some(h) = drivers.get(&run) {
            if cancel {
                h.cancel.cancel();
            }
            return Some(h.commands.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let token = CancellationToken::new();
        if cancel {
            token.cancel();
        }
        drivers.insert(
            run,
            DriverHandle {
                cancel: token.clone(),
                commands: tx.clone(),
            },
        );
        drop(drivers);
        let inner = Arc::clone(self);
        self.tracker.spawn(async move {
            let mut rx = rx;
            // Frees the run's concurrency slot and driver entry should the driver panic.
            let guard = admission::PanicGuard::new(&inner, run);
            let exit = driver::drive(&inner, run, token, &mut rx, created).await;
            guard.disarm();
            inner.driver_exited(run, rx, exit);
        });
        Some(tx)
    }

    pub(super) fn driver_exited(
        self: &Arc<Self>,
        run: RunId,
        mut rx: mpsc::UnboundedReceiver<Command>,
        exit: DriverExit,
    ) {
        // However the driver ended, the run no longer runs here: its concurrency slot is free.
        self.admission.release(run);
        if matches!(exit, DriverExit::Done) {
            self.opts.limits.backlog().leave(run);
        }
        let cancelled = self
            .drivers
            .lock()
            .ok()
            .and_then(|mut d| d.remove(&run))
            .is_some_and(|h| h.cancel.is_cancelled());
        rx.close();
        let mut pending = Vec::new();
        while let Ok(cmd) = rx.try_recv() {
            pending.push(cmd);
        }
        match exit {
            // A cancel that arrived while the driver was saving its wait would be lost:
            // hand it to a new driver.
            DriverExit::Waiting(_) if cancelled => {
                if let Some(tx) = self.spawn_driver(run, true) {
                    for cmd in pending {
                        let _ = tx.send(cmd);
                    }
                    return;
                }
            }
            DriverExit::Waiting(wake) => {
                if let Some(at) = wake {
                    let _ = self.timers.send(TimerMsg::Wake(at, run));
                }
                // Commands that arrived while the driver decided to stop go to a new one.
                if !pending.is_empty()
                    && let Some(tx) = self.spawn_driver(run, false)
                {
                    for cmd in pending {
                        let _ = tx.send(cmd);
                    }
                    return;
                }
            }
            DriverExit::Done | DriverExit::Stopped => {}
        }
        for cmd in pending {
            if let Command::Resolve(node, _, reply) = cmd {
                let _ = reply.send(Err(EngineError::Conflict(format!(
                    "node '{node}' of run {run} cannot be resolved now"
                ))));
            }
        }
    }

    /// Whether `run` has an active driver.
    pub(crate) fn has_driver(&self, run: RunId) -> bool {
        self.drivers.lock().is_ok_and(|d| d.contains_key(&run))
    }

    /// How many runs have an active driver.
    pub(crate) fn driver_count(&self) -> usize {
        self.drivers.lock().map_or(0, |d| d.len())
    }

    /// The stored version with its graph (cached).
    pub(crate) async fn version(&self, id: VersionId) -> Result<Arc<LoadedVersion>, EngineError> {
        if let Some(v) = self.versions.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(v);
        }
        let (pipeline, version) = self.store.version(id).await?;
        let loaded = Arc::new(LoadedVersion::new(pipeline, version)?);
        if let Ok(mut m) = self.versions.lock() {
            m.insert(id, Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    /// Waits until every log line sent so far is stored and announced.
    pub(crate) async fn logs_settled(&self) {
        let (done, settled) = oneshot::channel();
        if self.logs.send(LogMsg::Barrier(done)).await.is_ok() {
            let _ = settled.await;
        }
    }

    pub(crate) fn publish(&self, event: Event) {
        let _ = self.events.send(event);
    }
}
