//! One function per method; `dispatch` checks the caller's role, runs the
//! handler and audits state-changing calls. Handlers return errors as values:
//! bad input never takes the daemon down.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_shared::graph::Graph;
use sluice_shared::model::Trigger;
use sluice_shared::protocol::{
    AttemptInfo, AuditAckParams, AuditAckResult, AuditListParams, ConfigErrors, DecideParams,
    ErrorCode, LOGS_PAGE_BYTES, LogsPage, LogsParams, MisfireEntry, NodeInfo, PipelineDetail,
    PipelineRef, PipelineSummary, ResolveParams, RetryParams, Role, RpcError, RunDetail, RunRef,
    RunSummary, RunsListParams, RunsPage, ScheduleRef, ScheduleSummary, StatusResult,
    TriggerParams, TriggerResult,
};
use sluice_shared::run::RunId;

use super::ApiContext;
use super::conn::Session;
use crate::audit::AuditError;
use crate::engine::{Decider, EngineError};
use crate::registry::Entry;
use crate::store::audit::RunFilter;
use crate::store::{RunRecord, StoreError};
use crate::triggers::{Fired, TriggerError};

/// The role a method needs; `None` for a method that does not exist.
pub fn required_role(method: &str) -> Option<Role> {
    Some(match method {
        "status" | "pipelines.list" | "pipelines.get" | "runs.list" | "runs.get" | "logs.get"
        | "approvals.list" | "metrics" | "audit.list" | "audit.verify" | "config.errors"
        | "schedules.list" | "misfires.list" | "limits.usage" | "limits.explain" => Role::Viewer,
        "pipelines.trigger" | "runs.cancel" | "runs.retry" | "runs.resolve"
        | "approvals.decide" | "schedules.pause" | "schedules.resume" => Role::Operator,
        "pipelines.enable" | "pipelines.disable" | "config.reload" | "tokens.create"
        | "tokens.list" | "tokens.revoke" | "audit.ack" => Role::Admin,
        _ => return None,
    })
}

/// Reads a method's params (absent params read as `{}`).
pub fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("invalid params: {e}")))
}

pub(crate) fn to_value<T: Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

