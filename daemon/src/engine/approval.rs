//! Approval nodes. Opening one records a pending row and leaves the node
//! `waiting` with a wake-up at its next reminder or deadline; the run then
//! holds no task. A decision is a compare-and-set on that row (store/approvals.rs)
//! followed by a nudge to the run; the expiry is the same compare-and-set made
//! by the driver when the deadline wakes it. Whichever lands first wins.

use serde_json::{Value, json};
use sluice_shared::event::Event;
use sluice_shared::model::node::{ApprovalNode, OnTimeout};
use sluice_shared::run::{NodeState, RunId, TriggerInfo, TriggerKind};
use sluice_shared::template::Escape;
use std::collections::BTreeSet;

use super::{Command, Engine, EngineError, Inner, now_ms};
use crate::nodes::{self, NodeError, NoteSlot, Outcome};
use crate::notify::approval::{ApprovalEvent, ApprovalNotice};
use crate::store::NodeChange;
use crate::store::approvals::{ApprovalRecord, NewApproval, Vote};

/// Who decides, as the socket identified them.
#[derive(Clone, Debug)]
pub struct Decider {
    /// User name.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

fn ms(d: sluice_shared::Duration) -> i64 {
    i64::try_from(d.std().as_millis()).unwrap_or(i64::MAX / 4)
}

fn when(at_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(at_ms).map_or_else(|_| at_ms.to_string(), |t| t.to_string())
}

/// Says why an approval can no longer be decided.
fn settled(a: &ApprovalRecord) -> String {
    let at = a.decided_at.map(when).unwrap_or_default();
    match a.state.as_str() {
        "approved" | "rejected" => format!(
            "approval #{} is already {} by {} at {at}",
            a.id,
            a.state,
            a.decided_by.as_deref().unwrap_or("?")
        ),
        "expired" => format!(
            "approval #{} expired at {at} with no decision (on_timeout made it {})",
            a.id,
            a.decision.as_deref().unwrap_or("a failure")
        ),
        "cancelled" => format!("approval #{} was cancelled at {at}: its run ended", a.id),
        other => format!("approval #{} is {other}", a.id),
    }
}

/// Whether `who` is named by the approvers list (users and `@groups`).
fn listed(approvers: &[String], who: &Decider) -> bool {
    approvers.iter().any(|a| match a.strip_prefix('@') {
        Some(group) => who.groups.iter().any(|g| g == group),
        None => *a == who.user,
    })
}

/// Retries nest their original's trigger; past this depth the chain is not followed.
const MAX_RETRY_DEPTH: usize = 64;

/// Everyone who caused a run, for the self-approval rule: the run's user (the
/// socket user who triggered it, a webhook token's user, the webhook
/// trigger's `user` or the owner), the manual trigger's recorded user and, for
/// a retry, whoever retried it and whoever caused the run it retries.
pub(crate) fn causers(trigger: &TriggerInfo) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut current = Some(trigger.clone());
    for _ in 0..MAX_RETRY_DEPTH {
        let Some(t) = current.take() else { break };
        out.extend(t.user.iter().map(|u| u.trim().to_owned()));
        if t.kind == TriggerKind::Manual
            && let Some(u) = t.details.get("user").and_then(Value::as_str)
        {
            out.insert(u.trim().to_owned());
        }
        if t.kind == TriggerKind::Retry {
            current = t
                .details
                .get("original")
                .cloned()
                .and_then(|o| serde_json::from_value::<TriggerInfo>(o).ok());
        }
    }
    out.retain(|u| !u.is_empty());
    out
}

async fn causers_of_run(
    store: &crate::store::Store,
    run: RunId,
) -> Result<BTreeSet<String>, EngineError> {
    let record = store.run(run).await?.ok_or(EngineError::NotFound(run))?;
    Ok(causers(&record.trigger))
}

/// What a vote did.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The approval after the vote.
    pub approval: ApprovalRecord,
    /// True once the approval is decided; false while more approvals are needed.
    pub decided: bool,
}

