//! The engine's background tasks: the log pump, the timer loop and the
//! poller that starts runs other processes queued.

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
            let events_of: Vec<Event> = lines
                .iter()
                .map(|l| Event::Log {
                    run: l.run,
                    node: l.node.clone(),
                    attempt: l.attempt,
                    seq: l.seq,
                    stream: l.stream.clone(),
                    line: l.line.clone(),
                })
                .collect();
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

/// Starts runs that other processes queued in the store.
pub(super) async fn poll_queued(inner: Weak<Inner>, every: Duration, shutdown: CancellationToken) {
    let mut last = RunId(0);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        // Start queued runs a bounded number at a time, so a backlog of thousands
        // (after downtime) does not load every run into memory at once.
        let room = MAX_STARTING.saturating_sub(inner.driver_count());
        if room == 0 {
            continue;
        }
        match inner
            .store
            .queued_after(last, i64::try_from(room).unwrap_or(0))
            .await
        {
            Ok(ids) => {
                if ids.is_empty() {
                    // Runs older than the cursor may have been left behind (a full
                    // pass ended); look from the start again next time.
                    last = RunId(0);
                }
                for id in ids {
                    last = last.max(id);
                    inner.spawn_driver(id, false);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for queued runs"),
        }
    }
}

/// Drivers the queue poller keeps going at once.
pub(super) const MAX_STARTING: usize = 256;
