//! One run's driver: starts ready nodes, records completions, retries with
//! backoff, skips what cannot run, and stops when nothing is left to do now
//! (the run finished, or every remaining node waits for a time or a person).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_shared::event::Event;
use sluice_shared::model::node::ApprovalNode;
use sluice_shared::model::{Node, NodeKind};
use sluice_shared::run::{AttemptState, NodeState, Resolution, RunId, RunState};
use sluice_shared::template::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::approval::{self, Step};
use super::context::{self, RunFacts};
use super::dispatch::{Waiting, Worker};
use super::{Command, DriverExit, EngineError, Inner, LoadedVersion, backoff, now_ms};
use crate::nodes::{self, LogSink, NodeContext, NodeError, NoteSlot, Outcome};
use crate::notify::approval::ApprovalEvent;
use crate::store::{Change, NewRun, NodeChange, RunChange, RunRecord};

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
    record: RunRecord,
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
    fn node(&self, i: usize) -> &Node {
        &self.version.pipeline.nodes[i]
    }

    fn set(&mut self, i: usize, change: NodeChange) {
        let id = self.node(i).id.clone();
        let rt = &mut self.nodes[i];
        if let Some(s) = change.state {
            rt.state = s;
        }
        if let Some(a) = change.attempts {
            rt.attempts = a;
        }
        if let Some(o) = &change.output {
            rt.output = o.clone();
        }
        if let Some(e) = &change.error {
            rt.error = e.clone();
        }
        if let Some(w) = change.wake_at {
            rt.wake_at = w;
        }
        if let Some(state) = change.state {
            self.events.push(Event::NodeState {
                run: self.id,
                node: id.clone(),
                state,
                attempt: rt.attempts,
                error: if state == NodeState::Failed {
                    rt.error.clone()
                } else {
                    None
                },
            });
            if let Some(text) = outcome_note(state, rt.error.as_deref()) {
                let attempt = rt.attempts;
                self.notes.push((i, attempt, NoteSlot::Outcome, text));
            }
        }
        self.push_node(id, change);
    }

    /// Queues a node change, folded into the pending one of the same node when
    /// no statement lies between: one UPDATE per row and flush.
    fn push_node(&mut self, id: String, change: NodeChange) {
        let pending = self.foldable().find_map(|c| match c {
            Change::Node(_, n, prev) if *n == id => Some(prev),
            _ => None,
        });
        match pending {
            Some(prev) => prev.absorb(change),
            None => self.changes.push(Change::Node(self.id, id, change)),
        }
    }

    /// The pending changes after the last statement, newest first: a change
    /// of a row among them can take a later change of that row.
    fn foldable(&mut self) -> impl Iterator<Item = &mut Change> {
        self.changes
            .iter_mut()
            .rev()
            .take_while(|c| !matches!(c, Change::Sql(_)))
    }

    fn attempt_start(&mut self, i: usize, attempt: u32) {
        self.changes.push(Change::AttemptStart(
            self.id,
            self.node(i).id.clone(),
            attempt,
        ));
    }

    fn attempt_end(&mut self, i: usize, attempt: u32, state: AttemptState, error: Option<String>) {
        self.changes.push(Change::AttemptEnd(
            self.id,
            self.node(i).id.clone(),
            attempt,
            state,
            error,
        ));
    }

    fn set_run(&mut self, change: RunChange) {
        if let Some(state) = change.state {
            self.record.state = state;
            let error = change.error.clone().flatten();
            self.events.push(Event::RunState {
                run: self.id,
                state,
                error,
            });
        }
        let pending = self.foldable().find_map(|c| match c {
            Change::Run(_, prev) => Some(prev),
            _ => None,
        });
        match pending {
            // One UPDATE of the run per flush (see `push_node`).
            Some(prev) => prev.absorb(change),
            None => self.changes.push(Change::Run(self.id, change)),
        }
    }

    /// Commits the pending changes, writes the notes on them, then announces them.
    async fn flush(&mut self, inner: &Inner) -> Result<(), EngineError> {
        let committed = !self.changes.is_empty();
        // Attempts that end in this flush, counted once it is committed.
        let ended: Vec<(usize, AttemptState)> = self
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::AttemptEnd(_, node, _, state, _) => self
                    .version
                    .pipeline
                    .nodes
                    .iter()
                    .position(|n| &n.id == node)
                    .map(|i| (i, *state)),
                _ => None,
            })
            .collect();
        if committed {
            inner.store.apply(std::mem::take(&mut self.changes)).await?;
        }
        // In order, and before the run's end below waits for the log to settle.
        for (i, attempt, slot, text) in std::mem::take(&mut self.notes) {
            self.log_sink(inner, i, attempt)
                .closing_note(slot, &text)
                .await;
        }
        if !committed {
            return Ok(());
        }
        for (i, state) in ended {
            inner
                .opts
                .telemetry
                .attempt_finished(self.node(i).kind.name(), state);
        }
        let finished = self.events.iter().find_map(|e| match e {
            Event::RunState { state, .. } if state.is_finished() => Some(*state),
            _ => None,
        });
        if let Some(state) = finished {
            let took = self.record.started_at.and_then(|at| {
                u64::try_from(jiff::Timestamp::now().as_millisecond() - at)
                    .ok()
                    .map(std::time::Duration::from_millis)
            });
            inner
                .opts
                .telemetry
                .run_finished(&self.record.pipeline, state, took);
        }
        let ends_run = finished.is_some();
        if ends_run {
            // Followers stop at the run's end: its last lines must be out first.
            inner.logs_settled().await;
        }
        for e in self.events.drain(..) {
            inner.publish(e);
        }
        Ok(())
    }

    fn facts(&self) -> RunFacts<'_> {
        RunFacts {
            id: self.id.0,
            started_at: self.record.started_at,
            retry_of: self.record.retry_of.map(|r| r.0),
            trigger: &self.record.trigger,
            inputs: &self.record.inputs,
            pipeline: &self.version.pipeline,
            version: self.version.version,
        }
    }

    fn node_context(
        &self,
        inner: &Inner,
        i: usize,
        attempt: u32,
        cancel: CancellationToken,
    ) -> NodeContext {
        let upstream: Vec<(String, Value)> = (0..self.nodes.len())
            .filter(|&j| self.version.upstream[i].contains(j))
            .filter(|&j| self.nodes[j].state == NodeState::Succeeded)
            .map(|j| {
                (
                    self.node(j).id.clone(),
                    self.nodes[j].output.clone().unwrap_or(Value::Null),
                )
            })
            .collect();
        let plain = context::build(&self.facts(), upstream);
        let node = self.node(i);
        NodeContext {
            run: self.id,
            node: node.id.clone(),
            attempt,
            template: Context::from_json_with(&plain, "secrets", &inner.secrets_json),
            context_json: plain,
            templates: Arc::clone(&inner.templates),
            log: LogSink::new(
                self.id,
                &node.id,
                attempt,
                inner.logs.clone(),
                Arc::clone(&inner.redactor),
            ),
            cancel,
            redactor: Arc::clone(&inner.redactor),
            http: inner.http.clone(),
            plugins_dir: inner.opts.plugins_dir.clone(),
            retry_if: node.retry_if.clone().unwrap_or_default(),
            timeout: node.timeout.map(|t| t.std()),
            base_env: inner.opts.base_env.clone(),
            llm: Arc::clone(&inner.opts.llm),
            notifier: Arc::clone(&inner.opts.notifier),
            on_spawn: Some(process_recorder(inner, self.id, &node.id, attempt)),
            marker: Some(nodes::attempt_marker(
                self.id,
                self.record.created_at,
                &node.id,
                attempt,
            )),
        }
    }

    /// Marks pending nodes whose needs did not all succeed as skipped, and
    /// returns the nodes that can start now. Waiting nodes past their deadline
    /// become ready (backoff) or succeed (delay).
    fn ready(&mut self, inner: &Inner, now: i64) -> Vec<usize> {
        let mut ready = Vec::new();
        let order = self.version.order.clone();
        for i in order {
            match self.nodes[i].state {
                NodeState::Pending => {
                    let deps = self.version.graph.deps(i).to_vec();
                    if deps.iter().any(|&d| !self.nodes[d].state.is_finished()) {
                        continue;
                    }
                    if let Some(&d) = deps.iter().find(|&&d| {
                        self.nodes[d].state != NodeState::Succeeded || self.nodes[d].stopped
                    }) {
                        let why = if self.nodes[d].stopped {
                            format!("filter '{}' stopped the run here", self.node(d).id)
                        } else {
                            format!("needs '{}', which {}", self.node(d).id, self.nodes[d].state)
                        };
                        self.set(
                            i,
                            NodeChange {
                                state: Some(NodeState::Skipped),
                                error: Some(Some(why)),
                                finished_at: Some(Some(now)),
                                ..Default::default()
                            },
                        );
                        continue;
                    }
                    if let Some(expr) = self.node(i).when.clone() {
                        let attempt = self.nodes[i].attempts + 1;
                        let ctx = self.node_context(inner, i, attempt, CancellationToken::new());
                        match inner.templates.eval_condition(&expr, &ctx.template) {
                            Ok(true) => {}
                            Ok(false) => {
                                self.set(
                                    i,
                                    NodeChange {
                                        state: Some(NodeState::Skipped),
                                        error: Some(Some("`when` was false".into())),
                                        finished_at: Some(Some(now)),
                                        ..Default::default()
                                    },
                                );
                                continue;
                            }
                            Err(e) => {
                                let msg = format!(
                                    "cannot evaluate `when`: {}",
                                    inner.redactor.redact(&e.message)
                                );
                                self.attempt_end(
                                    i,
                                    attempt,
                                    AttemptState::Failed,
                                    Some(msg.clone()),
                                );
                                self.set(
                                    i,
                                    NodeChange {
                                        state: Some(NodeState::Failed),
                                        attempts: Some(attempt),
                                        error: Some(Some(msg)),
                                        finished_at: Some(Some(now)),
                                        ..Default::default()
                                    },
                                );
                                continue;
                            }
                        }
                    }
                    ready.push(i);
                }
                NodeState::Waiting
                    if self.nodes[i].recheck || self.nodes[i].wake_at.is_some_and(|w| w <= now) =>
                {
                    let is_delay = matches!(self.node(i).kind, NodeKind::Delay(_));
                    if is_delay && self.nodes[i].output.is_some() {
                        let attempt = self.nodes[i].attempts;
                        self.attempt_end(i, attempt, AttemptState::Succeeded, None);
                        self.set(
                            i,
                            NodeChange {
                                state: Some(NodeState::Succeeded),
                                wake_at: Some(None),
                                finished_at: Some(Some(now)),
                                ..Default::default()
                            },
                        );
                    } else {
                        ready.push(i);
                    }
                }
                _ => {}
            }
        }
        ready
    }

    /// Whom the run's LLM tokens count against: its trigger's user, else the
    /// pipeline's owner.
    fn llm_user(&self) -> String {
        let user = self.record.trigger.user.as_deref();
        let user = user.or(self.version.pipeline.owner.as_deref());
        crate::limits::user_key(user).to_owned()
    }

    /// Charges the tokens an `llm` attempt spent (even a failed one) to the
    /// run's user and pipeline, committed with the attempt's end.
    fn charge_llm(&mut self, inner: &Inner, result: &Result<Outcome, NodeError>) {
        let Some(usage) = nodes::llm::usage_of(result) else {
            return;
        };
        let user = self.llm_user();
        let (day, _) = inner.opts.limits.daily(&user, jiff::Timestamp::now());
        let charge = crate::store::llm_usage::LlmCharge {
            user,
            day: day.day,
            pipeline: self.record.pipeline.clone(),
            tokens_in: usage.tokens_in,
            tokens_out: usage.tokens_out,
            estimated: usage.estimated,
        };
        self.changes.push(charge.into_change());
    }

    /// Why an `llm` node may not start now: its user spent the day's LLM
    /// tokens (the trigger was checked too, but a run's nodes can outlast it).
    async fn llm_over_cap(&mut self, inner: &Inner) -> Result<Option<String>, EngineError> {
        let limits = Arc::clone(&inner.opts.limits);
        let user = self.llm_user();
        let Some(cap) = limits.config().for_user(&user).daily_llm_tokens else {
            return Ok(None);
        };
        // Tokens charged by attempts that just ended must count.
        self.flush(inner).await?;
        let user = user.as_str();
        let now = jiff::Timestamp::now();
        let (charge, next_day) = limits.daily(user, now);
        let used = inner.store.usage(user, &charge.day).await?.llm_tokens;
        if u64::try_from(used).unwrap_or(0) < cap {
            return Ok(None);
        }
        let refusal = limits.daily_refusal(
            crate::limits::LimitKind::DailyLlmTokens,
            user,
            &self.record.pipeline,
            (used, cap),
            (now, next_day),
        );
        Ok(Some(refusal.message))
    }

    /// Records how an attempt ended: success, wait, retry after backoff, or failure.
    fn complete(
        &mut self,
        inner: &Inner,
        i: usize,
        attempt: u32,
        result: Result<Outcome, NodeError>,
        cancelled: bool,
    ) {
        let now = now_ms();
        if matches!(self.node(i).kind, NodeKind::Llm(_)) {
            self.charge_llm(inner, &result);
        }
        match result {
            // A cancelled attempt is cancelled whatever it returned.
            _ if cancelled => {
                self.attempt_end(
                    i,
                    attempt,
                    AttemptState::Cancelled,
                    Some("cancelled".into()),
                );
                self.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Cancelled),
                        error: Some(Some("cancelled".into())),
                        finished_at: Some(Some(now)),
                        ..Default::default()
                    },
                );
            }
            Ok(Outcome::Done(out)) | Ok(Outcome::Stop(out)) => {
                let stop = matches!(out.get("passed"), Some(Value::Bool(false)))
                    && matches!(self.node(i).kind, NodeKind::Filter(_));
                let out = inner.redactor.redact_json(out);
                self.attempt_end(i, attempt, AttemptState::Succeeded, None);
                self.nodes[i].stopped = stop;
                self.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Succeeded),
                        output: Some(Some(out)),
                        error: Some(None),
                        finished_at: Some(Some(now)),
                        wake_at: Some(None),
                        ..Default::default()
                    },
                );
            }
            Ok(Outcome::WaitUntil(until, out)) => {
                let at = until.as_millisecond();
                self.set(
                    i,
                    NodeChange {
                        state: Some(NodeState::Waiting),
                        output: Some(Some(out)),
                        wake_at: Some(Some(at)),
                        ..Default::default()
                    },
                );
            }
            Err(e) => {
                let message = inner.redactor.redact(&e.message).into_owned();
                let output = e.output.clone().map(|o| inner.redactor.redact_json(o));
                self.attempt_end(i, attempt, AttemptState::Failed, Some(message.clone()));
                let policy = self.version.pipeline.retry_for(self.node(i));
                if e.retryable && attempt < policy.attempts {
                    let wait = backoff::delay(&policy, attempt + 1, e.retry_after);
                    let wake =
                        now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2));
                    let note = format!(
                        "attempt {attempt} failed: {message}; retrying in {} (attempt {} of {})",
                        sluice_shared::Duration(std::time::Duration::from_millis(
                            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                        )),
                        attempt + 1,
                        policy.attempts
                    );
                    self.notes.push((i, attempt, NoteSlot::Retry, note));
                    self.set(
                        i,
                        NodeChange {
                            state: Some(NodeState::Waiting),
                            output: Some(output),
                            error: Some(Some(message)),
                            wake_at: Some(Some(wake)),
                            ..Default::default()
                        },
                    );
                } else {
                    self.set(
                        i,
                        NodeChange {
                            state: Some(NodeState::Failed),
                            output: Some(output),
                            error: Some(Some(message)),
                            finished_at: Some(Some(now)),
                            wake_at: Some(None),
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }

    fn log_sink(&self, inner: &Inner, i: usize, attempt: u32) -> LogSink {
        LogSink::new(
            self.id,
            &self.node(i).id,
            attempt,
            inner.logs.clone(),
            Arc::clone(&inner.redactor),
        )
    }

    /// Opens or looks at approval node `i`; true when it finished or must be opened again.
    async fn approval_step(
        &mut self,
        inner: &Inner,
        i: usize,
        a: &ApprovalNode,
    ) -> Result<bool, EngineError> {
        let node_id = self.node(i).id.clone();
        if self.nodes[i].state == NodeState::Pending {
            let attempt = self.nodes[i].attempts + 1;
            let ctx = self.node_context(inner, i, attempt, CancellationToken::new());
            let opening = approval::Opening {
                run: self.id,
                pipeline: &self.record.pipeline,
                user: self.record.trigger.user.as_deref(),
                node_id: &node_id,
                attempt,
                timeout: self.node(i).timeout,
            };
            let opened = approval::open(inner, &opening, a, &ctx).await?;
            self.attempt_start(i, attempt);
            return Ok(match opened.step {
                Step::Wait(wake) => {
                    self.set(i, approval::waiting(attempt, wake, true));
                    if opened.existed {
                        // Opened before a crash: look at what it holds now.
                        self.nodes[i].recheck = true;
                        return Ok(true);
                    }
                    if a.notify.is_some()
                        && let Some(info) = inner.store.approval(opened.id).await?
                    {
                        approval::announce(inner, a, &ctx, &info, ApprovalEvent::Requested);
                    }
                    self.events.push(Event::ApprovalRequested {
                        approval: opened.id,
                        run: self.id,
                        node: node_id,
                        pipeline: self.record.pipeline.clone(),
                        deadline: opened.deadline,
                    });
                    false
                }
                Step::Done(result) => {
                    self.set(
                        i,
                        NodeChange {
                            attempts: Some(attempt),
                            started_at: Some(now_ms()),
                            ..Default::default()
                        },
                    );
                    self.complete(inner, i, attempt, result, false);
                    true
                }
                Step::TimedOut(msg) => {
                    self.set(
                        i,
                        NodeChange {
                            attempts: Some(attempt),
                            started_at: Some(now_ms()),
                            ..Default::default()
                        },
                    );
                    self.complete(inner, i, attempt, Err(NodeError::fatal(msg)), false);
                    true
                }
            });
        }
        let attempt = self.nodes[i].attempts;
        let reminder_due = self.nodes[i].wake_at.is_some_and(|w| w <= now_ms());
        self.nodes[i].recheck = false;
        let log = self.log_sink(inner, i, attempt);
        let (step, events, notice) =
            approval::check(inner, self.id, &node_id, attempt, reminder_due, &log).await?;
        self.events.extend(events);
        if let Some((info, event)) = notice
            && a.notify.is_some()
        {
            let ctx = self.node_context(inner, i, attempt, CancellationToken::new());
            approval::announce(inner, a, &ctx, &info, event);
        }
        Ok(match step {
            Step::Wait(wake) => {
                if wake != self.nodes[i].wake_at {
                    self.set(
                        i,
                        NodeChange {
                            wake_at: Some(wake),
                            ..Default::default()
                        },
                    );
                }
                false
            }
            Step::Done(result) => {
                self.complete(inner, i, attempt, result, false);
                true
            }
            Step::TimedOut(msg) => {
                self.attempt_end(i, attempt, AttemptState::Failed, Some(msg.clone()));
                let policy = self.version.pipeline.retry_for(self.node(i));
                let again = attempt < policy.attempts;
                if again {
                    self.notes.push((
                        i,
                        attempt,
                        NoteSlot::Retry,
                        format!(
                            "{msg}; asking again (attempt {} of {})",
                            attempt + 1,
                            policy.attempts
                        ),
                    ));
                }
                self.set(
                    i,
                    NodeChange {
                        state: Some(if again {
                            NodeState::Pending
                        } else {
                            NodeState::Failed
                        }),
                        error: Some(Some(msg)),
                        wake_at: Some(None),
                        finished_at: Some((!again).then(now_ms)),
                        ..Default::default()
                    },
                );
                true
            }
        })
    }

    fn apply_command(&mut self, cmd: Command) {
        let (node_id, resolution, reply) = match cmd {
            Command::Resolve(node_id, resolution, reply) => (node_id, resolution, reply),
            Command::Recheck(node_id) => {
                if let Some(rt) = self
                    .version
                    .pipeline
                    .nodes
                    .iter()
                    .position(|n| n.id == node_id)
                    .and_then(|i| self.nodes.get_mut(i))
                {
                    rt.recheck = true;
                }
                return;
            }
        };
        let Some(i) = self
            .version
            .pipeline
            .nodes
            .iter()
            .position(|n| n.id == node_id)
        else {
            let _ = reply.send(Err(EngineError::Conflict(format!(
                "run {} has no node '{node_id}'",
                self.id
            ))));
            return;
        };
        if self.nodes[i].state != NodeState::NeedsDecision {
            let _ = reply.send(Err(EngineError::Conflict(format!(
                "node '{node_id}' of run {} is {}, not needs_decision",
                self.id, self.nodes[i].state
            ))));
            return;
        }
        let now = now_ms();
        match resolution {
            Resolution::Retry => self.set(
                i,
                NodeChange {
                    state: Some(NodeState::Pending),
                    ..Default::default()
                },
            ),
            Resolution::Succeed { output } => self.set(
                i,
                NodeChange {
                    state: Some(NodeState::Succeeded),
                    output: Some(Some(output)),
                    error: Some(None),
                    finished_at: Some(Some(now)),
                    ..Default::default()
                },
            ),
            Resolution::Fail { reason } => self.set(
                i,
                NodeChange {
                    state: Some(NodeState::Failed),
                    error: Some(Some(
                        reason.unwrap_or_else(|| "failed by an operator after a crash".into()),
                    )),
                    finished_at: Some(Some(now)),
                    ..Default::default()
                },
            ),
        }
        let _ = reply.send(Ok(()));
    }

    fn next_wake(&self) -> Option<i64> {
        let nodes = self
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Waiting)
            .filter_map(|n| n.wake_at)
            .min();
        match (nodes, self.record.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn finish(&mut self, state: RunState, error: Option<String>) {
        let now = now_ms();
        if self
            .version
            .pipeline
            .nodes
            .iter()
            .any(|n| matches!(n.kind, NodeKind::Approval(_)))
        {
            // A run that ends takes its undecided approvals with it.
            self.changes.push(Change::Sql(vec![
                crate::store::Store::cancel_approvals_sql(self.id, now),
            ]));
        }
        if state != RunState::Succeeded {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].state.is_finished() {
                    if matches!(self.nodes[i].state, NodeState::Waiting)
                        && matches!(
                            self.node(i).kind,
                            NodeKind::Delay(_) | NodeKind::Approval(_)
                        )
                    {
                        let attempt = self.nodes[i].attempts;
                        self.attempt_end(i, attempt, AttemptState::Cancelled, error.clone());
                    }
                    let s = if state == RunState::Cancelled {
                        NodeState::Cancelled
                    } else {
                        NodeState::Skipped
                    };
                    self.set(
                        i,
                        NodeChange {
                            state: Some(s),
                            error: Some(error.clone()),
                            wake_at: Some(None),
                            finished_at: Some(Some(now)),
                            ..Default::default()
                        },
                    );
                }
            }
        }
        self.set_run(RunChange {
            state: Some(state),
            finished_at: Some(now),
            wake_at: Some(None),
            error: Some(error),
            ..Default::default()
        });
    }
}

