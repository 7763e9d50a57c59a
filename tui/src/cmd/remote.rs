//! Subcommands that talk to the daemon over its socket.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use sluice_shared::event::Event;
use sluice_shared::protocol::{
    ApprovalInfo, AuditAckResult, AuditEntry, AuditVerifyResult, ConfigErrors, EventNotice,
    LogsPage, MisfireEntry, PipelineDetail, PipelineSummary, RunDetail, RunsPage, ScheduleSummary,
    StatusResult, SubscribeResult, TriggerResult,
};
use sluice_shared::protocol::{
    LimitsExplainParams, LimitsExplainResult, LimitsUsageParams, LimitsUsageResult,
    TokenCreateParams, TokenCreateResult, TokenInfo, TokenRevokeParams,
};
use sluice_shared::run::{RunId, RunState};
use sluice_tui::console::inputs as console_inputs;

use crate::cli::{Command, LimitsCommand, ResolveAction, RunsArgs, TokenCommand};
use crate::client::Client;
use crate::exit::{Exit, Failure};
use crate::output::emit;
use crate::table;

fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message)
}

fn io(e: std::io::Error) -> Failure {
    Failure::new(Exit::Failure, e.to_string())
}

fn run_id(text: &str) -> Result<RunId, Failure> {
    text.parse()
        .map_err(|_| usage(format!("'{text}' is not a run id (write 12 or #12)")))
}

/// `name=value` pairs as inputs, each value read as the console's trigger
/// form reads it ([`sluice_shared::inputs::input_value`]): with the pipeline's definition, as the
/// type its input declares (`version=2.0` stays text for a string input,
/// `n=abc` for an integer input is refused here, before anything is sent),
/// and a name the pipeline does not declare is refused with a hint. Without
/// the definition (it could not be fetched), values are JSON where they parse
/// (`n=3`, `flag=true`, `list=[1,2]`), else text, and the daemon checks them.
fn inputs(pairs: &[String], definition: Option<&Value>) -> Result<Map<String, Value>, Failure> {
    let declared = definition.and_then(console_inputs::declared);
    sluice_shared::inputs::from_assignments(pairs, declared.as_deref()).map_err(usage)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Failure::new(Exit::Failure, e.to_string()))?;
    emit(&format!("{text}\n")).map_err(io)
}

/// How wide tables may be: `COLUMNS` when set, else the terminal's width;
/// without `COLUMNS`, output to a pipe or file is never cut, so scripts get
/// whole values.
fn width() -> usize {
    use std::io::IsTerminal;
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return c;
    }
    if !std::io::stdout().is_terminal() {
        return usize::MAX;
    }
    ratatui::crossterm::terminal::size().map_or(80, |(w, _)| usize::from(w))
}

fn state_word(s: RunState) -> String {
    let symbol = match s {
        RunState::Queued => "·",
        RunState::Running => "▶",
        RunState::Waiting => "…",
        RunState::Succeeded => "✓",
        RunState::Failed => "✗",
        RunState::Cancelled => "⊘",
    };
    format!("{symbol} {s}")
}