impl Engine {
    /// Approves or rejects approval `id` for `who` (whose role the caller checked).
    pub async fn decide(
        &self,
        id: i64,
        who: &Decider,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Decision, EngineError> {
        let reason = reason
            .filter(|r| !r.trim().is_empty())
            .map(|r| self.inner.redactor.redact(&r).into_owned());
        if !approve && reason.is_none() {
            return Err(EngineError::Input("a rejection needs a reason".into()));
        }
        let store = &self.inner.store;
        let a = store
            .approval(id)
            .await?
            .ok_or_else(|| EngineError::Missing(format!("approval #{id}")))?;
        let now = now_ms();
        if a.state != "pending" {
            return Err(EngineError::Conflict(settled(&a)));
        }
        if let Some(d) = a.deadline.filter(|&d| d <= now) {
            return Err(EngineError::Conflict(format!(
                "approval #{id} expired at {}",
                when(d)
            )));
        }
        if !a.approvers.is_empty() && !listed(&a.approvers, who) {
            return Err(EngineError::Denied(format!(
                "user '{}' may not decide approval #{id}; its approvers are {}",
                who.user,
                a.approvers.join(", ")
            )));
        }
        if approve && !a.allow_self_approval {
            let mut caused = causers_of_run(store, a.run).await?;
            caused.extend(a.requested_by.iter().map(|u| u.trim().to_owned()));
            if caused.contains(who.user.trim()) {
                return Err(EngineError::Denied(format!(
                    "user '{}' caused run {} (triggered or retried it, directly or through a token or webhook) and may not approve it (the node does not set allow_self_approval)",
                    who.user, a.run
                )));
            }
        }
        if approve && a.votes.iter().any(|v| v.user == who.user) {
            return Err(EngineError::Conflict(format!(
                "user '{}' already approved #{id}; it needs {} approval(s) from other people",
                who.user,
                a.min_approvals as usize - a.votes.len()
            )));
        }
        let state = store
            .vote(Vote {
                id,
                user: who.user.clone(),
                approve,
                reason,
                at: now,
            })
            .await?;
        let after = store
            .approval(id)
            .await?
            .ok_or_else(|| EngineError::Missing(format!("approval #{id}")))?;
        let Some(state) = state else {
            // Lost the race: someone else (or the deadline) decided first.
            return Err(EngineError::Conflict(settled(&after)));
        };
        self.inner.publish(Event::ApprovalDecided {
            approval: id,
            run: a.run,
            node: a.node.clone(),
            state: state.clone(),
            by: who.user.clone(),
        });
        let decided = state != "pending";
        if decided {
            self.inner.recheck(a.run, &a.node);
        }
        Ok(Decision {
            approval: after,
            decided,
        })
    }
}

impl Inner {
    /// Makes the run look at its approval node now.
    pub(crate) fn recheck(self: &std::sync::Arc<Self>, run: RunId, node: &str) {
        // A driver that is just leaving drops the nudge; the next one starts
        // fresh and looks at every waiting approval anyway.
        for _ in 0..2 {
            match self.spawn_driver(run, false) {
                Some(tx) if tx.send(Command::Recheck(node.to_owned())).is_err() => {}
                _ => return,
            }
        }
    }
}

/// The node's output once decided: `by` names who decided it (nobody for an expiry).
fn output(a: &ApprovalRecord, decision: &str) -> Value {
    let by: Vec<String> = match (a.state.as_str(), decision) {
        ("expired", _) => Vec::new(),
        (_, "rejected") => a.decided_by.iter().cloned().collect(),
        _ => a.votes.iter().map(|v| v.user.clone()).collect(),
    };
    json!({
        "approval": a.id,
        "decision": decision,
        "by": by,
        "reason": a.reason,
        "at": a.decided_at.map(when),
    })
}

/// The node's log line for a final approval: who decided and why, or the
/// expiry. None while pending, and for a cancellation (the run's end says it).
fn decision_note(a: &ApprovalRecord, on_timeout: &str) -> Option<String> {
    let with_reason =
        |user: &str, reason: Option<&str>| match reason.filter(|r| !r.trim().is_empty()) {
            Some(r) => format!("{user} ({r})"),
            None => user.to_owned(),
        };
    match a.state.as_str() {
        "approved" => {
            let mut by: Vec<String> = a
                .votes
                .iter()
                .map(|v| with_reason(&v.user, v.reason.as_deref()))
                .collect();
            if by.is_empty() {
                by.push(with_reason(
                    a.decided_by.as_deref().unwrap_or("?"),
                    a.reason.as_deref(),
                ));
            }
            Some(format!("approval #{} approved by {}", a.id, by.join(", ")))
        }
        "rejected" => Some(format!(
            "approval #{} rejected by {}: {}",
            a.id,
            a.decided_by.as_deref().unwrap_or("?"),
            a.reason.as_deref().unwrap_or("no reason given")
        )),
        "expired" => Some(format!(
            "approval #{} expired with no decision; on_timeout: {on_timeout}",
            a.id
        )),
        _ => None,
    }
}

/// What one look at an approval node found.
pub(super) enum Step {
    /// Opened or still waiting: the node waits until this time (or a nudge).
    Wait(Option<i64>),
    /// Decided: the attempt ends with this result.
    Done(Result<Outcome, NodeError>),
    /// Timed out with `on_timeout: fail`: the attempt failed; try a new request
    /// if the retry policy allows.
    TimedOut(String),
}

/// The next wake-up: the next reminder before the deadline, else the deadline.
fn next_wake(
    requested_at: i64,
    deadline: Option<i64>,
    remind: Option<i64>,
    now: i64,
) -> Option<i64> {
    let reminder = remind.filter(|&r| r > 0).map(|r| {
        let k = (now - requested_at).max(0) / r + 1;
        requested_at.saturating_add(k.saturating_mul(r))
    });
    match (reminder, deadline) {
        (Some(r), Some(d)) => Some(r.min(d)),
        (r, d) => r.or(d),
    }
}

/// Which approval request to open.
pub(super) struct Opening<'a> {
    /// The run.
    pub run: RunId,
    /// Its pipeline.
    pub pipeline: &'a str,
    /// The user who triggered it.
    pub user: Option<&'a str>,
    /// The approval node.
    pub node_id: &'a str,
    /// The attempt the request belongs to.
    pub attempt: u32,
    /// The node's `timeout`: the deadline.
    pub timeout: Option<sluice_shared::Duration>,
}

