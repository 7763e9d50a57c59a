//! Subcommands that talk to the daemon over its socket: one function per
//! subcommand, each a typed call through the method table and its output.

use serde_json::{Map, Value};
use sluice_shared::client::Client;
use sluice_shared::method::{self as m, Method};
use sluice_shared::protocol::{
    ApprovalsListParams, AuditAckParams, AuditListParams, DecideParams, DecideResult,
    MisfiresListParams, NoParams, PipelineRef, ResolveParams, RetryParams, RunDetail, RunRef,
    RunsListParams, ScheduleRef, TriggerParams,
};
use sluice_shared::run::{Resolution, RetryMode, RunId, RunState};
use sluice_tui::console::inputs as console_inputs;

use crate::cli::{Command, ResolveAction, RunsArgs};
use crate::exit::{Exit, Failure};
use crate::output::emit;
use crate::table;

pub(super) fn usage(message: impl Into<String>) -> Failure {
    Failure::usage(message)
}

pub(super) fn io(e: std::io::Error) -> Failure {
    Failure::new(Exit::Failure, e.to_string())
}

pub(super) fn run_id(text: &str) -> Result<RunId, Failure> {
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

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let text =
        serde_json::to_string_pretty(v).map_err(|e| Failure::new(Exit::Failure, e.to_string()))?;
    emit(&format!("{text}\n")).map_err(io)
}

/// How wide tables may be: `COLUMNS` when set, else the terminal's width;
/// without `COLUMNS`, output to a pipe or file is never cut, so scripts get
/// whole values.
pub(super) fn width() -> usize {
    use std::io::IsTerminal;
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return c;
    }
    if !std::io::stdout().is_terminal() {
        return usize::MAX;
    }
    ratatui::crossterm::terminal::size().map_or(80, |(w, _)| usize::from(w))
}

