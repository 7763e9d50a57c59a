//! Cron schedules over the socket: `schedules.list`, `.pause`, `.resume`
//! and the misfire ledger (`misfires.list`).

use sluice_shared::protocol::{
    ErrorCode, MisfireEntry, MisfiresListParams, NoParams, RpcError, ScheduleRef, ScheduleSummary,
    SchedulesPaused,
};

use super::dispatch::Cx;
use super::errors::{internal, store_err};
use super::pipelines::unknown_pipeline;
use crate::triggers::cron::ScheduleError;

/// `schedules.list`: empty when the scheduler is not running.
pub(crate) async fn list(cx: &Cx<'_>, _: NoParams) -> Result<Vec<ScheduleSummary>, RpcError> {
    let Some(s) = &cx.scheduler else {
        return Ok(Vec::new());
    };
    let list = s.list().await.map_err(internal)?;
    Ok(list
        .into_iter()
        .map(|i| ScheduleSummary {
            pipeline: i.pipeline,
            id: i.id,
            key: i.key,
            cron: i.cron,
            timezone: i.timezone,
            paused: i.paused,
            next: i.next,
        })
        .collect())
}

/// `schedules.pause`.
pub(crate) async fn pause(cx: &Cx<'_>, p: ScheduleRef) -> Result<SchedulesPaused, RpcError> {
    set_paused(cx, p, true).await
}

/// `schedules.resume`.
pub(crate) async fn resume(cx: &Cx<'_>, p: ScheduleRef) -> Result<SchedulesPaused, RpcError> {
    set_paused(cx, p, false).await
}

/// Pauses or resumes one schedule of a pipeline, or all of them.
async fn set_paused(
    cx: &Cx<'_>,
    p: ScheduleRef,
    paused: bool,
) -> Result<SchedulesPaused, RpcError> {
    if cx.registry.get(&p.pipeline).is_none() {
        return Err(unknown_pipeline(cx, &p.pipeline));
    }
    let Some(s) = &cx.scheduler else {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            "the scheduler is not running",
        ));
    };
    let all = s.list().await.map_err(internal)?;
    let ids: Vec<String> = match &p.id {
        Some(id) => vec![id.clone()],
        None => all
            .iter()
            .filter(|i| i.pipeline == p.pipeline)
            .map(|i| i.id.clone())
            .collect(),
    };
    if ids.is_empty() {
        return Err(RpcError::new(
            ErrorCode::NotFound,
            format!("pipeline '{}' has no cron schedule", p.pipeline),
        ));
    }
    for id in &ids {
        s.set_paused(&p.pipeline, id, paused, Some(cx.user()))
            .await
            .map_err(|e| match e {
                ScheduleError::NotFound { .. } => RpcError::new(ErrorCode::NotFound, e.to_string()),
                other => internal(other),
            })?;
    }
    Ok(SchedulesPaused {
        pipeline: p.pipeline,
        schedules: ids,
        paused,
    })
}

/// `misfires.list`: the ledger newest first.
pub(crate) async fn misfires(
    cx: &Cx<'_>,
    p: MisfiresListParams,
) -> Result<Vec<MisfireEntry>, RpcError> {
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let rows = cx
        .engine
        .store()
        .misfires(p.pipeline.as_deref(), limit)
        .await
        .map_err(store_err)?;
    Ok(rows
        .into_iter()
        .map(|r| MisfireEntry {
            id: r.id,
            recorded_at: r.recorded_at,
            pipeline: r.misfire.pipeline,
            schedule: r.misfire.schedule,
            due_first: r.misfire.due_first,
            due_last: r.misfire.due_last,
            missed: r.misfire.missed,
            reason: r.misfire.reason,
            action: r.misfire.action,
            run: r.misfire.run,
        })
        .collect())
}
