//! `sluice cron next`: upcoming fire times, offline.

use anyhow::anyhow;
use jiff::Timestamp;
use sluice_shared::cron::Schedule;

use crate::cli::CronNextArgs;
use crate::exit::{Exit, Failure};

/// Prints the next fire times, one RFC 3339 timestamp with offset per line.
pub fn next(args: &CronNextArgs, json: bool) -> anyhow::Result<Exit> {
    let schedule = Schedule::new(&args.expr, args.tz.as_deref(), args.seconds).map_err(|e| {
        let mut f = Failure::usage(match &e.hint {
            Some(hint) => format!("{e}\n  = hint: {hint}"),
            None => e.to_string(),
        });
        f.data = Some(serde_json::json!({ "hint": e.hint }));
        f
    })?;
    let after = match &args.after {
        Some(text) => {
            parse_time(text).map_err(|e| Failure::usage(format!("--after '{text}': {e}")))?
        }
        None => Timestamp::now(),
    };
    let times: Vec<String> = schedule
        .upcoming(after, args.count)
        .iter()
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .collect();
    let text = if json {
        format!("{}\n", serde_json::to_string(&times)?)
    } else {
        times.iter().map(|t| format!("{t}\n")).collect()
    };
    crate::output::emit(&text)?;
    Ok(Exit::Success)
}

fn parse_time(text: &str) -> anyhow::Result<Timestamp> {
    text.parse::<Timestamp>()
        .or_else(|_| text.parse::<jiff::Zoned>().map(|z| z.timestamp()))
        .map_err(|e| anyhow!("not an RFC 3339 time: {e}"))
}
