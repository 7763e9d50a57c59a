//! The engine's background tasks: the log pump, the timer loop and the
//! backlog drainer that starts, a bounded batch at a time, the queued runs
//! recovery found at start.

use super::{Inner, TimerMsg};
use crate::nodes::LogMsg;
use crate::store::Store;
use sluice_shared::event::Event;
use sluice_shared::run::RunId;
use sluice_shared::time::now_ms;
use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Stores log lines in batches, then announces each one: a line anyone hears
/// about is already readable with `logs.get`.
pub(super) async fn log_pump(
    store: Store,
    events: broadcast::Sender<Event>,
    mut rx: mpsc::Receiver<LogMsg>,
    busy: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut batch = Vec::with_capacity(512);
    let mut barriers = Vec::new();
    while let Some(first) = rx.recv().await {
        busy.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                LogMsg::Line(l) => batch.push(l),
                LogMsg::Barrier(done) => barriers.push(done),
            }
            if batch.len() < 512 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let lines = std::mem::take(&mut batch);
            let events_of: Vec<Event> = lines.iter().map(Event::log).collect();
            if let Err(e) = store.append_logs(lines).await {
                tracing::error!(error = %e, "cannot store log lines");
            }
            for e in events_of {
                let _ = events.send(e);
            }
        }
        for done in barriers.drain(..) {
            let _ = done.send(());
        }
        busy.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Wakes waiting runs at their deadlines. Sleeps at most a minute at a time so
/// a wall-clock jump is noticed.
pub(super) async fn timer_loop(
    inner: Weak<Inner>,
    mut rx: mpsc::UnboundedReceiver<TimerMsg>,
    shutdown: CancellationToken,
) {
    let mut due: BTreeSet<(i64, RunId)> = BTreeSet::new();
    loop {
        let now = now_ms();
        while let Some(&(at, run)) = due.first() {
            if at > now {
                break;
            }
            due.pop_first();
            let Some(inner) = inner.upgrade() else { return };
            inner.spawn_driver(run, false);
        }
        let wait_ms = due
            .first()
            .map_or(60_000, |(at, _)| (at - now).clamp(0, 60_000));
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(TimerMsg::Wake(at, run)) => { due.insert((at, run)); }
                Some(TimerMsg::Ping(reply)) => { let _ = reply.send(()); }
                None => return,
            },
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The backlog drainer: starts the queued runs recovery left without a
/// driver, keeping at most [`MAX_STARTING`] drivers at once, so a backlog of
/// thousands (after downtime) never has thousands of drivers, each with its
/// run loaded, at once. Every `every` it reads as many of the next queued
/// runs (by id) as there is room for and gives each one without a driver its
/// own; the drivers then wait for admission as any run does.
///
/// It starts only runs this engine's store holds as queued, which its own
/// triggers and socket accepted (and counted against the backlog bound)
/// before a restart; it is not a way in for runs written beside the daemon
/// (`sluiced submit`, which did that, is gone). A run created while the engine
/// runs gets its driver when it is created, so once a whole pass over the
/// queued runs finds each one driven the backlog is drained and the task
/// ends: nothing polls the store in steady state.
pub(super) async fn drain_backlog(
    inner: Weak<Inner>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last = RunId(0);
    // Drivers started since the pass from the lowest id began.
    let mut started = 0usize;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        let room = MAX_STARTING.saturating_sub(inner.driver_count());
        if room == 0 {
            continue;
        }
        let ids = match inner
            .store
            .queued_after(last, i64::try_from(room).unwrap_or(0))
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queued backlog; trying again");
                continue;
            }
        };
        if ids.is_empty() {
            if started == 0 {
                tracing::debug!("queued backlog drained: every queued run has a driver");
                return;
            }
            // Runs below the cursor may have been left behind (their drivers
            // stopped); look from the start again.
            last = RunId(0);
            started = 0;
            continue;
        }
        for id in ids {
            last = last.max(id);
            if !inner.has_driver(id) {
                inner.spawn_driver(id, false);
                started += 1;
            }
        }
    }
}

/// Drivers recovery and the backlog drainer keep going at once.
pub(super) const MAX_STARTING: usize = 256;

/// How often the backlog drainer looks for room for more drivers.
pub(super) const DRAIN_EVERY: Duration = Duration::from_millis(250);
