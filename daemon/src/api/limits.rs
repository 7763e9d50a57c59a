//! Socket methods of the limits: `limits.usage`, `limits.explain` and the
//! users' webhook tokens (`tokens.create`, `tokens.list`, `tokens.revoke`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sluice_shared::protocol::{
    ErrorCode, GlobalUsage, LimitsExplainParams, LimitsExplainResult, LimitsUsageParams,
    LimitsUsageResult, RpcError, TokenCreateParams, TokenCreateResult, TokenInfo,
    TokenRevokeParams, UserUsage,
};
use sluice_shared::run::RunState;

use super::ApiContext;
use super::handlers::{parse, store_err, to_value};
use crate::limits::tokens::{self, TOKEN_PREFIX, token_hash};
use crate::limits::user_key;

fn new_token() -> Result<String, RpcError> {
    tokens::new_token()
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("no randomness: {e}")))
}

fn num(n: Option<impl TryInto<u64>>) -> Option<u64> {
    n.and_then(|v| v.try_into().ok())
}

/// `limits.usage`.
pub(crate) async fn usage(ctx: &ApiContext, params: Value) -> Result<Value, RpcError> {
    let p: LimitsUsageParams = parse(params)?;
    let limits = ctx.engine.limits();
    let config = limits.config();
    let view = ctx.engine.admission();
    let workers = ctx.engine.workers();
    let now = jiff::Timestamp::now();
    let store = ctx.engine.store();
    // Days differ by zone; two days back covers every zone's "today".
    let since = (now - jiff::SignedDuration::from_hours(48))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string();
    let rows = store.usage_since(&since).await.map_err(store_err)?;
    let minute = now.as_millisecond().div_euclid(60_000);
    let refusals = store
        .refusals_since(minute - 24 * 60)
        .await
        .map_err(store_err)?;
    let running = ctx
        .engine
        .store()
        .unfinished_briefs()
        .await
        .map_err(store_err)?
        .iter()
        .filter(|r| r.state == RunState::Running)
        .count() as u64;

    let mut users: BTreeSet<String> = config.users.keys().cloned().collect();
    users.extend(view.held.iter().map(|h| h.1.clone()));
    users.extend(view.queued.iter().map(|q| q.1.clone()));
    users.extend(refusals.iter().map(|r| r.0.clone()));
    for r in &rows {
        users.insert(r.user.clone());
    }
    if let Some(only) = &p.user {
        users.retain(|u| u == only);
        users.insert(only.clone());
    }
    let mut out = Vec::new();
    for user in users {
        let l = config.for_user(&user);
        let (charge, next) = limits.daily(&user, now);
        let today = rows.iter().find(|r| r.user == user && r.day == charge.day);
        let rate = limits.rate_remaining(&user);
        out.push(UserUsage {
            rate: rate.map(|(q, _)| q.rate.to_string()),
            burst: rate.map(|(q, _)| u64::from(q.burst)),
            rate_remaining: rate.map(|(_, r)| u64::from(r)),
            running: view.held.iter().filter(|h| h.1 == user).count() as u64,
            queued: view.queued.iter().filter(|q| q.1 == user).count() as u64,
            max_concurrent: num(l.max_concurrent),
            backlog: limits.backlog().depth(Some(&user)).1,
            max_queued: limits.queue_bounds(&user).1,
            day: charge.day.clone(),
            day_resets_at: next.to_string(),
            daily_runs: today.map_or(0, |t| u64::try_from(t.runs).unwrap_or(0)),
            daily_runs_max: l.daily_runs,
            daily_llm_tokens: today.map_or(0, |t| u64::try_from(t.llm_tokens).unwrap_or(0)),
            daily_llm_tokens_max: l.daily_llm_tokens,
            refused_24h: refusals
                .iter()
                .filter(|r| r.0 == user)
                .map(|r| (r.1.clone(), u64::try_from(r.2).unwrap_or(0)))
                .collect(),
            user,
        });
    }
    let refusal_totals: BTreeMap<String, u64> = limits
        .refusal_totals()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    to_value(LimitsUsageResult {
        global: GlobalUsage {
            held: view.held.len() as u64,
            running,
            queued: view.queued.len() as u64,
            max_concurrent: Some(u64::from(config.global.max_concurrent())),
            reclaimed: view.reclaimed,
            refusals: refusal_totals,
            backlog: limits.backlog().depth(None).0,
            max_queued: limits.queue_bounds(crate::limits::NO_USER).0,
            workers: workers.workers as u64,
            workers_busy: workers.busy as u64,
            waiting_for_worker: workers.waiting as u64,
        },
        users: out,
    })
}

