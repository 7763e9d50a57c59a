//! Runs over the socket: `runs.list`, `.get`, `.cancel`, `.retry`, `.resolve`.

use sluice_shared::graph::Graph;
use sluice_shared::protocol::{
    AttemptInfo, CancelResult, ErrorCode, NodeInfo, ResolveParams, ResolveResult, RetryParams,
    RetryResult, RpcError, RunDetail, RunRef, RunSummary, RunsListParams, RunsPage,
};
use sluice_shared::run::RunId;

use super::dispatch::Cx;
use super::errors::{engine_err, retry_err, store_err};
use crate::store::RunRecord;
use crate::store::audit::RunFilter;

/// `runs.list`: newest first, one page.
pub(crate) async fn list(cx: &Cx<'_>, p: RunsListParams) -> Result<RunsPage, RpcError> {
    let limit = i64::from(p.limit.unwrap_or(50).clamp(1, 1000));
    let filter = RunFilter {
        pipeline: p.pipeline,
        states: p.states.iter().map(|s| s.as_str().to_owned()).collect(),
        trigger: p.trigger,
        user: p.user,
        since: p.since,
        until: p.until,
        before: p.before.map(|b| b.0),
        // One more than asked tells whether there is a next page.
        limit: limit + 1,
    };
    let mut rows = cx
        .engine
        .store()
        .runs_page(&filter)
        .await
        .map_err(store_err)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(50));
    let next = if more {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    let mut runs = Vec::with_capacity(rows.len());
    for r in rows {
        runs.push(summary_of(cx, r).await);
    }
    Ok(RunsPage { runs, next })
}

/// `runs.get`.
pub(crate) async fn get(cx: &Cx<'_>, p: RunRef) -> Result<RunDetail, RpcError> {
    run_detail(cx, p.id).await
}

/// `runs.cancel`.
pub(crate) async fn cancel(cx: &Cx<'_>, p: RunRef) -> Result<CancelResult, RpcError> {
    cx.engine.cancel(p.id).await.map_err(engine_err)?;
    Ok(CancelResult {
        run: p.id,
        cancelled: true,
    })
}

/// `runs.retry`: a new run, through the trigger layer (limits apply).
pub(crate) async fn retry(cx: &Cx<'_>, p: RetryParams) -> Result<RetryResult, RpcError> {
    let run = cx
        .triggers
        .retry(p.id, p.mode, Some(cx.user().to_owned()))
        .await
        .map_err(retry_err)?;
    Ok(RetryResult {
        run,
        retry_of: p.id,
    })
}

/// `runs.resolve`.
pub(crate) async fn resolve(cx: &Cx<'_>, p: ResolveParams) -> Result<ResolveResult, RpcError> {
    cx.engine
        .resolve(p.id, &p.node, p.resolution)
        .await
        .map_err(engine_err)?;
    Ok(ResolveResult {
        run: p.id,
        node: p.node,
    })
}

async fn summary_of(cx: &Cx<'_>, r: RunRecord) -> RunSummary {
    let version = cx
        .engine
        .store()
        .version(r.version_id)
        .await
        .ok()
        .map(|(_, v)| v);
    RunSummary {
        id: r.id,
        pipeline: r.pipeline,
        version,
        state: r.state,
        trigger: r.trigger,
        user: r.user,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        retry_of: r.retry_of,
        error: r.error,
    }
}

/// A run with its nodes in topological order and their attempts.
pub(crate) async fn run_detail(cx: &Cx<'_>, id: RunId) -> Result<RunDetail, RpcError> {
    let store = cx.engine.store();
    let record = store
        .run(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("run {id} not found")))?;
    let (pipeline, _) = store.version(record.version_id).await.map_err(store_err)?;
    let stored = store.nodes(id).await.map_err(store_err)?;
    let attempts = store.attempts(id).await.map_err(store_err)?;
    let graph = Graph::new(
        pipeline
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.needs.iter().map(String::as_str))),
    );
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| (0..pipeline.nodes.len()).collect());
    let nodes = order
        .into_iter()
        .filter_map(|i| {
            let n = &pipeline.nodes[i];
            let s = stored.iter().find(|s| s.node_id == n.id)?;
            Some(NodeInfo {
                id: n.id.clone(),
                kind: n.kind.name().to_owned(),
                needs: n.needs.clone(),
                state: s.state,
                attempts: attempts
                    .iter()
                    .filter(|a| a.node_id == n.id)
                    .map(|a| AttemptInfo {
                        attempt: a.attempt,
                        state: a.state,
                        started_at: a.started_at,
                        finished_at: a.finished_at,
                        error: a.error.clone(),
                    })
                    .collect(),
                output: s.output.clone(),
                error: s.error.clone(),
                started_at: s.started_at,
                finished_at: s.finished_at,
                wake_at: s.wake_at,
                reused_from: s.reused_from,
            })
        })
        .collect();
    let inputs = record.inputs.clone();
    Ok(RunDetail {
        run: summary_of(cx, record).await,
        inputs,
        nodes,
    })
}
