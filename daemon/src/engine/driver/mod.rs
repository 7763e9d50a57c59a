//! One run's driver: starts ready nodes, records completions, retries with
//! backoff, skips what cannot run, and stops when nothing is left to do now
//! (the run finished, or every remaining node waits for a time or a person).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_shared::event::Event;
use sluice_shared::model::{Node, NodeKind};
use sluice_shared::run::{NodeState, RunId, RunState};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Waiting, Worker};
use super::{Command, DriverExit, EngineError, Inner, LoadedVersion};
use crate::nodes::{self, NodeContext, NodeError, NoteSlot, Outcome};
use crate::store::{Change, NewRun, NodeChange, RunChange, RunRecord};
use sluice_shared::time::now_ms;

struct NodeRt {
    state: NodeState,
    attempts: u32,
    output: Option<Value>,
    error: Option<String>,
    wake_at: Option<i64>,
    /// A filter whose condition was false: dependents are skipped.
    stopped: bool,
    /// An approval node to look at now (decided, or a fresh driver).
    recheck: bool,
}

struct Run {
    id: RunId,
    /// Its record; the trigger's details are in `details`, not here.
    record: RunRecord,
    /// The trigger's details, moved out of the record so that every node's
    /// context shares them rather than copying them.
    details: Arc<Value>,
    version: Arc<LoadedVersion>,
    nodes: Vec<NodeRt>,
    changes: Vec<Change>,
    events: Vec<Event>,
    /// Notes for node logs (node index, attempt, slot, text), written once
    /// the changes they describe are committed.
    notes: Vec<(usize, u32, NoteSlot, String)>,
}

type Finished = (usize, u32, Result<Outcome, NodeError>);

impl Run {
    /// A run's driver state with nothing pending yet.
    fn new(
        id: RunId,
        mut record: RunRecord,
        version: Arc<LoadedVersion>,
        nodes: Vec<NodeRt>,
    ) -> Self {
        let details = Arc::new(std::mem::take(&mut record.trigger.details));
        Self {
            id,
            record,
            details,
            version,
            nodes,
            changes: Vec::new(),
            events: Vec::new(),
            notes: Vec::new(),
        }
    }
}

mod approval_step;
mod budget;
mod changes;
mod complete;
pub(crate) mod inline;
mod load;
mod ready;

pub(crate) use changes::outcome_note;
use load::load;
use ready::starved_wake;

/// A run this process has just committed, handed to its first driver so that
/// loading it reads nothing back from the store.
pub(crate) struct Created {
    pub id: RunId,
    /// The `created_at` it was stored with.
    pub created_at: i64,
    /// What was stored (queued; nodes pending, or succeeded when reused).
    pub run: Arc<NewRun>,
}

async fn run_attempt(
    kind: NodeKind,
    ctx: NodeContext,
    timeout: Option<Duration>,
) -> Result<Outcome, NodeError> {
    let cancel = ctx.cancel.clone();
    let fut = nodes::execute(&kind, &ctx);
    tokio::pin!(fut);
    let Some(limit) = timeout else {
        return fut.await;
    };
    tokio::select! {
        r = &mut fut => r,
        () = tokio::time::sleep(limit) => {
            ctx.log.note(&format!("timed out after {}; stopping", sluice_shared::Duration(limit))).await;
            cancel.cancel();
            // Let the node clean up (kill its process group) before reporting.
            let _ = fut.await;
            Err(NodeError::retryable(format!("timed out after {}", sluice_shared::Duration(limit))))
        }
    }
}

/// Drives one run until it finishes or has nothing to do for now.
pub(crate) async fn drive(
    inner: &Arc<Inner>,
    id: RunId,
    cancel: CancellationToken,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    created: Option<Created>,
) -> DriverExit {
    match drive_inner(inner, id, &cancel, commands, created).await {
        Ok(exit) => exit,
        Err(e) => {
            // Most likely the store is briefly unavailable: look at the run again soon
            // rather than leaving it without a driver until the next start.
            tracing::error!(run = %id, error = %e, "run driver failed; retrying in 5 s");
            DriverExit::Waiting(Some(now_ms() + 5_000))
        }
    }
}