/// `limits.explain`: why a run has not started.
pub(crate) async fn explain(ctx: &ApiContext, params: Value) -> Result<Value, RpcError> {
    let p: LimitsExplainParams = parse(params)?;
    let record = ctx
        .engine
        .store()
        .run(p.run)
        .await
        .map_err(store_err)?
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("run {} not found", p.run)))?;
    let user = user_key(record.trigger.user.as_deref()).to_owned();
    let config = ctx.engine.limits().config();
    let view = ctx.engine.admission();
    let mut result = LimitsExplainResult {
        run: p.run,
        state: record.state,
        user,
        pipeline: record.pipeline.clone(),
        cap: None,
        reason: String::new(),
        ahead: 0,
        ahead_same_user: 0,
    };
    match record.state {
        RunState::Queued => match view.explain(p.run, &config) {
            Some(e) => {
                result.cap = Some(e.cap.to_owned());
                result.reason = e.reason;
                result.ahead = e.ahead;
                result.ahead_same_user = e.ahead_same_user;
            }
            None => {
                result.reason = "queued, not yet waiting for a slot: the daemon picks it up shortly (queued runs are started a bounded number at a time)".into();
            }
        },
        RunState::Running => result.reason = "running: it holds a concurrency slot".into(),
        RunState::Waiting => {
            result.reason =
                "waiting (delay, backoff or approval): it holds no slot and resumes without queueing"
                    .into();
        }
        s => result.reason = format!("{s}: it has finished"),
    }
    to_value(result)
}

/// `tokens.create`: a new token for a user, printed once; only its hash is kept.
pub(crate) async fn token_create(
    ctx: &ApiContext,
    params: Value,
    by: &str,
) -> Result<Value, RpcError> {
    let p: TokenCreateParams = parse(params)?;
    if p.user.trim().is_empty() {
        return Err(RpcError::new(ErrorCode::InvalidParams, "the user is empty"));
    }
    // The token's user is compared with socket users (self-approval): it must be a plain name.
    if p.user.trim() != p.user || p.user.chars().any(char::is_control) {
        return Err(RpcError::new(
            ErrorCode::InvalidParams,
            "the user name has surrounding spaces or control characters",
        ));
    }
    if let Some(name) = &p.pipeline
        && ctx.registry.get(name).is_none()
    {
        return Err(RpcError::new(
            ErrorCode::NotFound,
            format!("no pipeline '{name}'"),
        ));
    }
    let token = new_token()?;
    let prefix: String = token.chars().take(TOKEN_PREFIX.len() + 6).collect();
    let id = ctx
        .engine
        .store()
        .create_token(
            &p.user,
            p.pipeline.as_deref(),
            &token_hash(&token),
            &prefix,
            by,
        )
        .await
        .map_err(store_err)?;
    to_value(TokenCreateResult {
        id,
        token,
        user: p.user,
        pipeline: p.pipeline,
    })
}

/// `tokens.list`.
pub(crate) async fn token_list(ctx: &ApiContext) -> Result<Value, RpcError> {
    let rows = ctx.engine.store().tokens().await.map_err(store_err)?;
    to_value(
        rows.into_iter()
            .map(|t| TokenInfo {
                id: t.id,
                user: t.user,
                pipeline: t.pipeline,
                prefix: t.prefix,
                created_at: t.created_at,
                created_by: t.created_by,
                revoked_at: t.revoked_at,
            })
            .collect::<Vec<_>>(),
    )
}

/// `tokens.revoke`.
pub(crate) async fn token_revoke(ctx: &ApiContext, params: Value) -> Result<Value, RpcError> {
    let p: TokenRevokeParams = parse(params)?;
    if !ctx
        .engine
        .store()
        .revoke_token(p.id)
        .await
        .map_err(store_err)?
    {
        return Err(RpcError::new(
            ErrorCode::NotFound,
            format!("no active token {}", p.id),
        ));
    }
    Ok(serde_json::json!({ "id": p.id, "revoked": true }))
}