pub(crate) fn store_err(e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound(what) => {
            RpcError::new(ErrorCode::NotFound, format!("not found: {what}"))
        }
        other => RpcError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn engine_err(e: EngineError) -> RpcError {
    match e {
        EngineError::Input(m) => {
            RpcError::new(ErrorCode::InvalidParams, format!("invalid inputs: {m}"))
        }
        EngineError::NotFound(run) => {
            RpcError::new(ErrorCode::NotFound, format!("run {run} not found"))
        }
        EngineError::Conflict(m) => RpcError::new(ErrorCode::Conflict, m),
        EngineError::Missing(what) => {
            RpcError::new(ErrorCode::NotFound, format!("{what} not found"))
        }
        EngineError::Denied(m) => RpcError::new(ErrorCode::PermissionDenied, m),
        EngineError::Store(s) => store_err(s),
        other => RpcError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// Runs a method for a caller.
pub(crate) async fn dispatch(
    ctx: &ApiContext,
    session: &Session,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let Some(needed) = required_role(method) else {
        return Err(RpcError::new(
            ErrorCode::MethodNotFound,
            format!("no method '{method}'; see docs/protocol.md"),
        ));
    };
    let role = session.role.unwrap_or(Role::Viewer);
    if role < needed {
        return Err(RpcError::new(
            ErrorCode::PermissionDenied,
            format!(
                "'{method}' needs the {} role; user '{}' is {}",
                needed.as_str(),
                session.caller.user,
                role.as_str()
            ),
        ));
    }
    let audited = needed > Role::Viewer;
    // Every state-changing call is audited: while the trail is broken none runs
    // unrecorded, except the acknowledgement that repairs it.
    if audited
        && method != "audit.ack"
        && let Some(problem) = ctx.audit.problem().await
    {
        return Err(
            RpcError::new(ErrorCode::Conflict, AuditError::Broken(problem).to_string())
                .with_data(json!({ "audit_broken": true })),
        );
    }
    if audited && let Some(key) = params.get("idempotency_key") {
        let Some(key) = key
            .as_str()
            .filter(|k| !k.is_empty() && k.len() <= super::idempotency::MAX_KEY_LEN)
        else {
            return Err(RpcError::new(
                ErrorCode::InvalidParams,
                format!(
                    "idempotency_key must be a string of 1 to {} characters",
                    super::idempotency::MAX_KEY_LEN
                ),
            ));
        };
        let key = key.to_owned();
        return ctx
            .idempotency
            .once(
                &session.caller.user,
                method,
                &key,
                &params,
                apply(ctx, session, method, params.clone(), audited),
            )
            .await;
    }
    apply(ctx, session, method, params, audited).await
}

/// Runs an allowed method and audits it when it changes state.
async fn apply(
    ctx: &ApiContext,
    session: &Session,
    method: &str,
    params: Value,
    audited: bool,
) -> Result<Value, RpcError> {
    let user = session.caller.user.as_str();
    let detail = params.clone();
    let result = match method {
        "status" => status(ctx).await,
        "pipelines.list" => Ok(to_value(pipelines(ctx).await?)?),
        "pipelines.get" => pipeline_get(ctx, parse(params)?).await,
        "pipelines.enable" | "pipelines.disable" => {
            set_enabled(ctx, parse(params)?, method == "pipelines.enable", user).await
        }
        "pipelines.trigger" => trigger(ctx, parse(params)?, user).await,
        "runs.list" => runs_list(ctx, parse(params)?).await,
        "runs.get" => {
            let r: RunRef = parse(params)?;
            to_value(run_detail(ctx, r.id).await?)
        }
        "runs.cancel" => {
            let r: RunRef = parse(params)?;
            ctx.engine
                .cancel(r.id)
                .await
                .map_err(engine_err)
                .map(|()| json!({ "run": r.id, "cancelled": true }))
        }
        "runs.retry" => {
            let r: RetryParams = parse(params)?;
            ctx.triggers
                .retry(r.id, r.mode, Some(user.to_owned()))
                .await
                .map_err(retry_err)
                .map(|new| json!({ "run": new, "retry_of": r.id }))
        }
        "runs.resolve" => {
            let r: ResolveParams = parse(params)?;
            ctx.engine
                .resolve(r.id, &r.node, r.resolution)
                .await
                .map_err(engine_err)
                .map(|()| json!({ "run": r.id, "node": r.node }))
        }
        "logs.get" => logs(ctx, parse(params)?).await,
        "approvals.list" => {
            let pending = params
                .get("pending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let list = ctx
                .engine
                .store()
                .approvals(pending, 500)
                .await
                .map_err(store_err)?;
            to_value(list)
        }
        "approvals.decide" => decide(ctx, session, parse(params)?).await,
        "metrics" => {
            let (queued, running, waiting) =
                ctx.engine.store().state_counts().await.map_err(store_err)?;
            let pending = ctx
                .engine
                .store()
                .pending_approvals()
                .await
                .map_err(store_err)?;
            let mut snapshot = ctx.metrics.snapshot(queued, running, waiting, pending);
            // Percentiles from the stored durations of the window's runs, exactly.
            let since =
                jiff::Timestamp::now().as_millisecond() - crate::metrics::DURATION_WINDOW_MS;
            let stored = ctx
                .engine
                .store()
                .durations_since(since)
                .await
                .map_err(store_err)?;
            snapshot.durations = crate::metrics::durations(stored);
            snapshot.limit_refusals += ctx.engine.limits().refusals_total();
            snapshot.queue_max = ctx.engine.limits().queue_bounds(crate::limits::NO_USER).0;
            let workers = ctx.engine.workers();
            snapshot.workers = workers.workers as u64;
            snapshot.workers_busy = workers.busy as u64;
            snapshot.waiting_for_worker = workers.waiting as u64;
            to_value(snapshot)
        }
        "audit.list" => {
            let p: AuditListParams = parse(params)?;
            let rows = ctx
                .engine
                .store()
                .audit_page(p.before, p.limit.unwrap_or(100).min(1000))
                .await
                .map_err(store_err)?;
            to_value(rows)
        }
        "audit.verify" => to_value(ctx.audit.verify().await.map_err(audit_err)?),
        "audit.ack" => audit_ack(ctx, parse(params)?, user).await,
        "config.errors" => to_value(ConfigErrors {
            diagnostics: ctx
                .registry
                .errors()
                .into_iter()
                .chain(ctx.registry.warnings())
                .collect(),
        }),
        "schedules.list" => schedules(ctx).await,
        "limits.usage" => super::limits::usage(ctx, params).await,
        "limits.explain" => super::limits::explain(ctx, params).await,
        "tokens.create" => super::limits::token_create(ctx, params, user).await,
        "tokens.list" => super::limits::token_list(ctx).await,
        "tokens.revoke" => super::limits::token_revoke(ctx, params).await,
        "schedules.pause" | "schedules.resume" => {
            pause(ctx, parse(params)?, method == "schedules.pause", user).await
        }
        "misfires.list" => {
            let pipeline = params.get("pipeline").and_then(Value::as_str);
            let limit = params
                .get("limit")
                .and_then(Value::as_i64)
                .unwrap_or(100)
                .clamp(1, 1000);
            let rows = ctx
                .engine
                .store()
                .misfires(pipeline, limit)
                .await
                .map_err(store_err)?;
            let entries: Vec<MisfireEntry> = rows
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
                .collect();
            to_value(entries)
        }
        "config.reload" => {
            let r = ctx
                .registry
                .reload(&ctx.pipelines_dir, &ctx.validate)
                .await
                .map_err(store_err)?;
            Ok(
                json!({ "updated": r.updated, "removed": r.removed, "rejected": r.rejected, "unreadable": r.unreadable }),
            )
        }
        _ => Err(RpcError::new(
            ErrorCode::MethodNotFound,
            format!("no method '{method}'"),
        )),
    };
    // `audit.ack` writes its own row.
    if audited && result.is_ok() && method != "audit.ack" {
        let target = target_of(method, &detail);
        // Parameters can carry secret values (inputs, reasons): never stored as typed.
        let detail = ctx.engine.redactor().redact_json(detail);
        if let Err(e) = ctx.audit.record(user, method, target, detail).await {
            tracing::error!(error = %e, method, "cannot write the audit trail");
        }
    }
    result
}

fn target_of(method: &str, params: &Value) -> Option<String> {
    if method.starts_with("pipelines.") {
        params
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!("pipeline {n}"))
    } else if method.starts_with("runs.") {
        params
            .get("id")
            .and_then(Value::as_i64)
            .map(|id| format!("run #{id}"))
    } else if method.starts_with("schedules.") {
        params.get("pipeline").and_then(Value::as_str).map(|n| {
            match params.get("id").and_then(Value::as_str) {
                Some(id) => format!("pipeline {n} schedule {id}"),
                None => format!("pipeline {n}"),
            }
        })
    } else if method.starts_with("approvals.") {
        params
            .get("id")
            .and_then(Value::as_i64)
            .map(|id| format!("approval #{id}"))
    } else {
        None
    }
}

fn audit_err(e: AuditError) -> RpcError {
    match e {
        AuditError::Store(s) => store_err(s),
        AuditError::NotBroken => RpcError::new(ErrorCode::Conflict, e.to_string()),
        other => RpcError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// `audit.ack`: an admin acknowledges a broken trail; the row it writes says what was found.
async fn audit_ack(ctx: &ApiContext, p: AuditAckParams, user: &str) -> Result<Value, RpcError> {
    let problem = ctx
        .audit
        .problem()
        .await
        .ok_or_else(|| audit_err(AuditError::NotBroken))?;
    let note = p
        .note
        .map(|n| ctx.engine.redactor().redact(&n).into_owned());
    let row = ctx.audit.acknowledge(user, note).await.map_err(audit_err)?;
    to_value(AuditAckResult { row, problem })
}

async fn status(ctx: &ApiContext) -> Result<Value, RpcError> {
    let store = ctx.engine.store();
    let (queued, running, waiting) = store.state_counts().await.map_err(store_err)?;
    to_value(StatusResult {
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: ctx.started.elapsed().as_secs(),
        pipelines: ctx.registry.list().len(),
        config_errors: ctx.registry.errors().len(),
        queued,
        running,
        waiting,
        approvals_pending: store.pending_approvals().await.map_err(store_err)?,
        state_dir: ctx.state_dir.display().to_string(),
        audit_problem: ctx.audit.problem().await,
    })
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
async fn scheduled_next(ctx: &ApiContext, e: &Entry) -> Option<String> {
    match &ctx.scheduler {
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

async fn summary(ctx: &ApiContext, e: &Entry) -> Result<PipelineSummary, RpcError> {
    let last = ctx
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
            scheduled_next(ctx, e).await
        } else {
            None
        },
        last_state: last.as_ref().map(|r| r.state),
        last_run: last.map(|r| r.id),
    })
}

async fn pipelines(ctx: &ApiContext) -> Result<Vec<PipelineSummary>, RpcError> {
    let mut out = Vec::new();
    for e in ctx.registry.list() {
        out.push(summary(ctx, &e).await?);
    }
    Ok(out)
}

fn unknown_pipeline(ctx: &ApiContext, name: &str) -> RpcError {
    let names: Vec<String> = ctx
        .registry
        .list()
        .into_iter()
        .map(|e| e.pipeline.name.clone())
        .collect();
    let hint = sluice_shared::suggest::did_you_mean(name, names.iter().map(String::as_str))
        .map_or(String::new(), |h| format!("; {h}"));
    RpcError::new(ErrorCode::NotFound, format!("no pipeline '{name}'{hint}"))
}

async fn pipeline_get(ctx: &ApiContext, p: PipelineRef) -> Result<Value, RpcError> {
    let e = ctx
        .registry
        .get(&p.name)
        .ok_or_else(|| unknown_pipeline(ctx, &p.name))?;
    to_value(PipelineDetail {
        summary: summary(ctx, &e).await?,
        definition: to_value(&*e.pipeline)?,
    })
}

async fn set_enabled(
    ctx: &ApiContext,
    p: PipelineRef,
    enabled: bool,
    user: &str,
) -> Result<Value, RpcError> {
    if !ctx
        .registry
        .set_enabled(&p.name, enabled, Some(user))
        .await
        .map_err(store_err)?
    {
        return Err(unknown_pipeline(ctx, &p.name));
    }
    Ok(json!({ "name": p.name, "enabled": enabled }))
}

async fn trigger(ctx: &ApiContext, p: TriggerParams, user: &str) -> Result<Value, RpcError> {
    let e = ctx
        .registry
        .get(&p.name)
        .ok_or_else(|| unknown_pipeline(ctx, &p.name))?;
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
    let fired = ctx
        .triggers
        .manual(&p.name, &p.inputs, Some(user.to_owned()))
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
        ctx.engine.wait(run).await.map_err(engine_err)?;
        Some(run_detail(ctx, run).await?)
    } else {
        None
    };
    to_value(TriggerResult { run, detail })
}

fn trigger_err(e: TriggerError) -> RpcError {
    match e {
        TriggerError::UnknownPipeline(name) => {
            RpcError::new(ErrorCode::NotFound, format!("no pipeline '{name}'"))
        }
        // A removed pipeline is gone for a trigger as for a retry (not found).
        TriggerError::Disabled {
            name,
            why,
            removed: true,
        } => RpcError::new(ErrorCode::NotFound, format!("pipeline '{name}' is {why}"))
            .with_data(json!({ "pipeline": name, "reason": "removed" })),
        TriggerError::Disabled { name, why, .. } => {
            RpcError::new(ErrorCode::Conflict, format!("pipeline '{name}' is {why}"))
        }
        TriggerError::Input(m) => {
            RpcError::new(ErrorCode::InvalidParams, format!("invalid inputs: {m}"))
        }
        TriggerError::Engine(e) => engine_err(e),
        TriggerError::Store(e) => store_err(e),
        TriggerError::Limited(r) => {
            let data = r.data();
            RpcError::new(ErrorCode::Refused, r.message).with_data(data)
        }
    }
}

/// A retry's refusal: a removed pipeline is gone (not found), a disabled one
/// refuses (as a limit would); the rest as for triggers.
fn retry_err(e: TriggerError) -> RpcError {
    match e {
        TriggerError::Disabled {
            name,
            removed: false,
            ..
        } => RpcError::new(
            ErrorCode::Refused,
            format!(
                "pipeline '{name}' is disabled; `sluice enable {name}` before retrying its runs"
            ),
        )
        .with_data(json!({ "pipeline": name, "reason": "disabled" })),
        TriggerError::Disabled { name, why, .. } => RpcError::new(
            ErrorCode::NotFound,
            format!("pipeline '{name}' is {why}; its runs cannot be retried"),
        )
        .with_data(json!({ "pipeline": name, "reason": "removed" })),
        other => trigger_err(other),
    }
}

async fn schedules(ctx: &ApiContext) -> Result<Value, RpcError> {
    let Some(s) = &ctx.scheduler else {
        return to_value(Vec::<ScheduleSummary>::new());
    };
    let list = s
        .list()
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
    to_value(
        list.into_iter()
            .map(|i| ScheduleSummary {
                pipeline: i.pipeline,
                id: i.id,
                key: i.key,
                cron: i.cron,
                timezone: i.timezone,
                paused: i.paused,
                next: i.next,
            })
            .collect::<Vec<_>>(),
    )
}

async fn pause(
    ctx: &ApiContext,
    p: ScheduleRef,
    paused: bool,
    user: &str,
) -> Result<Value, RpcError> {
    if ctx.registry.get(&p.pipeline).is_none() {
        return Err(unknown_pipeline(ctx, &p.pipeline));
    }
    let Some(s) = &ctx.scheduler else {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            "the scheduler is not running",
        ));
    };
    let all = s
        .list()
        .await
        .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))?;
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
        s.set_paused(&p.pipeline, id, paused, Some(user))
            .await
            .map_err(|e| match e {
                crate::triggers::cron::ScheduleError::NotFound { .. } => {
                    RpcError::new(ErrorCode::NotFound, e.to_string())
                }
                other => RpcError::new(ErrorCode::Internal, other.to_string()),
            })?;
    }
    Ok(json!({ "pipeline": p.pipeline, "schedules": ids, "paused": paused }))
}