/// What opening an approval did.
pub(super) struct Opened {
    /// The approval id (0 when the request could not be made).
    pub id: i64,
    /// Its deadline.
    pub deadline: Option<i64>,
    /// It was already recorded (a crash came between recording and waiting).
    pub existed: bool,
    /// What the node does next.
    pub step: Step,
}

/// Records a request and notes it on the node's log; a request already
/// recorded for the attempt is kept as it is, deadline included.
pub(super) async fn open(
    inner: &Inner,
    o: &Opening<'_>,
    node: &ApprovalNode,
    template: &nodes::NodeContext,
) -> Result<Opened, EngineError> {
    let now = now_ms();
    if let Some((a, t)) = inner.store.approval_of(o.run, o.node_id, o.attempt).await? {
        return Ok(Opened {
            id: a.id,
            deadline: a.deadline,
            existed: true,
            step: Step::Wait(next_wake(a.requested_at, a.deadline, t.remind_every, now)),
        });
    }
    let message = match &node.message {
        Some(m) => match nodes::render(template, "message", m, Escape::Text) {
            // A message may quote a secret (or an output holding one): stored and announced masked.
            Ok(m) => Some(template.redactor.redact(&m).into_owned()),
            Err(e) => {
                return Ok(Opened {
                    id: 0,
                    deadline: None,
                    existed: false,
                    step: Step::Done(Err(e)),
                });
            }
        },
        None => None,
    };
    let deadline = o.timeout.map(|t| now.saturating_add(ms(t)));
    let remind = node.remind_every.map(ms);
    let id = inner
        .store
        .open_approval(NewApproval {
            run: o.run,
            node: o.node_id.to_owned(),
            attempt: o.attempt,
            pipeline: o.pipeline.to_owned(),
            message: message.clone(),
            approvers: node.approvers.clone(),
            min_approvals: node.min_approvals,
            requested_by: o.user.map(str::to_owned),
            allow_self: node.allow_self_approval,
            on_timeout: on_timeout_name(node.on_timeout).into(),
            remind_every: remind,
            requested_at: now,
            deadline,
        })
        .await?;
    let who = if node.approvers.is_empty() {
        "any operator".to_owned()
    } else {
        node.approvers.join(", ")
    };
    let until = deadline.map_or_else(String::new, |d| format!(" until {}", when(d)));
    template
        .log
        .note(&format!(
            "waiting for approval #{id} by {who}{until}; decide with `sluice approve {id}` or `sluice reject {id} -m REASON`"
        ))
        .await;
    let wake = next_wake(now, deadline, remind, now);
    Ok(Opened {
        id,
        deadline,
        existed: false,
        step: Step::Wait(wake),
    })
}

fn on_timeout_name(t: OnTimeout) -> &'static str {
    match t {
        OnTimeout::Reject => "reject",
        OnTimeout::Approve => "approve",
        OnTimeout::Fail => "fail",
    }
}

