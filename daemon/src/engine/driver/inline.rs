//! Runs executed before they are written. A run whose nodes are all instant
//! and pure (transforms and filters) and that would start at once is executed
//! where it is accepted, then written in one statement group already
//! finished: no queued row updated twice, no driver task, no second trip
//! through the writer (about a fifth of the daemon's work per webhook run,
//! by callgrind). The trigger is still answered only once the run is durable,
//! and nothing of it is visible or announced before its commit.
//!
//! A run id is handed out by its commit, so a pipeline whose templates read
//! `run.id` takes the usual path. So would a run that did not end at once
//! (transform and filter failures are final today, so none does; a panic
//! while executing is the one way there): its executed attempt is dropped,
//! which is safe because the nodes have no effects, and the run is written
//! queued for its driver to execute.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use sluice_shared::Pipeline;
use sluice_shared::event::Event;
use sluice_shared::model::NodeKind;
use sluice_shared::run::{AttemptState, RunId};
use sluice_shared::template::TemplateEngine;
use sluice_shared::time::now_ms;
use sluice_shared::validate::{expression_sites, template_sites};

use super::load::from_created;
use super::{Created, Run, Turn, finish_if_done, start_ready, start_running};
use crate::attempt_log::closing_line;
use crate::engine::{Inner, admission};
use crate::secrets::Redactor;
use crate::store::{
    Change, DoneAttempt, DoneNode, DoneRun, NewNode, NewRun, NodeChange, RunChange,
};

/// The id a run carries while it executes before it has one; it is never
/// written or announced (events get the real id after the commit).
const UNASSIGNED: RunId = RunId(0);

/// A run executed before it was written.
pub(crate) struct Executed {
    /// What to write: the run with how it ended.
    pub run: Arc<NewRun>,
    events: Vec<Event>,
    /// Attempts that ended, by node kind.
    ended: Vec<(String, AttemptState)>,
    /// When it started (ms), for its duration once committed.
    started: i64,
}

/// Whether `pipeline`'s runs may execute before they are written: every node
/// is a transform or a filter, and no template or expression reads the run's
/// id (or the whole `run`, or the whole context through `debug()`), which
/// exists only once the run is written.
pub(crate) fn eligible(pipeline: &Pipeline) -> bool {
    let engine = TemplateEngine::new();
    let reads_id = |source: &str, refs: &std::collections::BTreeSet<String>| {
        source.contains("debug")
            || refs
                .iter()
                .any(|r| r == "run" || r == "run.id" || r.starts_with("run.id."))
    };
    pipeline.nodes.iter().all(|n| {
        matches!(n.kind, NodeKind::Transform(_) | NodeKind::Filter(_))
            && template_sites(n)
                .iter()
                .all(|(_, s)| engine.template_refs(s).is_ok_and(|r| !reads_id(s, &r)))
            && expression_sites(n)
                .iter()
                .all(|(_, s)| engine.expression_refs(s).is_ok_and(|r| !reads_id(s, &r)))
    })
}

