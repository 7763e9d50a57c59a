//! The systemd watchdog and status line: `WATCHDOG=1` is sent only after a
//! liveness probe of the engine and the store writer succeeds (see
//! [`Engine::probe`]), so a wedged loop or writer stops the pings and systemd
//! restarts the daemon; `STATUS=` says how many pipelines and runs there are.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::registry::Registry;
use crate::systemd::ServiceManager;

/// How often `STATUS=` is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// One line for `systemctl status`: pipelines and runs by state.
pub async fn status_line(engine: &Engine, registry: &Registry) -> String {
    let pipelines = registry.list().len();
    match engine.store().state_counts().await {
        Ok((queued, running, waiting)) => {
            format!("{pipelines} pipelines; {running} running, {queued} queued, {waiting} waiting")
        }
        Err(e) => format!("{pipelines} pipelines; run counts unavailable: {e}"),
    }
}

/// Pings the watchdog (when systemd enabled it) every half of its timeout
/// after a successful probe, and refreshes the status line, until `stop`.
pub fn spawn(
    manager: Arc<ServiceManager>,
    engine: Engine,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    if !manager.is_active() {
        return;
    }
    let every = manager.watchdog_interval();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.unwrap_or(STATUS_EVERY).min(STATUS_EVERY));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut last_status = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Some(every) = every {
                // The probe may take up to one interval: a wedged part then
                // costs exactly the pings it should.
                match engine.probe(every).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("watchdog: the engine and the store answer again");
                            failing = false;
                        }
                        if let Err(e) = manager.watchdog() {
                            tracing::warn!(error = %e, "watchdog: cannot ping systemd");
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::error!(error = %e, "watchdog: liveness probe failed; not pinging systemd");
                            failing = true;
                        }
                    }
                }
            }
            if last_status.elapsed() >= STATUS_EVERY || every.is_none() {
                last_status = tokio::time::Instant::now();
                let line = status_line(&engine, &registry).await;
                if let Err(e) = manager.status(&line) {
                    tracing::debug!(error = %e, "cannot send the status line");
                }
            }
        }
    });
}