/// What the driver keeps from one turn of its loop to the next.
struct Turn {
    /// Node attempts are stopped through this token: by a cancel, a timeout of the run, or shutdown.
    kill: CancellationToken,
    running: JoinSet<Finished>,
    max_active: usize,
    grace_deadline: Option<tokio::time::Instant>,
    /// The run's place in the queue for a worker, and a worker handed to it that
    /// no node has taken yet (see dispatch.rs): kept across turns, so the run
    /// never loses its place or a worker it was given.
    place: Option<Pin<Box<Waiting>>>,
    held: Option<Worker>,
    dispatch_user: String,
}

impl Turn {
    fn new(run: &Run) -> Self {
        let user = run.record.trigger.user.as_deref();
        Self {
            kill: CancellationToken::new(),
            running: JoinSet::new(),
            max_active: run
                .version
                .pipeline
                .max_active_nodes
                .map_or(usize::MAX, |m| m as usize),
            grace_deadline: None,
            place: None,
            held: None,
            dispatch_user: crate::limits::user_key(user.or(run.version.pipeline.owner.as_deref()))
                .to_owned(),
        }
    }

    /// Stops every running attempt and records how each ended.
    async fn stop_all(&mut self, inner: &Inner, run: &mut Run) {
        self.kill.cancel();
        while let Some(done) = self.running.join_next().await {
            if let Ok((i, attempt, result)) = done {
                run.complete(inner, i, attempt, result, true);
            }
        }
    }
}

/// An attempt to start once the turn's changes are committed.
type Start = (usize, u32, Node, NodeContext, Worker);

async fn drive_inner(
    inner: &Arc<Inner>,
    id: RunId,
    cancel: &CancellationToken,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    created: Option<Created>,
) -> Result<DriverExit, EngineError> {
    // Taken before the run is read: a repair that ends while it is read
    // is still seen (and the run read again), not missed.
    let pending = super::recovery::pending(inner, id);
    let Some(mut run) = load(inner, id, created).await? else {
        return Ok(DriverExit::Done);
    };
    // Started before recovery reached this run (by a cancel or a decision):
    // its interrupted attempts are repaired first, then it is read again.
    if super::recovery::repair_if_pending(inner, &run.record, pending)
        .await?
        .is_some()
    {
        let Some(repaired) = load(inner, id, None).await? else {
            return Ok(DriverExit::Done);
        };
        run = repaired;
    }
    if run.record.state.is_finished() {
        return Ok(DriverExit::Done);
    }
    let mut turn = Turn::new(&run);
    if !admit(inner, &mut run, cancel).await {
        return Ok(DriverExit::Stopped);
    }
    loop {
        while let Ok(cmd) = commands.try_recv() {
            run.apply_command(cmd);
        }
        if let Some(exit) = end_if_cancelled_or_late(inner, &mut run, &mut turn, cancel).await? {
            return Ok(exit);
        }
        let stopping = inner.shutdown.is_cancelled();
        if stopping && turn.grace_deadline.is_none() {
            turn.grace_deadline = Some(tokio::time::Instant::now() + inner.opts.shutdown_grace);
        }
        // Set when a ready node found no free worker: it stays pending (nothing is
        // recorded as started) until a worker frees up.
        let (to_spawn, starved) = if stopping {
            (Vec::new(), false)
        } else {
            start_ready(inner, &mut run, &mut turn).await?
        };
        // A worker no node took goes on to the next run; a run that found none
        // keeps (or takes) its place in the queue.
        drop(turn.held.take());
        if starved {
            if turn.place.is_none() {
                turn.place = Some(Box::pin(inner.dispatch.wait(&turn.dispatch_user)));
            }
        } else {
            turn.place = None;
        }
        // When nothing runs now, the decision below (finish or wait) commits in the
        // same transaction as the completions (and the admission): one write per
        // run of instant nodes. A starved run commits what it has before it waits,
        // so its slot is seen held by a running run.
        if !to_spawn.is_empty() || !turn.running.is_empty() || stopping || starved {
            run.flush(inner).await?;
        }
        for (i, attempt, node, ctx, permit) in to_spawn {
            let timeout = node.timeout.map(|t| t.std());
            turn.running.spawn(async move {
                let _permit = permit;
                let result = run_attempt(node.kind, ctx, timeout).await;
                (i, attempt, result)
            });
        }
        if turn.running.is_empty() {
            if stopping {
                return Ok(DriverExit::Stopped);
            }
            if starved {
                wait_for_worker(inner, &mut run, &mut turn, cancel, commands).await;
                continue;
            }
            match settle(inner, &mut run, commands).await? {
                Some(exit) => return Ok(exit),
                None => continue,
            }
        }
        if let Some(exit) = wait_turn(inner, &mut run, &mut turn, cancel, commands, starved).await {
            return Ok(exit);
        }
    }
}

