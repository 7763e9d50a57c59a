//! `sluice logs RUN [NODE] [-f]`: stored lines page by page, then (with
//! `-f`) live lines from a subscription until the run finishes.

use std::collections::HashMap;

use serde_json::json;
use sluice_shared::client::{Client, Notice};
use sluice_shared::event::Event;
use sluice_shared::method as m;
use sluice_shared::protocol::{LogsParams, SubscribeParams};
use sluice_shared::run::RunId;

use super::remote::io;
use crate::exit::Failure;
use crate::output::emit;

/// Prints a run's log lines; with `follow`, until the run finishes.
pub(super) async fn logs(
    client: &mut Client,
    run: RunId,
    node: Option<String>,
    follow: bool,
    json: bool,
) -> Result<(), Failure> {
    // Subscribe before reading, so no line falls between the two.
    if follow {
        client
            .call::<m::Subscribe>(SubscribeParams { run: Some(run) })
            .await?;
    }
    let mut seen: HashMap<(String, u32), u32> = HashMap::new();
    let (mut after, finished) = read_stored(client, run, &node, 0, &mut seen, json).await?;
    if !follow || finished {
        return Ok(());
    }
    loop {
        let notice = match Notice::read(client.notification().await?) {
            Notice::Event(e) => e,
            Notice::Lagged(_) => {
                // Missed live lines: read what is stored instead.
                after = read_stored(client, run, &node, after, &mut seen, json)
                    .await?
                    .0;
                continue;
            }
            Notice::Other(_) => continue,
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
        let page = client
            .call::<m::LogsGet>(LogsParams {
                run,
                node: node.clone(),
                attempt: None,
                after: Some(after),
                limit: Some(LOG_PAGE),
            })
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