async fn summary_of(ctx: &ApiContext, r: RunRecord) -> RunSummary {
    let version = ctx
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

async fn runs_list(ctx: &ApiContext, p: RunsListParams) -> Result<Value, RpcError> {
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
    let mut rows = ctx
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
        runs.push(summary_of(ctx, r).await);
    }
    to_value(RunsPage { runs, next })
}

pub(crate) async fn run_detail(ctx: &ApiContext, id: RunId) -> Result<RunDetail, RpcError> {
    let store = ctx.engine.store();
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
        run: summary_of(ctx, record).await,
        inputs,
        nodes,
    })
}

/// Rows read from the store at a time while filling a `logs.get` page, so a
/// page never holds more than this many lines in memory beyond what it returns.
const LOG_READ_CHUNK: u32 = 256;

async fn logs(ctx: &ApiContext, p: LogsParams) -> Result<Value, RpcError> {
    let store = ctx.engine.store();
    let record =
        store.run(p.run).await.map_err(store_err)?.ok_or_else(|| {
            RpcError::new(ErrorCode::NotFound, format!("run {} not found", p.run))
        })?;
    let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
    let mut after = i64::try_from(p.after.unwrap_or(0)).unwrap_or(i64::MAX);
    let mut page = LogPage::new(limit, LOGS_PAGE_BYTES);
    loop {
        // One row beyond what still fits says whether another page follows.
        let want = (limit - page.count() + 1).min(LOG_READ_CHUNK);
        let rows = store
            .logs_after(p.run, p.node.as_deref(), p.attempt, after, i64::from(want))
            .await
            .map_err(store_err)?;
        let short = rows.len() < want as usize;
        for (id, line) in rows {
            if !page.push(id, line) {
                break;
            }
            after = id;
        }
        if page.more || short {
            break;
        }
    }
    let next = page
        .next
        .unwrap_or(i64::try_from(p.after.unwrap_or(0)).unwrap_or(i64::MAX));
    to_value(LogsPage {
        lines: page.lines,
        next: u64::try_from(next).unwrap_or(0),
        finished: record.state.is_finished(),
        more: page.more,
    })
}