/// Runs one socket subcommand.
pub async fn run(command: Command, socket: PathBuf, json: bool) -> Result<Exit, Failure> {
    let mut client = Client::connect(&socket).await?;
    match command {
        Command::Status => {
            let s: StatusResult = client.call("status", json!({})).await?;
            if json {
                print_json(&s)?;
            } else {
                emit(&format!(
                    "sluiced {} up {}s as seen by {} ({})\npipelines {} (config errors {})\nruns: {} queued, {} running, {} waiting; approvals pending {}\nstate {}\n",
                    s.daemon_version, s.uptime_s, client.hello.user, client.hello.role.as_str(), s.pipelines, s.config_errors, s.queued, s.running, s.waiting, s.approvals_pending, s.state_dir
                ))
                .map_err(io)?;
                if let Some(p) = &s.audit_problem {
                    emit(&format!(
                        "AUDIT TRAIL BROKEN: {p}; state changes are refused until an admin runs `sluice audit ack`\n"
                    ))
                    .map_err(io)?;
                }
            }
        }
        Command::Pipelines => {
            let list: Vec<PipelineSummary> = client.call("pipelines.list", json!({})).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            if !p.present {
                                "removed".into()
                            } else if p.enabled {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            format!("v{}", p.version),
                            p.last_state.map_or("-".into(), state_word),
                            p.next_fire.clone().unwrap_or_else(|| "-".into()),
                            p.triggers.join(", "),
                        ]
                    })
                    .collect();
                emit(&table::render(
                    &["NAME", "ENABLED", "VER", "LAST", "NEXT FIRE", "TRIGGERS"],
                    &rows,
                    width(),
                ))
                .map_err(io)?;
            }
        }
        Command::Runs(args) => runs(&mut client, args, json).await?,
        Command::Run { id } => {
            let d: RunDetail = client
                .call("runs.get", json!({ "id": run_id(&id)? }))
                .await?;
            if json {
                print_json(&d)?;
            } else {
                print_run(&d)?;
            }
        }
        Command::Logs { id, node, follow } => {
            logs(&mut client, run_id(&id)?, node, follow, json).await?
        }
        Command::Trigger {
            name,
            inputs: pairs,
            wait,
        } => {
            // The declared input types say how to read `-i` values.
            let definition = if pairs.is_empty() {
                None
            } else {
                client
                    .call::<PipelineDetail>("pipelines.get", json!({ "name": name }))
                    .await
                    .ok()
                    .map(|d| d.definition)
            };
            let inputs = inputs(&pairs, definition.as_ref())?;
            let r: TriggerResult = client
                .call(
                    "pipelines.trigger",
                    json!({ "name": name, "inputs": inputs, "wait": wait }),
                )
                .await?;
            if json {
                print_json(&r)?;
            } else {
                match &r.detail {
                    Some(d) => print_run(d)?,
                    None => emit(&format!("{} started\n", r.run)).map_err(io)?,
                }
            }
            if let Some(d) = &r.detail
                && d.run.state != RunState::Succeeded
            {
                return Ok(Exit::Failure);
            }
        }
        Command::Cancel { id } => {
            let run = run_id(&id)?;
            act(
                &mut client,
                "runs.cancel",
                json!({ "id": run }),
                json,
                |_| format!("{run} cancelled"),
            )
            .await?;
        }
        Command::Retry { id, all } => {
            let run = run_id(&id)?;
            let params = json!({ "id": run, "mode": if all { "all" } else { "failed" } });
            act(&mut client, "runs.retry", params, json, |v| {
                format!("#{} started (retry of {run})", v["run"])
            })
            .await?;
        }
        Command::Approvals { all } => {
            let list: Vec<ApprovalInfo> = client
                .call("approvals.list", json!({ "pending": !all }))
                .await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.to_string(),
                            a.run.to_string(),
                            a.node.clone(),
                            a.state.clone(),
                            table::time(a.deadline),
                            a.message.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                emit(&table::render(
                    &["ID", "RUN", "NODE", "STATE", "DEADLINE", "MESSAGE"],
                    &rows,
                    width(),
                ))
                .map_err(io)?;
            }
        }
        Command::Approve { id, reason } => {
            let params = json!({ "id": id, "approve": true, "reason": reason });
            act(&mut client, "approvals.decide", params, json, |v| {
                if v["decided"] == json!(false) {
                    let votes = v["approval"]["votes"].as_array().map_or(0, Vec::len);
                    format!(
                        "approval #{id}: {votes} of {} approvals; waiting for another approver",
                        v["approval"]["min_approvals"]
                    )
                } else {
                    format!("approval #{id} approved")
                }
            })
            .await?;
        }
        Command::Reject { id, reason } => {
            let params = json!({ "id": id, "approve": false, "reason": reason });
            act(&mut client, "approvals.decide", params, json, |_| {
                format!("approval #{id} rejected")
            })
            .await?;
        }
        Command::Enable { name } => {
            act(
                &mut client,
                "pipelines.enable",
                json!({ "name": name }),
                json,
                |_| format!("{name} enabled"),
            )
            .await?;
        }
        Command::Disable { name } => {
            act(
                &mut client,
                "pipelines.disable",
                json!({ "name": name }),
                json,
                |_| format!("{name} disabled"),
            )
            .await?;
        }
        Command::Audit {
            action: Some(a),
            note,
            ..
        } if a == "ack" => {
            let r: AuditAckResult = client.call("audit.ack", json!({ "note": note })).await?;
            if json {
                print_json(&r)?;
            } else {
                emit(&format!(
                    "acknowledged as audit row {}: {}\n",
                    r.row, r.problem
                ))
                .map_err(io)?;
            }
        }
        Command::Audit {
            action: Some(_), ..
        } => {
            let r: AuditVerifyResult = client.call("audit.verify", json!({})).await?;
            if json {
                print_json(&r)?;
            } else if r.ok {
                emit(&format!("audit trail intact: {} rows\n", r.rows)).map_err(io)?;
            } else {
                emit(&format!(
                    "audit trail BROKEN at row {}: {}\n",
                    r.first_bad.unwrap_or(0),
                    r.problem.clone().unwrap_or_default()
                ))
                .map_err(io)?;
            }
            if !r.ok {
                return Ok(Exit::Failure);
            }
        }
        Command::Audit {
            action: None,
            limit,
            ..
        } => {
            let rows: Vec<AuditEntry> =
                client.call("audit.list", json!({ "limit": limit })).await?;
            if json {
                print_json(&rows)?;
            } else {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.to_string(),
                            table::time(Some(a.at)),
                            a.user.clone(),
                            a.action.clone(),
                            a.target.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                emit(&table::render(
                    &["ID", "AT", "USER", "ACTION", "TARGET"],
                    &cells,
                    width(),
                ))
                .map_err(io)?;
            }
        }
        Command::Resolve {
            id,
            node,
            action,
            output,
            reason,
        } => {
            let resolution = match action {
                ResolveAction::Retry => json!({ "action": "retry" }),
                ResolveAction::Succeed => {
                    let out: Value = match output {
                        Some(text) => serde_json::from_str(&text)
                            .map_err(|e| usage(format!("--output is not JSON: {e}")))?,
                        None => Value::Null,
                    };
                    json!({ "action": "succeed", "output": out })
                }
                ResolveAction::Fail => json!({ "action": "fail", "reason": reason }),
            };
            let run = run_id(&id)?;
            let params = json!({ "id": run, "node": node, "resolution": resolution });
            act(&mut client, "runs.resolve", params, json, |_| {
                format!("node {node} of {run} resolved")
            })
            .await?;
        }
        Command::Errors => {
            let v: ConfigErrors = client.call("config.errors", json!({})).await?;
            // Rejected files fail the command alike with and without --json.
            let rejected = v.diagnostics.iter().any(|d| d.is_error());
            if json {
                print_json(&v)?;
                if rejected {
                    return Ok(Exit::Failure);
                }
            } else {
                let text: String = v.diagnostics.iter().map(|d| format!("{d}\n")).collect();
                if !rejected {
                    // Warnings (if any) first: they do not fail the command.
                    emit(&format!("{text}no pipeline file is rejected\n")).map_err(io)?;
                } else {
                    emit(&text).map_err(io)?;
                    return Ok(Exit::Failure);
                }
            }
        }
        Command::Reload => {
            let v: Value = client.call("config.reload", json!({})).await?;
            if json {
                print_json(&v)?;
            } else {
                // Unreadable paths are rare; named only when there are some
                // (`sluice errors` says why).
                let unreadable = v["unreadable"].as_array().map_or(0, Vec::len);
                emit(&format!(
                    "updated {}, removed {}, rejected {}{}\n",
                    v["updated"].as_array().map_or(0, Vec::len),
                    v["removed"].as_array().map_or(0, Vec::len),
                    v["rejected"].as_array().map_or(0, Vec::len),
                    if unreadable > 0 {
                        format!(", unreadable {unreadable} (kept as loaded; see `sluice errors`)")
                    } else {
                        String::new()
                    }
                ))
                .map_err(io)?;
            }
        }
        Command::Schedules => {
            let list: Vec<ScheduleSummary> = client.call("schedules.list", json!({})).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.pipeline.clone(),
                            format!("{} {}", s.cron, s.timezone),
                            if s.paused {
                                "paused".into()
                            } else {
                                "active".into()
                            },
                            s.next.clone().unwrap_or_else(|| "-".into()),
                            s.id.clone(),
                        ]
                    })
                    .collect();
                emit(&table::render(
                    &["PIPELINE", "SCHEDULE", "STATE", "NEXT FIRE", "ID"],
                    &rows,
                    width(),
                ))
                .map_err(io)?;
            }
        }
        Command::Pause { pipeline, id } => {
            let params = json!({ "pipeline": pipeline, "id": id });
            act(&mut client, "schedules.pause", params, json, |v| {
                format!("{pipeline}: paused {}", v["schedules"])
            })
            .await?;
        }
        Command::Resume { pipeline, id } => {
            let params = json!({ "pipeline": pipeline, "id": id });
            act(&mut client, "schedules.resume", params, json, |v| {
                format!("{pipeline}: resumed {}", v["schedules"])
            })
            .await?;
        }
        Command::Misfires { pipeline } => {
            let list: Vec<MisfireEntry> = client
                .call("misfires.list", json!({ "pipeline": pipeline }))
                .await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|m| {
                        vec![
                            m.pipeline.clone(),
                            table::time(Some(m.due_first)),
                            m.missed.to_string(),
                            m.action.clone(),
                            m.reason.clone(),
                        ]
                    })
                    .collect();
                emit(&table::render(
                    &["PIPELINE", "DUE", "MISSED", "ACTION", "WHY"],
                    &rows,
                    width(),
                ))
                .map_err(io)?;
            }
        }
        Command::Limits { action } => limits(&mut client, action, json).await?,
        Command::Token(action) => token(&mut client, action, json).await?,
        Command::Validate(_)
        | Command::Cron(_)
        | Command::Schema
        | Command::Completions { .. }
        | Command::Man
        | Command::Demo { .. } => {
            return Err(usage("offline command"));
        }
    }
    Ok(Exit::Success)
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// `sluice limits [usage|explain RUN]`.
async fn limits(
    client: &mut Client,
    action: Option<LimitsCommand>,
    json: bool,
) -> Result<(), Failure> {
    match action.unwrap_or(LimitsCommand::Usage { user: None }) {
        LimitsCommand::Usage { user } => {
            let u: LimitsUsageResult = client
                .call("limits.usage", json!(LimitsUsageParams { user }))
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
            let e: LimitsExplainResult = client
                .call("limits.explain", json!(LimitsExplainParams { run }))
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
async fn token(client: &mut Client, action: TokenCommand, json: bool) -> Result<(), Failure> {
    match action {
        TokenCommand::Create { user, pipeline } => {
            let t: TokenCreateResult = client
                .call("tokens.create", json!(TokenCreateParams { user, pipeline }))
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
            let list: Vec<TokenInfo> = client.call("tokens.list", json!({})).await?;
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
            act(
                client,
                "tokens.revoke",
                json!(TokenRevokeParams { id }),
                json,
                |_| format!("token #{id} revoked"),
            )
            .await
        }
    }
}

/// Calls a state-changing method and prints its result: the JSON, or one line.
async fn act(
    client: &mut Client,
    method: &str,
    params: Value,
    json: bool,
    said: impl FnOnce(&Value) -> String,
) -> Result<(), Failure> {
    let v: Value = client.call(method, params).await?;
    if json {
        print_json(&v)
    } else {
        emit(&format!("{}\n", said(&v))).map_err(io)
    }
}

async fn runs(client: &mut Client, args: RunsArgs, json: bool) -> Result<(), Failure> {
    for s in &args.state {
        if s.parse::<RunState>().is_err() {
            return Err(usage(format!(
                "unknown state '{s}' (queued, running, waiting, succeeded, failed, cancelled)"
            )));
        }
    }
    let before = args.before.as_deref().map(run_id).transpose()?;
    let page: RunsPage = client
        .call(
            "runs.list",
            json!({ "pipeline": args.pipeline, "states": args.state, "trigger": args.trigger, "user": args.user, "before": before, "limit": args.limit }),
        )
        .await?;
    if page.runs.is_empty()
        && let Some(name) = &args.pipeline
    {
        // No runs may mean no such pipeline: say so (exit 3) rather than print
        // an empty table. A removed pipeline the daemon still knows is found.
        client
            .call::<Value>("pipelines.get", json!({ "name": name }))
            .await?;
    }
    if json {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page
        .runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.pipeline.clone(),
                state_word(r.state),
                r.trigger.kind.to_string(),
                r.user.clone().unwrap_or_else(|| "-".into()),
                table::time(Some(r.created_at)),
                table::duration(
                    r.started_at,
                    r.finished_at.or_else(|| {
                        r.started_at
                            .map(|_| jiff::Timestamp::now().as_millisecond())
                    }),
                ),
            ]
        })
        .collect();
    let mut text = table::render(
        &[
            "ID", "PIPELINE", "STATE", "TRIGGER", "USER", "STARTED", "TOOK",
        ],
        &rows,
        width(),
    );
    if let Some(next) = page.next {
        text.push_str(&format!("more: sluice runs --before {}\n", next.0));
    }
    emit(&text).map_err(io)
}

fn print_run(d: &RunDetail) -> Result<(), Failure> {
    let mut text = format!(
        "{} {} v{} {}  trigger {} by {}\n",
        d.run.id,
        d.run.pipeline,
        d.run.version.unwrap_or(0),
        state_word(d.run.state),
        d.run.trigger.kind,
        d.run.user.clone().unwrap_or_else(|| "-".into())
    );
    if let Some(e) = &d.run.error {
        text.push_str(&format!("error: {e}\n"));
    }
    let rows: Vec<Vec<String>> = d
        .nodes
        .iter()
        .map(|n| {
            let last = n.attempts.last();
            vec![
                n.id.clone(),
                n.kind.clone(),
                n.state.to_string(),
                n.attempts.len().to_string(),
                table::duration(n.started_at, n.finished_at),
                n.error
                    .clone()
                    .or_else(|| n.output.as_ref().map(|o| o.to_string()))
                    .or_else(|| last.and_then(|a| a.error.clone()))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    text.push_str(&table::render(
        &["NODE", "KIND", "STATE", "TRIES", "TOOK", "OUTPUT / ERROR"],
        &rows,
        width(),
    ));
    emit(&text).map_err(io)
}

async fn logs(
    client: &mut Client,
    run: RunId,
    node: Option<String>,
    follow: bool,
    json: bool,
) -> Result<(), Failure> {
    // Subscribe before reading, so no line falls between the two.
    let sub: Option<SubscribeResult> = if follow {
        Some(client.call("subscribe", json!({ "run": run })).await?)
    } else {
        None
    };
    let mut seen: HashMap<(String, u32), u32> = HashMap::new();
    let (mut after, finished) = read_stored(client, run, &node, 0, &mut seen, json).await?;
    if sub.is_none() || finished {
        return Ok(());
    }
    loop {
        let n = client.notification().await?;
        if n.method == "lagged" {
            // Missed live lines: read what is stored instead.
            after = read_stored(client, run, &node, after, &mut seen, json)
                .await?
                .0;
            continue;
        }
        let Ok(notice) = serde_json::from_value::<EventNotice>(n.params) else {
            continue;
        };
        match notice.event {
            Event::Log {
                node: n2,
                attempt,
                seq,
                stream,
                line,
                ..
            } => {
                if node.as_ref().is_some_and(|want| *want != n2) {
                    continue;
                }
                let last = seen.entry((n2.clone(), attempt)).or_insert(0);
                if seq > *last {
                    *last = seq;
                    print_line(&n2, attempt, &stream, &line, json)?;
                }
            }
            Event::RunState { state, .. } if state.is_finished() => return Ok(()),
            _ => {}
        }
    }
}

/// Lines `logs.get` asks for at once; the daemon may end a page sooner (by size).
const LOG_PAGE: u32 = 10_000;

/// Prints stored lines after cursor `after` not printed yet, following every
/// page; returns the new cursor and whether the run has finished.
async fn read_stored(
    client: &mut Client,
    run: RunId,
    node: &Option<String>,
    mut after: u64,
    seen: &mut HashMap<(String, u32), u32>,
    json: bool,
) -> Result<(u64, bool), Failure> {
    loop {
        let page: LogsPage = client
            .call(
                "logs.get",
                json!({ "run": run, "node": node, "after": after, "limit": LOG_PAGE }),
            )
            .await?;
        for l in &page.lines {
            let last = seen.entry((l.node.clone(), l.attempt)).or_insert(0);
            if l.seq > *last {
                *last = l.seq;
                print_line(&l.node, l.attempt, &l.stream, &l.line, json)?;
            }
        }
        // `more` (protocol 1.2) says so outright; an older daemon's full page may have a successor.
        let full = page.lines.len() >= LOG_PAGE as usize;
        if page.lines.is_empty() || page.next == after || !(page.more || full) {
            return Ok((page.next.max(after), page.finished));
        }
        after = page.next;
    }
}

fn print_line(
    node: &str,
    attempt: u32,
    stream: &str,
    line: &str,
    json: bool,
) -> Result<(), Failure> {
    let text = if json {
        format!(
            "{}\n",
            json!({ "node": node, "attempt": attempt, "stream": stream, "line": line })
        )
    } else if stream == "stdout" {
        format!("{node}#{attempt} | {line}\n")
    } else {
        format!("{node}#{attempt} {stream} | {line}\n")
    };
    emit(&text).map_err(io)
}