pub(super) fn state_word(s: RunState) -> String {
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
pub async fn run(
    command: Command,
    socket: std::path::PathBuf,
    json: bool,
) -> Result<Exit, Failure> {
    let name = format!("sluice {}", env!("CARGO_PKG_VERSION"));
    let (mut client, hello) = Client::open(&socket, &name).await?;
    let c = &mut client;
    let done = |r: Result<(), Failure>| r.map(|()| Exit::Success);
    match command {
        Command::Status => done(status(c, &hello, json).await),
        Command::Pipelines => done(pipelines(c, json).await),
        Command::Runs(args) => done(runs(c, args, json).await),
        Command::Run { id } => done(run_detail(c, &id, json).await),
        Command::Logs { id, node, follow } => {
            done(super::logs::logs(c, run_id(&id)?, node, follow, json).await)
        }
        Command::Trigger {
            name,
            inputs,
            wait,
            idempotency_key,
        } => trigger(c, name, &inputs, wait, idempotency_key.as_deref(), json).await,
        Command::Cancel { id } => done(cancel(c, &id, json).await),
        Command::Retry { id, all } => done(retry(c, &id, all, json).await),
        Command::Approvals { all } => done(approvals(c, all, json).await),
        Command::Approve { id, reason } => done(decide(c, id, true, reason, json).await),
        Command::Reject { id, reason } => done(decide(c, id, false, Some(reason), json).await),
        Command::Enable { name } => done(set_enabled(c, name, true, json).await),
        Command::Disable { name } => done(set_enabled(c, name, false, json).await),
        Command::Audit {
            action: Some(a),
            note,
            ..
        } if a == "ack" => done(audit_ack(c, note, json).await),
        Command::Audit {
            action: Some(_), ..
        } => audit_verify(c, json).await,
        Command::Audit {
            action: None,
            limit,
            ..
        } => done(audit_list(c, limit, json).await),
        Command::Resolve {
            id,
            node,
            action,
            output,
            reason,
        } => done(resolve(c, &id, node, action, output, reason, json).await),
        Command::Errors => errors(c, json).await,
        Command::Reload => done(reload(c, json).await),
        Command::Schedules => done(schedules(c, json).await),
        Command::Pause { pipeline, id } => done(set_paused(c, pipeline, id, true, json).await),
        Command::Resume { pipeline, id } => done(set_paused(c, pipeline, id, false, json).await),
        Command::Misfires { pipeline } => done(misfires(c, pipeline, json).await),
        Command::Limits { action } => done(super::limits::limits(c, action, json).await),
        Command::Token(action) => done(super::limits::token(c, action, json).await),
        Command::Validate(_)
        | Command::Cron(_)
        | Command::Schema
        | Command::Completions { .. }
        | Command::Man
        | Command::Demo { .. } => Err(usage("offline command")),
    }
}

/// `sluice status`.
async fn status(
    client: &mut Client,
    hello: &sluice_shared::protocol::HelloResult,
    json: bool,
) -> Result<(), Failure> {
    let s = client.call::<m::Status>(NoParams).await?;
    if json {
        return print_json(&s);
    }
    emit(&format!(
        "sluiced {} up {}s as seen by {} ({})\npipelines {} (config errors {})\nruns: {} queued, {} running, {} waiting; approvals pending {}\nstate {}\n",
        s.daemon_version, s.uptime_s, hello.user, hello.role.as_str(), s.pipelines, s.config_errors, s.queued, s.running, s.waiting, s.approvals_pending, s.state_dir
    ))
    .map_err(io)?;
    if let Some(p) = &s.audit_problem {
        emit(&format!(
            "AUDIT TRAIL BROKEN: {p}; state changes are refused until an admin runs `sluice audit ack`\n"
        ))
        .map_err(io)?;
    }
    Ok(())
}

/// `sluice pipelines`.
async fn pipelines(client: &mut Client, json: bool) -> Result<(), Failure> {
    let list = client.call::<m::PipelinesList>(NoParams).await?;
    if json {
        return print_json(&list);
    }
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
    .map_err(io)
}

/// `sluice run ID`.
async fn run_detail(client: &mut Client, id: &str, json: bool) -> Result<(), Failure> {
    let d = client
        .call::<m::RunsGet>(RunRef { id: run_id(id)? })
        .await?;
    if json { print_json(&d) } else { print_run(&d) }
}

/// `sluice trigger NAME [-i NAME=VALUE]... [--wait] [--idempotency-key KEY]`;
/// a finished run that did not succeed fails.
async fn trigger(
    client: &mut Client,
    name: String,
    pairs: &[String],
    wait: bool,
    key: Option<&str>,
    json: bool,
) -> Result<Exit, Failure> {
    // The declared input types say how to read `-i` values.
    let definition = if pairs.is_empty() {
        None
    } else {
        client
            .call::<m::PipelinesGet>(PipelineRef { name: name.clone() })
            .await
            .ok()
            .map(|d| d.definition)
    };
    let inputs = inputs(pairs, definition.as_ref())?;
    let params = TriggerParams { name, inputs, wait };
    let r = match key {
        Some(key) => {
            client
                .call_idempotent::<m::PipelinesTrigger>(params, key)
                .await?
        }
        None => client.call::<m::PipelinesTrigger>(params).await?,
    };
    if json {
        print_json(&r)?;
    } else {
        match &r.detail {
            Some(d) => print_run(d)?,
            None => emit(&format!("{} started\n", r.run)).map_err(io)?,
        }
    }
    Ok(match &r.detail {
        Some(d) if d.run.state != RunState::Succeeded => Exit::Failure,
        _ => Exit::Success,
    })
}

/// `sluice cancel ID`.
async fn cancel(client: &mut Client, id: &str, json: bool) -> Result<(), Failure> {
    let run = run_id(id)?;
    act::<m::RunsCancel>(client, RunRef { id: run }, json, |_| {
        format!("{run} cancelled")
    })
    .await
}

/// `sluice retry ID [--all]`.
async fn retry(client: &mut Client, id: &str, all: bool, json: bool) -> Result<(), Failure> {
    let run = run_id(id)?;
    let mode = if all {
        RetryMode::All
    } else {
        RetryMode::Failed
    };
    act::<m::RunsRetry>(client, RetryParams { id: run, mode }, json, |r| {
        format!("{} started (retry of {run})", r.run)
    })
    .await
}

/// `sluice approvals [--all]`.
async fn approvals(client: &mut Client, all: bool, json: bool) -> Result<(), Failure> {
    let list = client
        .call::<m::ApprovalsList>(ApprovalsListParams {
            pending: Some(!all),
        })
        .await?;
    if json {
        return print_json(&list);
    }
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
    .map_err(io)
}

/// `sluice approve ID` and `sluice reject ID -m REASON`.
async fn decide(
    client: &mut Client,
    id: i64,
    approve: bool,
    reason: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let params = DecideParams {
        id,
        approve,
        reason,
    };
    act::<m::ApprovalsDecide>(client, params, json, |r: &DecideResult| {
        if !approve {
            format!("approval #{id} rejected")
        } else if !r.decided {
            format!(
                "approval #{id}: {} of {} approvals; waiting for another approver",
                r.approval.votes.len(),
                r.approval.min_approvals
            )
        } else {
            format!("approval #{id} approved")
        }
    })
    .await
}

/// `sluice enable NAME` and `sluice disable NAME`.
async fn set_enabled(
    client: &mut Client,
    name: String,
    enabled: bool,
    json: bool,
) -> Result<(), Failure> {
    let said = |r: &sluice_shared::protocol::PipelineEnabled| {
        format!(
            "{} {}",
            r.name,
            if enabled { "enabled" } else { "disabled" }
        )
    };
    let p = PipelineRef { name };
    if enabled {
        act::<m::PipelinesEnable>(client, p, json, said).await
    } else {
        act::<m::PipelinesDisable>(client, p, json, said).await
    }
}

/// `sluice audit ack [--note TEXT]`.
async fn audit_ack(client: &mut Client, note: Option<String>, json: bool) -> Result<(), Failure> {
    let r = client.call::<m::AuditAck>(AuditAckParams { note }).await?;
    if json {
        return print_json(&r);
    }
    emit(&format!(
        "acknowledged as audit row {}: {}\n",
        r.row, r.problem
    ))
    .map_err(io)
}

/// `sluice audit verify`: fails when the trail is broken.
async fn audit_verify(client: &mut Client, json: bool) -> Result<Exit, Failure> {
    let r = client.call::<m::AuditVerify>(NoParams).await?;
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
    Ok(if r.ok { Exit::Success } else { Exit::Failure })
}

/// `sluice audit [-n LIMIT]`.
async fn audit_list(client: &mut Client, limit: u32, json: bool) -> Result<(), Failure> {
    let rows = client
        .call::<m::AuditList>(AuditListParams {
            before: None,
            limit: Some(limit),
        })
        .await?;
    if json {
        return print_json(&rows);
    }
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
    .map_err(io)
}

/// `sluice resolve ID NODE retry|succeed|fail`.
async fn resolve(
    client: &mut Client,
    id: &str,
    node: String,
    action: ResolveAction,
    output: Option<String>,
    reason: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let resolution = match action {
        ResolveAction::Retry => Resolution::Retry,
        ResolveAction::Succeed => Resolution::Succeed {
            output: match output {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| usage(format!("--output is not JSON: {e}")))?,
                None => Value::Null,
            },
        },
        ResolveAction::Fail => Resolution::Fail { reason },
    };
    let run = run_id(id)?;
    let said = format!("node {node} of {run} resolved");
    let params = ResolveParams {
        id: run,
        node,
        resolution,
    };
    act::<m::RunsResolve>(client, params, json, |_| said).await
}