/// Executes `run` now when its pipeline allows it (see [`eligible`]), it is a
/// fresh run (no retry, nothing reused) and it would start at once under
/// every concurrency cap. Gives the run back, unexecuted, otherwise.
///
/// Its nodes hold no concurrency slot while they execute: they take
/// microseconds, never wait, and run only when the caps have room, so the
/// caps can be passed by at most the few runs executing at that instant.
pub(crate) async fn execute(inner: &Arc<Inner>, run: Arc<NewRun>) -> Result<Executed, Arc<NewRun>> {
    if inner.shutdown.is_cancelled()
        || run.done.is_some()
        || run.retry_of.is_some()
        || run.nodes.iter().any(|n| n.reused.is_some())
    {
        return Err(run);
    }
    let Ok(version) = inner.version(run.version_id).await else {
        return Err(run);
    };
    let user = crate::limits::user_key(run.trigger.user.as_deref());
    // Runs of this user written earlier and not started yet start first.
    if !version.inline
        || inner.opts.limits.backlog().has_queued(user)
        || !inner.admission.has_room(
            user,
            &run.pipeline,
            admission::slot_limit(&version.pipeline),
        )
    {
        return Err(run);
    }
    let created_at = now_ms();
    let deadline = run.deadline;
    let mut r = from_created(
        Arc::clone(&version),
        Created {
            id: UNASSIGNED,
            created_at,
            run,
        },
    );
    // As admission would start it.
    let started = start_running(&mut r);
    let mut turn = Turn::new(&r);
    // A panic here would otherwise end the trigger's task (a webhook
    // handler, a cron fire) with nothing written; the run is written queued
    // instead, for its driver, which contains panics.
    let stepped = AssertUnwindSafe(start_ready(inner, &mut r, &mut turn))
        .catch_unwind()
        .await;
    let ended_at_once = match stepped {
        Ok(Ok((to_spawn, starved))) => to_spawn.is_empty() && !starved && finish_if_done(&mut r),
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::error!(pipeline = %r.record.pipeline, "executing a run of instant nodes panicked; it is queued for its driver instead");
            false
        }
    };
    if ended_at_once && let Some(executed) = done(&mut r, &inner.redactor, created_at, started) {
        return Ok(executed);
    }
    // As it was before it executed, to be written queued.
    Err(Arc::new(take_new_run(&mut r, deadline)))
}

/// What `r` was created from, moved out of it. Its nodes are fresh (none
/// reused: `execute` takes no run that reuses outputs).
fn take_new_run(r: &mut Run, deadline: Option<i64>) -> NewRun {
    // No node context holds the details any more: they move back, uncopied.
    let details = Arc::try_unwrap(std::mem::take(&mut r.details)).unwrap_or_else(|d| (*d).clone());
    let record = &mut r.record;
    let mut trigger = std::mem::replace(&mut record.trigger, vacant_trigger());
    trigger.details = details;
    NewRun {
        pipeline: std::mem::take(&mut record.pipeline),
        version_id: record.version_id,
        trigger,
        inputs: record.inputs.take(),
        retry_of: record.retry_of,
        deadline,
        nodes: NewNode::fresh(&r.version.pipeline),
        done: None,
    }
}

/// The finished run `r` as one write, with what to announce once it is
/// committed; `None` for a change a finished row cannot carry.
fn done(r: &mut Run, redactor: &Redactor, created_at: i64, started: i64) -> Option<Executed> {
    let count = r.nodes.len();
    let mut run_change = RunChange::default();
    let mut node_changes = vec![NodeChange::default(); count];
    let mut attempts = Vec::new();
    let mut ended = Vec::new();
    let at = now_ms();
    for change in std::mem::take(&mut r.changes) {
        match change {
            Change::Run(_, c) => run_change.absorb(c),
            Change::Node(_, id, c) => {
                let i = r.version.pipeline.nodes.iter().position(|n| n.id == id)?;
                node_changes[i].absorb(c);
            }
            Change::AttemptEnd(_, node, attempt, state, error) => {
                let kind = r.version.pipeline.nodes.iter().find(|n| n.id == node)?;
                ended.push((kind.kind.name().to_owned(), state));
                attempts.push(DoneAttempt {
                    node,
                    attempt,
                    state,
                    at,
                    error,
                });
            }
            Change::AttemptStart(..) | Change::AttemptProcess(..) | Change::Sql(_) => return None,
        }
    }
    let finished_at = run_change.finished_at?;
    if !r.record.state.is_finished() {
        return None;
    }
    let nodes = r
        .nodes
        .iter_mut()
        .zip(node_changes)
        .map(|(rt, c)| DoneNode {
            state: rt.state,
            attempts: rt.attempts,
            output: rt.output.take(),
            error: rt.error.take(),
            started_at: c.started_at,
            finished_at: c.finished_at.flatten(),
        })
        .collect();
    // Written with the run, as the log pump would store them after it.
    let notes = std::mem::take(&mut r.notes)
        .into_iter()
        .map(|(i, attempt, slot, text)| {
            let node = &r.version.pipeline.nodes[i].id;
            closing_line(UNASSIGNED, node, attempt, slot, &text, redactor)
        })
        .collect();
    let state = r.record.state;
    let deadline = run_change.deadline.flatten();
    let mut new = take_new_run(r, deadline);
    new.done = Some(DoneRun {
        state,
        created_at,
        started_at: started,
        finished_at,
        error: run_change.error.flatten(),
        nodes,
        attempts,
        notes,
    });
    Some(Executed {
        run: Arc::new(new),
        events: std::mem::take(&mut r.events),
        ended,
        started,
    })
}