/// Looks at a waiting approval: decided, expired (making the expiry if the
/// deadline passed), due a reminder, or still waiting.
pub(super) async fn check(
    inner: &Inner,
    run: RunId,
    node_id: &str,
    attempt: u32,
    reminder_due: bool,
    log: &nodes::LogSink,
) -> Result<(Step, Vec<Event>, Option<(ApprovalRecord, ApprovalEvent)>), EngineError> {
    let Some((mut a, timeout)) = inner.store.approval_of(run, node_id, attempt).await? else {
        return Ok((
            Step::Done(Err(NodeError::fatal(format!(
                "approval record of attempt {attempt} is missing"
            )))),
            Vec::new(),
            None,
        ));
    };
    let now = now_ms();
    let mut events = Vec::new();
    let mut notice = None;
    if a.state == "pending" {
        if a.deadline.is_some_and(|d| d <= now) {
            let decision = match timeout.on_timeout.as_str() {
                "approve" => Some("approved"),
                "fail" => None,
                _ => Some("rejected"),
            };
            if inner.store.expire_approval(a.id, decision, now).await? {
                events.push(Event::ApprovalExpired {
                    approval: a.id,
                    run,
                    node: node_id.to_owned(),
                    outcome: timeout.on_timeout.clone(),
                });
                let outcome = match timeout.on_timeout.as_str() {
                    "approve" => OnTimeout::Approve,
                    "fail" => OnTimeout::Fail,
                    _ => OnTimeout::Reject,
                };
                notice = Some((a.clone(), ApprovalEvent::Expired(outcome)));
            }
            // Either way the row is final now: read what won.
            if let Some(fresh) = inner.store.approval(a.id).await? {
                a = fresh;
            }
        } else {
            if reminder_due && a.deadline.is_none_or(|d| d > now) {
                notice = Some((a.clone(), ApprovalEvent::Reminder));
            }
            let wake = next_wake(a.requested_at, a.deadline, timeout.remind_every, now);
            return Ok((Step::Wait(wake), events, notice));
        }
    }
    // Every look at a final row writes the note again; its fixed slot keeps it once.
    if let Some(text) = decision_note(&a, &timeout.on_timeout) {
        log.closing_note(NoteSlot::Decision, &text).await;
    }
    let step = match (a.state.as_str(), a.decision.as_deref()) {
        ("approved", _) | ("expired", Some("approved")) => {
            Step::Done(Ok(Outcome::Done(output(&a, "approved"))))
        }
        ("rejected", _) => Step::Done(Err(NodeError::fatal(format!(
            "rejected by {}: {}",
            a.decided_by.as_deref().unwrap_or("?"),
            a.reason.as_deref().unwrap_or("no reason given")
        ))
        .with_output(output(&a, "rejected")))),
        ("expired", Some("rejected")) => Step::Done(Err(NodeError::fatal(format!(
            "approval #{} expired with no decision; on_timeout: reject",
            a.id
        ))
        .with_output(output(&a, "rejected")))),
        ("expired", _) => Step::TimedOut(format!("approval #{} timed out with no decision", a.id)),
        ("cancelled", _) => Step::Done(Err(NodeError::fatal(format!(
            "approval #{} was cancelled",
            a.id
        )))),
        // Still pending after a lost expiry race cannot happen; look again in a second.
        _ => Step::Wait(Some(now + 1000)),
    };
    Ok((step, events, notice))
}

/// Sends the node's `notify` for an approval event in the background; a
/// failure is noted on the node's log and never touches the approval.
pub(super) fn announce(
    inner: &Inner,
    node: &ApprovalNode,
    ctx: &nodes::NodeContext,
    a: &ApprovalRecord,
    event: ApprovalEvent,
) {
    let Some(target) = &node.notify else {
        return;
    };
    let notice = ApprovalNotice {
        pipeline: a.pipeline.clone(),
        run: a.run,
        node: a.node.clone(),
        approval: Some(a.id),
        message: a.message.clone(),
        approvers: a.approvers.clone(),
        deadline: a
            .deadline
            .and_then(|d| jiff::Timestamp::from_millisecond(d).ok()),
    };
    inner.opts.notifier.spawn_approval_notice(
        &notice,
        event,
        target,
        |_, source| {
            ctx.templates
                .render_str(source, &ctx.template, Escape::Text)
                .map_err(|e| ctx.redactor.redact(&e.message).into_owned())
        },
        ctx.log.clone(),
    );
}

/// The node change that puts an approval node to wait.
pub(super) fn waiting(attempt: u32, wake: Option<i64>, started: bool) -> NodeChange {
    NodeChange {
        state: Some(NodeState::Waiting),
        attempts: Some(attempt),
        started_at: started.then(now_ms),
        wake_at: Some(wake),
        ..Default::default()
    }
}