/// `sluice errors`: rejected files fail the command alike with and without --json.
async fn errors(client: &mut Client, json: bool) -> Result<Exit, Failure> {
    let v = client.call::<m::ConfigErrorsList>(NoParams).await?;
    let rejected = v.diagnostics.iter().any(|d| d.is_error());
    if json {
        print_json(&v)?;
    } else {
        let text: String = v.diagnostics.iter().map(|d| format!("{d}\n")).collect();
        if rejected {
            emit(&text).map_err(io)?;
        } else {
            // Warnings (if any) first: they do not fail the command.
            emit(&format!("{text}no pipeline file is rejected\n")).map_err(io)?;
        }
    }
    Ok(if rejected {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// `sluice reload`.
async fn reload(client: &mut Client, json: bool) -> Result<(), Failure> {
    let r = client.call::<m::ConfigReload>(NoParams).await?;
    if json {
        return print_json(&r);
    }
    // Unreadable paths are rare; named only when there are some (`sluice errors` says why).
    let unreadable = r.unreadable.len();
    emit(&format!(
        "updated {}, removed {}, rejected {}{}\n",
        r.updated.len(),
        r.removed.len(),
        r.rejected.len(),
        if unreadable > 0 {
            format!(", unreadable {unreadable} (kept as loaded; see `sluice errors`)")
        } else {
            String::new()
        }
    ))
    .map_err(io)
}

/// `sluice schedules`.
async fn schedules(client: &mut Client, json: bool) -> Result<(), Failure> {
    let list = client.call::<m::SchedulesList>(NoParams).await?;
    if json {
        return print_json(&list);
    }
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
    .map_err(io)
}

/// `sluice pause PIPELINE [ID]` and `sluice resume PIPELINE [ID]`.
async fn set_paused(
    client: &mut Client,
    pipeline: String,
    id: Option<String>,
    paused: bool,
    json: bool,
) -> Result<(), Failure> {
    let said = |r: &sluice_shared::protocol::SchedulesPaused| {
        format!(
            "{}: {} {}",
            r.pipeline,
            if paused { "paused" } else { "resumed" },
            Value::from(r.schedules.clone())
        )
    };
    let p = ScheduleRef { pipeline, id };
    if paused {
        act::<m::SchedulesPause>(client, p, json, said).await
    } else {
        act::<m::SchedulesResume>(client, p, json, said).await
    }
}

/// `sluice misfires [PIPELINE]`.
async fn misfires(
    client: &mut Client,
    pipeline: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let list = client
        .call::<m::MisfiresList>(MisfiresListParams {
            pipeline,
            limit: None,
        })
        .await?;
    if json {
        return print_json(&list);
    }
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
    .map_err(io)
}

/// Calls a state-changing method and prints its result: the JSON, or one line.
pub(super) async fn act<M: Method>(
    client: &mut Client,
    params: M::Params,
    json: bool,
    said: impl FnOnce(&M::Result) -> String,
) -> Result<(), Failure> {
    let r = client.call::<M>(params).await?;
    if json {
        print_json(&r)
    } else {
        emit(&format!("{}\n", said(&r))).map_err(io)
    }
}

/// `sluice runs [filters]`.
async fn runs(client: &mut Client, args: RunsArgs, json: bool) -> Result<(), Failure> {
    for s in &args.state {
        if s.parse::<RunState>().is_err() {
            return Err(usage(format!(
                "unknown state '{s}' (queued, running, waiting, succeeded, failed, cancelled)"
            )));
        }
    }
    let before = args.before.as_deref().map(run_id).transpose()?;
    let params = RunsListParams {
        pipeline: args.pipeline.clone(),
        states: args.state.iter().filter_map(|s| s.parse().ok()).collect(),
        trigger: args.trigger,
        user: args.user,
        since: None,
        until: None,
        before,
        limit: Some(args.limit),
    };
    let page = client.call::<m::RunsList>(params).await?;
    if page.runs.is_empty()
        && let Some(name) = &args.pipeline
    {
        // No runs may mean no such pipeline: say so (exit 3) rather than print
        // an empty table. A removed pipeline the daemon still knows is found.
        client
            .call::<m::PipelinesGet>(PipelineRef { name: name.clone() })
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
                    r.finished_at
                        .or_else(|| r.started_at.map(|_| sluice_shared::time::now_ms())),
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