/// The line that ends a node's log, once the node reached `state` (None while it is not finished).
pub(crate) fn outcome_note(state: NodeState, error: Option<&str>) -> Option<String> {
    let why = error.filter(|e| !e.is_empty());
    Some(match (state, why) {
        (NodeState::Succeeded, _) => "node succeeded".to_owned(),
        (NodeState::Failed, Some(e)) => format!("node failed: {e}"),
        (NodeState::Failed, None) => "node failed".to_owned(),
        (NodeState::Skipped, Some(e)) => format!("node skipped: {e}"),
        (NodeState::Skipped, None) => "node skipped".to_owned(),
        (NodeState::Cancelled, Some(e)) if e != "cancelled" => format!("node cancelled: {e}"),
        (NodeState::Cancelled, _) => "node cancelled".to_owned(),
        _ => return None,
    })
}

/// A run this process has just committed, handed to its first driver so that
/// loading it reads nothing back from the store.
pub(crate) struct Created {
    pub id: RunId,
    /// The `created_at` it was stored with.
    pub created_at: i64,
    /// What was stored (queued; nodes pending, or succeeded when reused).
    pub run: Arc<NewRun>,
}

/// A node's runtime state from what is stored of it.
fn node_rt(
    n: &Node,
    state: NodeState,
    attempts: u32,
    output: Option<Value>,
    error: Option<String>,
    wake_at: Option<i64>,
) -> NodeRt {
    let stopped = matches!(n.kind, NodeKind::Filter(_))
        && matches!(
            output.as_ref().and_then(|o| o.get("passed")),
            Some(Value::Bool(false))
        );
    NodeRt {
        state,
        attempts,
        error,
        wake_at,
        recheck: matches!(n.kind, NodeKind::Approval(_)) && state == NodeState::Waiting,
        output,
        stopped,
    }
}