/// What is left in a record's place once its trigger moved out (allocates nothing).
fn vacant_trigger() -> sluice_shared::run::TriggerInfo {
    sluice_shared::run::TriggerInfo {
        kind: sluice_shared::run::TriggerKind::Manual,
        user: None,
        details: serde_json::Value::Null,
    }
}

/// Announces run `id`, committed from `executed`: created, its nodes' notes
/// (stored with it), then its state changes, as its driver would have
/// announced them. Nothing here waits, so a caller that goes away right after
/// the commit cannot cut the announcement short.
pub(crate) fn announce(inner: &Inner, id: RunId, executed: Executed) {
    let Executed {
        run,
        events,
        ended,
        started,
    } = executed;
    // Measured as the driver measures it: from the start to the commit.
    let took = Duration::from_millis(u64::try_from(now_ms() - started).unwrap_or(0));
    inner.publish(Event::RunCreated {
        run: id,
        pipeline: run.pipeline.clone(),
    });
    // As the driver counts them: attempts, then the run.
    for (kind, state) in ended {
        inner.opts.telemetry.attempt_finished(&kind, state);
    }
    if let Some(done) = &run.done {
        // Followers stop at the run's end: its last lines come first.
        for l in &done.notes {
            let mut e = Event::log(l);
            if let Event::Log { run, .. } = &mut e {
                *run = id;
            }
            inner.publish(e);
        }
        inner
            .opts
            .telemetry
            .run_finished(&run.pipeline, done.state, Some(took));
    }
    for mut e in events {
        if let Event::RunState { run, .. } | Event::NodeState { run, .. } = &mut e {
            *run = id;
        }
        inner.publish(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(nodes: &str) -> Pipeline {
        let file = sluice_shared::load_source(
            std::path::Path::new("p.yaml"),
            &format!("nodes:\n{nodes}"),
            &Default::default(),
        );
        file.pipeline
            .unwrap_or_else(|| panic!("{:?}", file.diagnostics))
    }

    fn with_output(output: &str) -> Pipeline {
        pipeline(&format!(
            "  - id: a\n    kind: transform\n    output: {{ v: {output} }}\n  - id: f\n    kind: filter\n    needs: [a]\n    condition: \"nodes.a.output.v != 1\"\n"
        ))
    }

    #[test]
    fn only_pure_instant_nodes_that_never_see_the_run_id_execute_before_the_write() {
        assert!(eligible(&with_output(
            "\"{{ trigger.body.x }} {{ run.user }} {{ run.started_at }}\""
        )));
        for reads_id in [
            "\"{{ run.id }}\"",
            "\"{{ run | tojson }}\"",
            "\"{{ run['id'] }}\"",
            "\"{% set r = run %}{{ r.id }}\"",
            "\"{{ debug() }}\"",
        ] {
            assert!(!eligible(&with_output(reads_id)), "{reads_id}");
        }
        assert!(!eligible(&pipeline(
            "  - id: a\n    kind: transform\n    output: 1\n    when: \"run.id > 3\"\n"
        )));
        assert!(!eligible(&pipeline(
            "  - id: s\n    kind: shell\n    run: 'true'\n"
        )));
    }
}