/// A queued run waits for a concurrency slot first; a run already running (picked
/// up after a restart) or resuming from a wait takes its slot at once (admission.rs).
/// False when the run must stop instead (the daemon is stopping).
async fn admit(inner: &Arc<Inner>, run: &mut Run, cancel: &CancellationToken) -> bool {
    if matches!(run.record.state, RunState::Running | RunState::Waiting) {
        inner.admission.hold(&run.record);
    }
    if run.record.state == RunState::Queued
        && !cancel.is_cancelled()
        && !super::admission::wait_for_slot(inner, &run.record, &run.version.pipeline, cancel).await
        && !cancel.is_cancelled()
    {
        return false;
    }
    if run.record.state == RunState::Queued && !cancel.is_cancelled() {
        inner.opts.limits.backlog().leave(run.id);
        start_running(run);
    } else if run.record.state == RunState::Waiting {
        run.set_run(RunChange {
            state: Some(RunState::Running),
            wake_at: Some(None),
            ..Default::default()
        });
    }
    true
}

/// Records queued `run` as running from now, its time limit counted from
/// now; returns the start (ms).
fn start_running(run: &mut Run) -> i64 {
    let started = now_ms();
    let deadline = super::run_deadline(&run.version.pipeline, started);
    run.set_run(RunChange {
        state: Some(RunState::Running),
        started_at: Some(started),
        deadline: Some(deadline),
        ..Default::default()
    });
    run.record.started_at = Some(started);
    run.record.deadline = deadline;
    started
}

/// Ends the run when it was cancelled or ran past its deadline.
async fn end_if_cancelled_or_late(
    inner: &Inner,
    run: &mut Run,
    turn: &mut Turn,
    cancel: &CancellationToken,
) -> Result<Option<DriverExit>, EngineError> {
    let (state, error) = if cancel.is_cancelled() {
        (RunState::Cancelled, "cancelled".to_owned())
    } else if run.record.deadline.is_some_and(|d| d <= now_ms()) {
        let limit = run
            .version
            .pipeline
            .timeout
            .map_or_else(String::new, |t| format!(" after {t}"));
        (RunState::Failed, format!("run timed out{limit}"))
    } else {
        return Ok(None);
    };
    turn.stop_all(inner, run).await;
    run.finish(state, Some(error));
    run.flush(inner).await?;
    Ok(Some(DriverExit::Done))
}

/// Starts what can start (instant kinds complete right here). An attempt is
/// committed as started before its work begins, so a crash can never hide an
/// execution from the next start. Returns the attempts to spawn once the
/// turn is committed, and whether a ready node found no free worker.
async fn start_ready(
    inner: &Inner,
    run: &mut Run,
    turn: &mut Turn,
) -> Result<(Vec<Start>, bool), EngineError> {
    let mut to_spawn: Vec<Start> = Vec::new();
    let mut starved = false;
    loop {
        let ready = run.ready(now_ms(), &mut |run: &Run, i, attempt| {
            run.eval_when(inner, i, attempt)
        });
        let mut progressed = false;
        for i in ready {
            let node = run.node(i).clone();
            // Approvals need no worker and no active-node slot.
            if let NodeKind::Approval(a) = &node.kind {
                // Boxed, as below: rare here, and large futures inline would
                // be carried (and copied) by every run's, the intake's included.
                progressed |= Box::pin(run.approval_step(inner, i, a)).await?;
                continue;
            }
            if turn.running.len() + to_spawn.len() >= turn.max_active {
                continue;
            }
            let attempt = run.nodes[i].attempts + 1;
            // A failed look at the budget must not stop the run's other attempts:
            // the trigger was checked, so the node goes ahead.
            let over_cap = if matches!(node.kind, NodeKind::Llm(_)) {
                Box::pin(run.llm_over_cap(inner)).await.unwrap_or_else(|e| {
                    tracing::warn!(run = %run.id, error = %e, "cannot check the LLM token budget");
                    None
                })
            } else {
                None
            };
            if let Some(why) = over_cap {
                run.attempt_start(i, attempt);
                run.set(i, started(attempt));
                run.complete(inner, i, attempt, Err(NodeError::fatal(why)), false);
                progressed = true;
                continue;
            }
            if nodes::is_instant(&node.kind) {
                let ctx = run.node_context(inner, i, attempt, turn.kill.child_token());
                run.set(i, started(attempt));
                if matches!(node.kind, NodeKind::Delay(_)) {
                    run.attempt_start(i, attempt);
                }
                let result = nodes::execute_instant(&node.kind, &ctx).await;
                run.complete(inner, i, attempt, result, false);
                progressed = true;
            } else {
                // Nodes after it that need no worker (a delay, a
                // transform, an approval) still go ahead.
                let Some(permit) = next_worker(inner, &mut turn.held, &mut turn.place) else {
                    starved = true;
                    continue;
                };
                run.attempt_start(i, attempt);
                run.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Running),
                        wake_at: Some(None),
                        ..started(attempt)
                    },
                );
                let ctx = run.node_context(inner, i, attempt, turn.kill.child_token());
                to_spawn.push((i, attempt, node, ctx, permit));
            }
        }
        if !progressed {
            return Ok((to_spawn, starved));
        }
    }
}