/// Lines of one `logs.get` reply, bounded by count and by encoded size.
struct LogPage {
    lines: Vec<sluice_shared::run::LogLine>,
    next: Option<i64>,
    bytes: usize,
    limit: u32,
    max_bytes: usize,
    /// A line was left out for lack of room.
    more: bool,
}

impl LogPage {
    fn new(limit: u32, max_bytes: usize) -> Self {
        Self {
            lines: Vec::new(),
            next: None,
            bytes: 0,
            limit,
            max_bytes,
            more: false,
        }
    }

    fn count(&self) -> u32 {
        u32::try_from(self.lines.len()).unwrap_or(u32::MAX)
    }

    /// Adds a line if it fits; the first line always does, so paging advances.
    fn push(&mut self, id: i64, line: sluice_shared::run::LogLine) -> bool {
        let size = encoded_len(&line);
        if self.count() >= self.limit
            || (!self.lines.is_empty() && self.bytes + size > self.max_bytes)
        {
            self.more = true;
            return false;
        }
        self.bytes += size + 1;
        self.lines.push(line);
        self.next = Some(id);
        true
    }
}

/// Bytes `value` takes as JSON, counted without building the text.
fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail; a type that cannot serialize counts what it wrote.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

async fn decide(ctx: &ApiContext, session: &Session, p: DecideParams) -> Result<Value, RpcError> {
    let who = Decider {
        user: session.caller.user.clone(),
        groups: session.caller.groups.clone(),
    };
    let result = ctx
        .engine
        .decide(p.id, &who, p.approve, p.reason)
        .await
        .map_err(engine_err)?;
    to_value(result)
}
