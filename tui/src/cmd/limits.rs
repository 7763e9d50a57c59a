//! `sluice limits` and `sluice token`: usage against the limits, why a run
//! waits, and the users' webhook tokens.

use sluice_shared::client::Client;
use sluice_shared::method as m;
use sluice_shared::protocol::{
    LimitsExplainParams, LimitsUsageParams, NoParams, TokenCreateParams, TokenRevokeParams,
};

use super::remote::{act, io, print_json, run_id, state_word, width};
use crate::cli::{LimitsCommand, TokenCommand};
use crate::exit::Failure;
use crate::output::emit;
use crate::table;

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// `sluice limits [usage|explain RUN]`.
pub(super) async fn limits(
    client: &mut Client,
    action: Option<LimitsCommand>,
    json: bool,
) -> Result<(), Failure> {
    match action.unwrap_or(LimitsCommand::Usage { user: None }) {
        LimitsCommand::Usage { user } => {
            let u = client
                .call::<m::LimitsUsage>(LimitsUsageParams { user })
                .await?;
            if json {
                return print_json(&u);
            }
            let g = &u.global;
            let mut text = format!(
                "global: {} running of max {} ({} slots held), {} queued of max {}; workers {}/{} busy, {} runs waiting for one",
                g.running,
                opt(g.max_concurrent),
                g.held,
                g.backlog.max(g.queued),
                g.max_queued,
                g.workers_busy,
                g.workers,
                g.waiting_for_worker
            );
            if g.reclaimed > 0 {
                text.push_str(&format!(", {} leaked slots reclaimed", g.reclaimed));
            }
            text.push('\n');
            let rows: Vec<Vec<String>> = u
                .users
                .iter()
                .map(|x| {
                    let refused: u64 = x.refused_24h.values().sum();
                    vec![
                        x.user.clone(),
                        match (&x.rate, x.rate_remaining) {
                            (Some(r), Some(left)) => format!("{r} ({left} left)"),
                            _ => "-".into(),
                        },
                        format!(
                            "{}/{} (+{} queued)",
                            x.running,
                            opt(x.max_concurrent),
                            x.queued
                        ),
                        format!("{}/{}", x.daily_runs, opt(x.daily_runs_max)),
                        format!("{}/{}", x.daily_llm_tokens, opt(x.daily_llm_tokens_max)),
                        refused.to_string(),
                    ]
                })
                .collect();
            text.push_str(&table::render(
                &[
                    "USER",
                    "RATE",
                    "RUNNING",
                    "RUNS TODAY",
                    "LLM TOKENS TODAY",
                    "REFUSED 24H",
                ],
                &rows,
                width(),
            ));
            emit(&text).map_err(io)
        }
        LimitsCommand::Explain { run } => {
            let run = run_id(&run)?;
            let e = client
                .call::<m::LimitsExplain>(LimitsExplainParams { run })
                .await?;
            if json {
                return print_json(&e);
            }
            let mut text = format!(
                "{} {} ({}, user {}): {}\n",
                e.run,
                state_word(e.state),
                e.pipeline,
                e.user,
                e.reason
            );
            if let Some(cap) = &e.cap {
                text.push_str(&format!(
                    "waiting on: {cap} cap; {} run(s) ahead ({} of the same user)\n",
                    e.ahead, e.ahead_same_user
                ));
            }
            emit(&text).map_err(io)
        }
    }
}

/// `sluice token create|list|revoke`.
pub(super) async fn token(
    client: &mut Client,
    action: TokenCommand,
    json: bool,
) -> Result<(), Failure> {
    match action {
        TokenCommand::Create { user, pipeline } => {
            let t = client
                .call::<m::TokensCreate>(TokenCreateParams { user, pipeline })
                .await?;
            if json {
                return print_json(&t);
            }
            emit(&format!(
                "{}\ntoken #{} for user {}{}; it is shown only this once (send it as Authorization: Bearer)\n",
                t.token,
                t.id,
                t.user,
                t.pipeline
                    .as_ref()
                    .map(|p| format!(", pipeline {p} only"))
                    .unwrap_or_default()
            ))
            .map_err(io)
        }
        TokenCommand::List => {
            let list = client.call::<m::TokensList>(NoParams).await?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.user.clone(),
                        t.pipeline.clone().unwrap_or_else(|| "*".into()),
                        format!("{}…", t.prefix),
                        table::time(Some(t.created_at)),
                        t.created_by.clone(),
                        t.revoked_at.map_or_else(
                            || "active".into(),
                            |r| format!("revoked {}", table::time(Some(r))),
                        ),
                    ]
                })
                .collect();
            emit(&table::render(
                &["ID", "USER", "PIPELINE", "TOKEN", "CREATED", "BY", "STATE"],
                &rows,
                width(),
            ))
            .map_err(io)
        }
        TokenCommand::Revoke { id } => {
            act::<m::TokensRevoke>(client, TokenRevokeParams { id }, json, |_| {
                format!("token #{id} revoked")
            })
            .await
        }
    }
}