/// The change that records attempt `attempt` of a node as started now.
fn started(attempt: u32) -> NodeChange {
    NodeChange {
        attempts: Some(attempt),
        started_at: Some(now_ms()),
        ..Default::default()
    }
}

/// Every worker is busy with other runs: waits for one (or the run's deadline,
/// a wait of another node coming due, a cancel, a stop). Commands are taken
/// while waiting: an operator's resolve or a decided approval is answered
/// now, not when a worker frees up.
async fn wait_for_worker(
    inner: &Inner,
    run: &mut Run,
    turn: &mut Turn,
    cancel: &CancellationToken,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) {
    let until_deadline = starved_wake(run).unwrap_or(Duration::from_secs(3600));
    let mut given = None;
    tokio::select! {
        w = granted(&mut turn.place) => given = Some(w),
        () = tokio::time::sleep(until_deadline) => {}
        () = cancel.cancelled() => {}
        () = inner.shutdown.cancelled() => {}
        Some(cmd) = commands.recv() => run.apply_command(cmd),
    }
    if given.is_some() {
        turn.held = given;
        turn.place = None;
    }
}

/// Nothing runs: the run finishes, waits (for a time or a person), or goes
/// round again (`None`) when a wait is already due or a command came in.
async fn settle(
    inner: &Inner,
    run: &mut Run,
    commands: &mpsc::UnboundedReceiver<Command>,
) -> Result<Option<DriverExit>, EngineError> {
    if finish_if_done(run) {
        run.flush(inner).await?;
        return Ok(Some(DriverExit::Done));
    }
    let waiting = run
        .nodes
        .iter()
        .any(|n| matches!(n.state, NodeState::Waiting | NodeState::NeedsDecision));
    if waiting {
        let wake = run.next_wake();
        if wake.is_none_or(|w| w > now_ms()) && commands.is_empty() {
            run.set_run(RunChange {
                state: Some(RunState::Waiting),
                wake_at: Some(wake),
                ..Default::default()
            });
            run.flush(inner).await?;
            return Ok(Some(DriverExit::Waiting(wake)));
        }
        return Ok(None);
    }
    // Pending nodes with nothing running and nothing waiting cannot happen in a DAG;
    // refuse to spin.
    run.finish(
        RunState::Failed,
        Some("internal error: run cannot make progress".into()),
    );
    run.flush(inner).await?;
    Ok(Some(DriverExit::Done))
}

/// Finishes the run when every node has finished: failed when one failed
/// (the first in pipeline order names the cause), else succeeded. False while
/// a node has yet to finish.
fn finish_if_done(run: &mut Run) -> bool {
    if !run.nodes.iter().all(|n| n.state.is_finished()) {
        return false;
    }
    let failed = run
        .version
        .order
        .iter()
        .copied()
        .find(|&i| run.nodes[i].state == NodeState::Failed);
    match failed {
        Some(i) => {
            let err = format!(
                "node '{}' failed: {}",
                run.node(i).id,
                run.nodes[i].error.clone().unwrap_or_default()
            );
            run.finish(RunState::Failed, Some(err));
        }
        None => run.finish(RunState::Succeeded, None),
    }
    true
}