async fn load(
    inner: &Inner,
    id: RunId,
    created: Option<Created>,
) -> Result<Option<Run>, EngineError> {
    if let Some(created) = created {
        return load_created(inner, created).await.map(Some);
    }
    let Some(record) = inner.store.run(id).await? else {
        return Ok(None);
    };
    let version = inner.version(record.version_id).await?;
    let stored = inner.store.nodes(id).await?;
    let nodes = version
        .pipeline
        .nodes
        .iter()
        .map(|n| {
            let s = stored.iter().find(|r| r.node_id == n.id);
            node_rt(
                n,
                s.map_or(NodeState::Pending, |r| r.state),
                s.map_or(0, |r| r.attempts),
                s.and_then(|r| r.output.clone()),
                s.and_then(|r| r.error.clone()),
                s.and_then(|r| r.wake_at),
            )
        })
        .collect();
    Ok(Some(Run {
        id,
        record,
        version,
        nodes,
        changes: Vec::new(),
        events: Vec::new(),
        notes: Vec::new(),
    }))
}

/// The run as the store holds it right after its creation, built from what was
/// written (the same record `load` would read back).
async fn load_created(inner: &Inner, created: Created) -> Result<Run, EngineError> {
    let version = inner.version(created.run.version_id).await?;
    let NewRun {
        pipeline,
        version_id,
        trigger,
        inputs,
        retry_of,
        deadline,
        nodes: mut new_nodes,
    } = Arc::unwrap_or_clone(created.run);
    let record = RunRecord {
        id: created.id,
        pipeline,
        version_id,
        state: RunState::Queued,
        user: trigger.user.clone(),
        trigger,
        inputs,
        retry_of,
        created_at: created.created_at,
        started_at: None,
        finished_at: None,
        deadline,
        wake_at: None,
        error: None,
    };
    let nodes = version
        .pipeline
        .nodes
        .iter()
        .map(|n| {
            let reused = new_nodes
                .iter_mut()
                .find(|r| r.id == n.id)
                .and_then(|r| r.reused.take());
            match reused {
                Some((_, output)) => node_rt(n, NodeState::Succeeded, 0, Some(output), None, None),
                None => node_rt(n, NodeState::Pending, 0, None, None, None),
            }
        })
        .collect();
    Ok(Run {
        id: created.id,
        record,
        version,
        nodes,
        changes: Vec::new(),
        events: Vec::new(),
        notes: Vec::new(),
    })
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

async fn drive_inner(
    inner: &Arc<Inner>,
    id: RunId,
    cancel: &CancellationToken,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    created: Option<Created>,
) -> Result<DriverExit, EngineError> {
    let Some(mut run) = load(inner, id, created).await? else {
        return Ok(DriverExit::Done);
    };
    // Started before recovery reached this run (by a cancel or a decision):
    // its interrupted attempts are repaired first, then it is read again.
    if super::recovery::repair_if_pending(inner, &run.record)
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
    // Node attempts are stopped through this token: by a cancel, a timeout of the run, or shutdown.
    let kill = CancellationToken::new();
    let mut running: JoinSet<Finished> = JoinSet::new();
    let max_active = run
        .version
        .pipeline
        .max_active_nodes
        .map_or(usize::MAX, |m| m as usize);
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    // The run's place in the queue for a worker, and a worker handed to it that
    // no node has taken yet (see dispatch.rs): kept across turns of the loop, so
    // the run never loses its place or a worker it was given.
    let mut place: Option<Pin<Box<Waiting>>> = None;
    let mut held: Option<Worker> = None;
    let dispatch_user = {
        let user = run.record.trigger.user.as_deref();
        crate::limits::user_key(user.or(run.version.pipeline.owner.as_deref())).to_owned()
    };

    // A queued run waits for a concurrency slot first; a run already running (picked
    // up after a restart) or resuming from a wait takes its slot at once (admission.rs).
    if matches!(run.record.state, RunState::Running | RunState::Waiting) {
        inner.admission.hold(&run.record);
    }
    if run.record.state == RunState::Queued
        && !cancel.is_cancelled()
        && !super::admission::wait_for_slot(inner, &run.record, &run.version.pipeline, cancel).await
        && !cancel.is_cancelled()
    {
        return Ok(DriverExit::Stopped);
    }
    if run.record.state == RunState::Queued && !cancel.is_cancelled() {
        inner.opts.limits.backlog().leave(id);
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
    } else if run.record.state == RunState::Waiting {
        run.set_run(RunChange {
            state: Some(RunState::Running),
            wake_at: Some(None),
            ..Default::default()
        });
    }

    loop {
        while let Ok(cmd) = commands.try_recv() {
            run.apply_command(cmd);
        }
        let now = now_ms();
        if cancel.is_cancelled() {
            kill.cancel();
            while let Some(done) = running.join_next().await {
                if let Ok((i, attempt, result)) = done {
                    run.complete(inner, i, attempt, result, true);
                }
            }
            run.finish(RunState::Cancelled, Some("cancelled".into()));
            run.flush(inner).await?;
            return Ok(DriverExit::Done);
        }
        if run.record.deadline.is_some_and(|d| d <= now) {
            kill.cancel();
            while let Some(done) = running.join_next().await {
                if let Ok((i, attempt, result)) = done {
                    run.complete(inner, i, attempt, result, true);
                }
            }
            let limit = run
                .version
                .pipeline
                .timeout
                .map_or_else(String::new, |t| format!(" after {t}"));
            run.finish(RunState::Failed, Some(format!("run timed out{limit}")));
            run.flush(inner).await?;
            return Ok(DriverExit::Done);
        }
        let stopping = inner.shutdown.is_cancelled();
        if stopping && grace_deadline.is_none() {
            grace_deadline = Some(tokio::time::Instant::now() + inner.opts.shutdown_grace);
        }

        // Start what can start (instant kinds complete right here). An attempt
        // is committed as started before its work begins, so a crash can never
        // hide an execution from the next start.
        let mut to_spawn: Vec<(usize, u32, Node, NodeContext, Worker)> = Vec::new();
        // Set when a ready node found no free worker: it stays pending (nothing is
        // recorded as started) until a worker frees up.
        let mut starved = false;
        if !stopping {
            loop {
                let ready = run.ready(inner, now_ms());
                let mut progressed = false;
                for i in ready {
                    let node = run.node(i).clone();
                    // Approvals need no worker and no active-node slot.
                    if let NodeKind::Approval(a) = &node.kind {
                        progressed |= run.approval_step(inner, i, a).await?;
                        continue;
                    }
                    if running.len() + to_spawn.len() >= max_active {
                        continue;
                    }
                    let attempt = run.nodes[i].attempts + 1;
                    // A failed look at the budget must not stop the run's other attempts:
                    // the trigger was checked, so the node goes ahead.
                    let over_cap = if matches!(node.kind, NodeKind::Llm(_)) {
                        run.llm_over_cap(inner).await.unwrap_or_else(|e| {
                            tracing::warn!(run = %run.id, error = %e, "cannot check the LLM token budget");
                            None
                        })
                    } else {
                        None
                    };
                    if let Some(why) = over_cap {
                        run.attempt_start(i, attempt);
                        run.set(
                            i,
                            NodeChange {
                                attempts: Some(attempt),
                                started_at: Some(now_ms()),
                                ..Default::default()
                            },
                        );
                        run.complete(inner, i, attempt, Err(NodeError::fatal(why)), false);
                        progressed = true;
                        continue;
                    }
                    if nodes::is_instant(&node.kind) {
                        let ctx = run.node_context(inner, i, attempt, kill.child_token());
                        run.set(
                            i,
                            NodeChange {
                                attempts: Some(attempt),
                                started_at: Some(now_ms()),
                                ..Default::default()
                            },
                        );
                        if matches!(node.kind, NodeKind::Delay(_)) {
                            run.attempt_start(i, attempt);
                        }
                        let result = nodes::execute(&node.kind, &ctx).await;
                        run.complete(inner, i, attempt, result, false);
                        progressed = true;
                    } else {
                        // Nodes after it that need no worker (a delay, a
                        // transform, an approval) still go ahead.
                        let Some(permit) = next_worker(inner, &mut held, &mut place) else {
                            starved = true;
                            continue;
                        };
                        run.attempt_start(i, attempt);
                        run.set(
                            i,
                            NodeChange {
                                state: Some(NodeState::Running),
                                attempts: Some(attempt),
                                started_at: Some(now_ms()),
                                wake_at: Some(None),
                                ..Default::default()
                            },
                        );
                        let ctx = run.node_context(inner, i, attempt, kill.child_token());
                        to_spawn.push((i, attempt, node, ctx, permit));
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
        // A worker no node took goes on to the next run; a run that found none
        // keeps (or takes) its place in the queue.
        drop(held.take());
        if starved {
            if place.is_none() {
                place = Some(Box::pin(inner.dispatch.wait(&dispatch_user)));
            }
        } else {
            place = None;
        }
        // When nothing runs now, the decision below (finish or wait) commits in the
        // same transaction as the completions (and the admission): one write per
        // run of instant nodes. A starved run commits what it has before it waits,
        // so its slot is seen held by a running run.
        if !to_spawn.is_empty() || !running.is_empty() || stopping || starved {
            run.flush(inner).await?;
        }
        for (i, attempt, node, ctx, permit) in to_spawn {
            let timeout = node.timeout.map(|t| t.std());
            running.spawn(async move {
                let _permit = permit;
                let result = run_attempt(node.kind, ctx, timeout).await;
                (i, attempt, result)
            });
        }

        if running.is_empty() {
            if stopping {
                return Ok(DriverExit::Stopped);
            }
            if starved {
                // Every worker is busy with other runs: wait for one (or the run's
                // deadline, a wait of another node coming due, a cancel, a stop),
                // then try again.
                let until_deadline = starved_wake(&run).unwrap_or(Duration::from_secs(3600));
                // Commands are taken while waiting: an operator's resolve or a
                // decided approval is answered now, not when a worker frees up.
                let mut given = None;
                tokio::select! {
                    w = granted(&mut place) => given = Some(w),
                    () = tokio::time::sleep(until_deadline) => {}
                    () = cancel.cancelled() => {}
                    () = inner.shutdown.cancelled() => {}
                    Some(cmd) = commands.recv() => run.apply_command(cmd),
                }
                if given.is_some() {
                    held = given;
                    place = None;
                }
                continue;
            }
            if run.nodes.iter().all(|n| n.state.is_finished()) {
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
                run.flush(inner).await?;
                return Ok(DriverExit::Done);
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
                    return Ok(DriverExit::Waiting(wake));
                }
                continue;
            }
            // Pending nodes with nothing running and nothing waiting cannot happen in a DAG;
            // refuse to spin.
            run.finish(
                RunState::Failed,
                Some("internal error: run cannot make progress".into()),
            );
            run.flush(inner).await?;
            return Ok(DriverExit::Done);
        }

        // Wait for a completion, a command, a cancel, a wake-up or the end of the grace period.
        let wake_in = run
            .next_wake()
            .map(|w| Duration::from_millis(u64::try_from(w - now_ms()).unwrap_or(0)));
        let wake_in = if starved { starved_wake(&run) } else { wake_in };
        let sleep = tokio::time::sleep(wake_in.unwrap_or(Duration::from_secs(3600)));
        let grace = async {
            match grace_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let mut given = None;
        tokio::select! {
            w = granted(&mut place) => given = Some(w),
            done = running.join_next() => {
                if let Some(Ok((i, attempt, result))) = done {
                    if inner.shutdown.is_cancelled() && kill.is_cancelled() {
                        // Stopped by shutdown: leave the attempt recorded as running for the next start.
                        continue;
                    }
                    run.complete(inner, i, attempt, result, false);
                }
            }
            Some(cmd) = commands.recv() => run.apply_command(cmd),
            () = cancel.cancelled() => {}
            () = sleep => {}
            () = inner.shutdown.cancelled(), if grace_deadline.is_none() => {}
            () = grace => {
                kill.cancel();
                while running.join_next().await.is_some() {}
                return Ok(DriverExit::Stopped);
            }
        }
        if given.is_some() {
            held = given;
            place = None;
        }
    }
}

/// How long a run that waits for a worker may sleep: until its deadline or
/// the next wait of another node (a delay ending, an approval expiring, a
/// backoff ending) — those need no worker. Waits already due are left out:
/// what they made ready is what waits for the worker, and waking for them
/// again would only spin.
fn starved_wake(run: &Run) -> Option<Duration> {
    let now = now_ms();
    let next = run
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Waiting)
        .filter_map(|n| n.wake_at)
        .filter(|&w| w > now)
        .min();
    let at = match (next, run.record.deadline) {
        (Some(w), Some(d)) => Some(w.min(d)),
        (w, d) => w.or(d),
    }?;
    Some(Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
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
