//! Socket methods of the limits: `limits.usage`, `limits.explain`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_shared::protocol::{
    ErrorCode, GlobalUsage, LimitsExplainParams, LimitsExplainResult, LimitsUsageParams,
    LimitsUsageResult, RpcError, UserUsage,
};
use sluice_shared::run::RunState;

use super::dispatch::Cx;
use super::errors::store_err;
use crate::limits::user_key;

fn num(n: Option<impl TryInto<u64>>) -> Option<u64> {
    n.and_then(|v| v.try_into().ok())
}

/// `limits.usage`.
pub(crate) async fn usage(
    cx: &Cx<'_>,
    p: LimitsUsageParams,
) -> Result<LimitsUsageResult, RpcError> {
    let limits = cx.engine.limits();
    let config = limits.config();
    let view = cx.engine.admission();
    let workers = cx.engine.workers();
    let now = jiff::Timestamp::now();
    let store = cx.engine.store();
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
    let running = cx
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
    Ok(LimitsUsageResult {
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
pub(crate) async fn explain(
    cx: &Cx<'_>,
    p: LimitsExplainParams,
) -> Result<LimitsExplainResult, RpcError> {
    let record = cx
        .engine
        .store()
        .run(p.run)
        .await
        .map_err(store_err)?
        .ok_or_else(|| RpcError::new(ErrorCode::NotFound, format!("run {} not found", p.run)))?;
    let user = user_key(record.trigger.user.as_deref()).to_owned();
    let config = cx.engine.limits().config();
    let view = cx.engine.admission();
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
    Ok(result)
}
