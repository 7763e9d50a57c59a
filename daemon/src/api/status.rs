//! The daemon at a glance: `status`, `metrics`, `config.errors` and `config.reload`.

use sluice_shared::protocol::{
    ConfigErrors, MetricsResult, NoParams, ReloadResult, RpcError, StatusResult,
};

use super::dispatch::Cx;
use super::errors::store_err;

/// `status`.
pub(crate) async fn status(cx: &Cx<'_>, _: NoParams) -> Result<StatusResult, RpcError> {
    let store = cx.engine.store();
    let (queued, running, waiting) = store.state_counts().await.map_err(store_err)?;
    Ok(StatusResult {
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: cx.started.elapsed().as_secs(),
        pipelines: cx.registry.list().len(),
        config_errors: cx.registry.errors().len(),
        queued,
        running,
        waiting,
        approvals_pending: store.pending_approvals().await.map_err(store_err)?,
        state_dir: cx.state_dir.display().to_string(),
        audit_problem: cx.audit.problem().await,
    })
}

/// `metrics`.
pub(crate) async fn metrics(cx: &Cx<'_>, _: NoParams) -> Result<MetricsResult, RpcError> {
    let store = cx.engine.store();
    let (queued, running, waiting) = store.state_counts().await.map_err(store_err)?;
    let pending = store.pending_approvals().await.map_err(store_err)?;
    let mut snapshot = cx.metrics.snapshot(queued, running, waiting, pending);
    // Percentiles from the stored durations of the window's runs, exactly.
    let since = sluice_shared::time::now_ms() - crate::metrics::DURATION_WINDOW_MS;
    let stored = store.durations_since(since).await.map_err(store_err)?;
    snapshot.durations = crate::metrics::durations(stored);
    snapshot.limit_refusals += cx.engine.limits().refusals_total();
    snapshot.queue_max = cx.engine.limits().queue_bounds(crate::limits::NO_USER).0;
    let workers = cx.engine.workers();
    snapshot.workers = workers.workers as u64;
    snapshot.workers_busy = workers.busy as u64;
    snapshot.waiting_for_worker = workers.waiting as u64;
    Ok(snapshot)
}

/// `config.errors`: rejected files' problems, then warnings.
pub(crate) async fn config_errors(cx: &Cx<'_>, _: NoParams) -> Result<ConfigErrors, RpcError> {
    Ok(ConfigErrors {
        diagnostics: cx
            .registry
            .errors()
            .into_iter()
            .chain(cx.registry.warnings())
            .collect(),
    })
}

/// `config.reload`.
pub(crate) async fn config_reload(cx: &Cx<'_>, _: NoParams) -> Result<ReloadResult, RpcError> {
    let r = cx
        .registry
        .reload(&cx.pipelines_dir, &cx.validate)
        .await
        .map_err(store_err)?;
    let paths = |v: Vec<std::path::PathBuf>| v.iter().map(|p| p.display().to_string()).collect();
    Ok(ReloadResult {
        updated: r.updated,
        removed: r.removed,
        rejected: paths(r.rejected),
        unreadable: paths(r.unreadable),
    })
}
