//! Admission: a queued run of a pipeline with `concurrency.max_runs` (and an
//! overlap policy other than `allow`) starts only while fewer than `max_runs`
//! runs of that pipeline are running or waiting. Until then its driver parks
//! here, holding no worker, and looks again whenever a run of the pipeline
//! finishes. Older queued runs go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sluice_shared::Pipeline;
use sluice_shared::event::Event;
use sluice_shared::model::OverlapPolicy;
use sluice_shared::run::{RunId, RunState};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::{EngineError, Inner, now_ms};
use crate::store::{Change, RunChange, RunRecord};

/// A parked run looks again this often even without a wake-up, in case one was missed.
const RECHECK: Duration = Duration::from_secs(30);

/// One pipeline's admission state.
#[derive(Default)]
struct Gate {
    /// Held while counting slots and committing a start, so two runs cannot take one slot.
    lock: tokio::sync::Mutex<()>,
    /// Signalled when a run of the pipeline finishes.
    freed: Notify,
}

/// Per-pipeline gates; created on first use.
#[derive(Default)]
pub(crate) struct Admission {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Admission {
    fn gate(&self, pipeline: &str) -> Option<Arc<Gate>> {
        let mut gates = self.gates.lock().ok()?;
        Some(Arc::clone(gates.entry(pipeline.to_owned()).or_default()))
    }

    fn existing(&self, pipeline: &str) -> Option<Arc<Gate>> {
        self.gates.lock().ok()?.get(pipeline).cloned()
    }

    fn is_empty(&self) -> bool {
        self.gates.lock().map_or(true, |g| g.is_empty())
    }

    fn wake_all(&self) {
        if let Ok(gates) = self.gates.lock() {
            for g in gates.values() {
                g.freed.notify_waiters();
            }
        }
    }
}

/// The number of runs `pipeline` may have in flight, when admission limits it.
pub fn slot_limit(pipeline: &Pipeline) -> Option<usize> {
    match pipeline.concurrency.on_overlap {
        OverlapPolicy::Allow => None,
        _ => pipeline
            .concurrency
            .max_runs
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
    }
}

/// Waits until queued `record` may start, then commits it as running and
/// returns true. Returns false, leaving it queued, when `cancel` fires or the
/// engine stops. Pipelines without a limit return true at once, committing nothing.
pub(crate) async fn wait_for_slot(
    inner: &Arc<Inner>,
    record: &mut RunRecord,
    pipeline: &Pipeline,
    cancel: &CancellationToken,
) -> Result<bool, EngineError> {
    let Some(max) = slot_limit(pipeline) else {
        return Ok(true);
    };
    let Some(gate) = inner.admission.gate(&record.pipeline) else {
        return Ok(true);
    };
    loop {
        // Registered before looking, so a finish between the look and the wait is not missed.
        let freed = gate.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if try_start(inner, &gate, record, max, pipeline).await? {
            return Ok(true);
        }
        tokio::select! {
            () = &mut freed => {}
            () = tokio::time::sleep(RECHECK) => {}
            () = cancel.cancelled() => return Ok(false),
            () = inner.shutdown.cancelled() => return Ok(false),
        }
    }
}

async fn try_start(
    inner: &Arc<Inner>,
    gate: &Gate,
    record: &mut RunRecord,
    max: usize,
    pipeline: &sluice_shared::Pipeline,
) -> Result<bool, EngineError> {
    let _held = gate.lock.lock().await;
    let active = inner.store.active_runs(&record.pipeline).await?;
    let in_flight = active
        .iter()
        .filter(|(id, s)| *id != record.id && *s != RunState::Queued)
        .count();
    let free = max.saturating_sub(in_flight);
    let queued: Vec<RunId> = active
        .iter()
        .filter(|(_, s)| *s == RunState::Queued)
        .map(|(id, _)| *id)
        .collect();
    let ahead = queued.iter().filter(|id| **id < record.id).count();
    // Older queued runs get the free slots first; make sure each has a driver to take it.
    for id in queued.iter().take(free) {
        if *id != record.id {
            inner.spawn_driver(*id, false);
        }
    }
    if ahead >= free {
        return Ok(false);
    }
    let now = now_ms();
    let deadline = super::run_deadline(pipeline, now);
    inner
        .store
        .apply(vec![Change::Run(
            record.id,
            RunChange {
                state: Some(RunState::Running),
                started_at: Some(now),
                deadline: Some(deadline),
                ..Default::default()
            },
        )])
        .await?;
    record.state = RunState::Running;
    record.started_at = Some(now);
    record.deadline = deadline;
    inner.publish(Event::RunState {
        run: record.id,
        state: RunState::Running,
        error: None,
    });
    Ok(true)
}

/// Wakes parked runs when a run of their pipeline finishes. Runs until the
/// engine is dropped or stops.
pub(crate) async fn wake_on_finish(
    inner: Weak<Inner>,
    mut events: broadcast::Receiver<Event>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = shutdown.cancelled() => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        match event {
            Ok(Event::RunState { run, state, .. }) if state.is_finished() => {
                if inner.admission.is_empty() {
                    continue;
                }
                match inner.store.run(run).await {
                    Ok(Some(record)) => {
                        if let Some(gate) = inner.admission.existing(&record.pipeline) {
                            gate.freed.notify_waiters();
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%run, error = %e, "cannot look up a finished run; waking every queue");
                        inner.admission.wake_all();
                    }
                }
            }
            Ok(_) => {}
            // Missed events may include finishes: let every parked run look again.
            Err(broadcast::error::RecvError::Lagged(_)) => inner.admission.wake_all(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