/// Waits for a completion, a command, a cancel, a wake-up or the end of the
/// grace period; `Some` when the run must stop (the grace period ended).
async fn wait_turn(
    inner: &Inner,
    run: &mut Run,
    turn: &mut Turn,
    cancel: &CancellationToken,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    starved: bool,
) -> Option<DriverExit> {
    let wake_in = run
        .next_wake()
        .map(|w| Duration::from_millis(u64::try_from(w - now_ms()).unwrap_or(0)));
    let wake_in = if starved { starved_wake(run) } else { wake_in };
    let sleep = tokio::time::sleep(wake_in.unwrap_or(Duration::from_secs(3600)));
    let grace_deadline = turn.grace_deadline;
    let grace = async {
        match grace_deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut given = None;
    tokio::select! {
        w = granted(&mut turn.place) => given = Some(w),
        done = turn.running.join_next() => {
            if let Some(Ok((i, attempt, result))) = done {
                // Stopped by shutdown: leave the attempt recorded as running for the next start.
                if !(inner.shutdown.is_cancelled() && turn.kill.is_cancelled()) {
                    run.complete(inner, i, attempt, result, false);
                }
            }
        }
        Some(cmd) = commands.recv() => run.apply_command(cmd),
        () = cancel.cancelled() => {}
        () = sleep => {}
        () = inner.shutdown.cancelled(), if grace_deadline.is_none() => {}
        () = grace => {
            turn.kill.cancel();
            while turn.running.join_next().await.is_some() {}
            return Some(DriverExit::Stopped);
        }
    }
    if given.is_some() {
        turn.held = given;
        turn.place = None;
    }
    None
}

/// Records an attempt's child process group as soon as it exists. The attempt's
/// start is committed before the node runs, so the row is there to update. The
/// write does not hold the attempt up: should the daemon die before it lands,
/// recovery still finds the processes by their attempt marker.
fn process_recorder(inner: &Inner, run: RunId, node: &str, attempt: u32) -> nodes::SpawnHook {
    let store = inner.store.clone();
    let node = node.to_owned();
    Arc::new(move |pgid, start| {
        let store = store.clone();
        let change = Change::AttemptProcess(run, node.clone(), attempt, pgid, start);
        tokio::spawn(async move {
            if let Err(e) = store.apply(vec![change]).await {
                tracing::warn!(%run, error = %e, "cannot record a node's process group");
            }
        });
    })
}

/// A worker for the next ready node: one handed over already, else a free one
/// — unless the run waits in the queue, where it keeps its place (taking a
/// free slot then would jump the queue).
fn next_worker(
    inner: &Inner,
    held: &mut Option<Worker>,
    place: &mut Option<Pin<Box<Waiting>>>,
) -> Option<Worker> {
    if let Some(w) = held.take() {
        return Some(w);
    }
    match place {
        Some(p) => {
            let w = p.try_now()?;
            *place = None;
            Some(w)
        }
        None => inner.dispatch.try_take(),
    }
}

/// Resolves when the run's place in the queue is handed a worker; never without a place.
async fn granted(place: &mut Option<Pin<Box<Waiting>>>) -> Worker {
    match place {
        Some(p) => p.as_mut().await,
        None => std::future::pending().await,
    }
}

/// A driver's run built from pipeline text, for unit tests of its parts.
#[cfg(test)]
fn test_run(yaml: &str) -> Run {
    use sluice_shared::run::{TriggerInfo, TriggerKind};
    let file =
        sluice_shared::load_source(std::path::Path::new("p.yaml"), yaml, &Default::default());
    let Some(pipeline) = file.pipeline else {
        panic!("invalid test pipeline: {:?}", file.diagnostics);
    };
    let version = Arc::new(LoadedVersion::new(pipeline, 1).expect("no cycle"));
    let nodes = version
        .pipeline
        .nodes
        .iter()
        .map(|n| load::node_rt(n, NodeState::Pending, 0, None, None, None))
        .collect();
    Run::new(
        RunId(7),
        RunRecord {
            id: RunId(7),
            pipeline: version.pipeline.name.clone(),
            version_id: crate::store::VersionId(1),
            state: RunState::Running,
            trigger: TriggerInfo {
                kind: TriggerKind::Manual,
                user: None,
                details: Value::Null,
            },
            user: None,
            inputs: Value::Null,
            retry_of: None,
            created_at: 0,
            started_at: Some(0),
            finished_at: None,
            deadline: None,
            wake_at: None,
            error: None,
        },
        version,
        nodes,
    )
}
