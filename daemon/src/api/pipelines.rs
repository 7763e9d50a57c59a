//! Pipelines over the socket: `pipelines.list`, `.get`, `.enable`,
//! `.disable` and `.trigger`.

use serde_json::json;
use sluice_shared::model::Trigger;
use sluice_shared::protocol::{
    ErrorCode, NoParams, PipelineDetail, PipelineEnabled, PipelineRef, PipelineSummary, RpcError,
    TriggerParams, TriggerResult,
};

use super::dispatch::{Cx, to_value};
use super::errors::{engine_err, store_err, trigger_err};
use super::runs::run_detail;
use crate::registry::Entry;
use crate::store::audit::RunFilter;
use crate::triggers::Fired;

/// `pipelines.list`.
pub(crate) async fn list(cx: &Cx<'_>, _: NoParams) -> Result<Vec<PipelineSummary>, RpcError> {
    let mut out = Vec::new();
    for e in cx.registry.list() {
        out.push(summary(cx, &e).await?);
    }
    Ok(out)
}

/// `pipelines.get`: the summary and the definition as stored.
pub(crate) async fn get(cx: &Cx<'_>, p: PipelineRef) -> Result<PipelineDetail, RpcError> {
    let e = cx
        .registry
        .get(&p.name)
        .ok_or_else(|| unknown_pipeline(cx, &p.name))?;
    Ok(PipelineDetail {
        summary: summary(cx, &e).await?,
        definition: to_value(&*e.pipeline)?,
    })
}

/// `pipelines.enable`.
pub(crate) async fn enable(cx: &Cx<'_>, p: PipelineRef) -> Result<PipelineEnabled, RpcError> {
    set_enabled(cx, p, true).await
}

/// `pipelines.disable`.
pub(crate) async fn disable(cx: &Cx<'_>, p: PipelineRef) -> Result<PipelineEnabled, RpcError> {
    set_enabled(cx, p, false).await
}

async fn set_enabled(
    cx: &Cx<'_>,
    p: PipelineRef,
    enabled: bool,
) -> Result<PipelineEnabled, RpcError> {
    if !cx
        .registry
        .set_enabled(&p.name, enabled, Some(cx.user()))
        .await
        .map_err(store_err)?
    {
        return Err(unknown_pipeline(cx, &p.name));
    }
    Ok(PipelineEnabled {
        name: p.name,
        enabled,
    })
}

/// `pipelines.trigger`: a run now, through the trigger layer.
pub(crate) async fn trigger(cx: &Cx<'_>, p: TriggerParams) -> Result<TriggerResult, RpcError> {
    let e = cx
        .registry
        .get(&p.name)
        .ok_or_else(|| unknown_pipeline(cx, &p.name))?;
    if !e.present {
        // Gone, as for a retry: not found (exit 3), not a conflict.
        return Err(RpcError::new(
            ErrorCode::NotFound,
            format!("pipeline '{}' was removed (its file is gone)", p.name),
        )
        .with_data(json!({ "pipeline": p.name, "reason": "removed" })));
    }
    if !e.enabled {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!(
                "pipeline '{}' is disabled; `sluice enable {}` first",
                p.name, p.name
            ),
        ));
    }
    // Through the trigger layer, so the pipeline's overlap policy applies as for cron and webhooks.
    let fired = cx
        .triggers
        .manual(&p.name, &p.inputs, Some(cx.user().to_owned()))
        .await
        .map_err(trigger_err)?;
    let run = match fired {
        Fired::Started { run, .. } => run,
        Fired::Skipped { reason } => {
            return Err(
                RpcError::new(ErrorCode::Conflict, format!("not started: {reason}"))
                    .with_data(json!({ "skipped": true })),
            );
        }
    };
    let detail = if p.wait {
        cx.engine.wait(run).await.map_err(engine_err)?;
        Some(run_detail(cx, run).await?)
    } else {
        None
    };
    Ok(TriggerResult { run, detail })
}

/// A pipeline that does not exist, with the nearest name that does.
pub(crate) fn unknown_pipeline(cx: &Cx<'_>, name: &str) -> RpcError {
    let names: Vec<String> = cx
        .registry
        .list()
        .into_iter()
        .map(|e| e.pipeline.name.clone())
        .collect();
    let hint = sluice_shared::suggest::did_you_mean(name, names.iter().map(String::as_str))
        .map_or(String::new(), |h| format!("; {h}"));
    RpcError::new(ErrorCode::NotFound, format!("no pipeline '{name}'{hint}"))
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Cron(c) => format!(
            "cron {}{}",
            c.cron,
            c.timezone
                .as_ref()
                .map_or(String::new(), |z| format!(" {z}"))
        ),
        Trigger::Webhook(w) => format!(
            "webhook {}",
            serde_json::to_value(w.webhook.auth)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
    }
}

fn next_fire(e: &Entry) -> Option<String> {
    let now = jiff::Timestamp::now();
    e.pipeline
        .triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Cron(c) if !c.paused => {
                sluice_shared::cron::Schedule::new(&c.cron, c.timezone.as_deref(), c.seconds)
                    .ok()?
                    .next_after(now)
            }
            _ => None,
        })
        .min_by_key(jiff::Zoned::timestamp)
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

/// The next fire as the scheduler sees it (operator pauses included), else from the file.
async fn scheduled_next(cx: &Cx<'_>, e: &Entry) -> Option<String> {
    match &cx.scheduler {
        Some(s) => s
            .list()
            .await
            .ok()?
            .into_iter()
            .filter(|i| i.pipeline == e.pipeline.name && !i.paused)
            .filter_map(|i| i.next)
            .min(),
        None => next_fire(e),
    }
}

async fn summary(cx: &Cx<'_>, e: &Entry) -> Result<PipelineSummary, RpcError> {
    let last = cx
        .engine
        .store()
        .runs_page(&RunFilter {
            pipeline: Some(e.pipeline.name.clone()),
            limit: 1,
            ..Default::default()
        })
        .await
        .map_err(store_err)?
        .into_iter()
        .next();
    Ok(PipelineSummary {
        name: e.pipeline.name.clone(),
        description: e.pipeline.description.clone(),
        version: e.version,
        enabled: e.enabled,
        present: e.present,
        source: e.source.display().to_string(),
        triggers: e.pipeline.triggers.iter().map(trigger_text).collect(),
        next_fire: if e.runnable() {
            scheduled_next(cx, e).await
        } else {
            None
        },
        last_state: last.as_ref().map(|r| r.state),
        last_run: last.map(|r| r.id),
    })
}
