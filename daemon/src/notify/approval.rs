//! The words of approval notifications: one [`Message`] per event
//! (requested, reminder, expired), built from what the approval knows.

use sluice_shared::model::node::OnTimeout;
use sluice_shared::run::RunId;

use sluice_shared::model::node::NotifyTarget;

use super::{Message, Notifier, ResolvedTarget};
use crate::attempt_log::LogSink;

/// What happened to an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalEvent {
    /// The run reached the approval node.
    Requested,
    /// Still undecided after `remind_every`.
    Reminder,
    /// The deadline passed undecided; `on_timeout` says what followed.
    Expired(OnTimeout),
}

impl ApprovalEvent {
    /// `requested`, `reminder` or `expired` (the `event` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Reminder => "reminder",
            Self::Expired(_) => "expired",
        }
    }
}

/// An approval request as notifications describe it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApprovalNotice {
    /// The pipeline's name.
    pub pipeline: String,
    /// The run.
    pub run: RunId,
    /// The approval node's id.
    pub node: String,
    /// The approval's id (for `sluice approve <id>`), once known.
    pub approval: Option<i64>,
    /// The rendered question, if the node has one.
    pub message: Option<String>,
    /// Who may decide (empty: any operator).
    pub approvers: Vec<String>,
    /// When it expires, if it does.
    pub deadline: Option<jiff::Timestamp>,
}

impl ApprovalNotice {
    /// The notification for `event`. Fields: event, pipeline, run, node,
    /// approval (when known), approvers, deadline (RFC 3339, when set).
    pub fn message(&self, event: ApprovalEvent) -> Message {
        let what = format!("{} #{} ({})", self.pipeline, self.run.0, self.node);
        let title = match event {
            ApprovalEvent::Requested => format!("Approval needed: {what}"),
            ApprovalEvent::Reminder => format!("Reminder: approval still needed: {what}"),
            ApprovalEvent::Expired(_) => format!("Approval expired: {what}"),
        };
        let mut lines = Vec::new();
        let question = self
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty());
        match event {
            ApprovalEvent::Requested | ApprovalEvent::Reminder => {
                lines.push(question.map_or_else(
                    || {
                        format!(
                            "Run #{} of {} is waiting for approval at node {}.",
                            self.run.0, self.pipeline, self.node
                        )
                    },
                    str::to_owned,
                ));
                if event == ApprovalEvent::Reminder {
                    lines.push("This request is still undecided.".to_owned());
                }
                lines.push(format!("Approvers: {}", self.approvers_text()));
                if let Some(deadline) = self.deadline {
                    lines.push(format!("Decide by {}.", show_time(deadline)));
                }
                lines.push(match self.approval {
                    Some(id) => format!(
                        "Approve: sluice approve {id}    Reject: sluice reject {id} -m REASON"
                    ),
                    None => "Decide in the sluice console (Approvals) or with `sluice approvals`."
                        .to_owned(),
                });
            }
            ApprovalEvent::Expired(outcome) => {
                if let Some(q) = question {
                    lines.push(q.to_owned());
                }
                let when = self
                    .deadline
                    .map(|d| format!(" by {}", show_time(d)))
                    .unwrap_or_default();
                let followed = match outcome {
                    OnTimeout::Reject => "it was treated as rejected",
                    OnTimeout::Approve => "it was treated as approved and the run goes on",
                    OnTimeout::Fail => "the node failed",
                };
                lines.push(format!("No decision was made{when}; {followed}."));
            }
        }
        let mut msg = Message::new(title, lines.join("\n"))
            .field("event", event.as_str())
            .field("pipeline", self.pipeline.as_str())
            .field("run", self.run.0)
            .field("node", self.node.as_str());
        if let Some(id) = self.approval {
            msg = msg.field("approval", id);
        }
        msg = msg.field("approvers", self.approvers.clone());
        if let Some(deadline) = self.deadline {
            msg = msg.field("deadline", deadline.to_string());
        }
        msg
    }

    fn approvers_text(&self) -> String {
        if self.approvers.is_empty() {
            "any operator".to_owned()
        } else {
            self.approvers.join(", ")
        }
    }
}

impl Notifier {
    /// Announces `event` of an approval in the background: renders `target`
    /// with `render(field, source)` (a template engine over the run's
    /// context), then delivers. Nothing is returned to the caller but a
    /// handle: a bad target, like a failed delivery, is only noted on `log`,
    /// so the approval itself never waits on or fails for its notification.
    pub fn spawn_approval_notice(
        &self,
        notice: &ApprovalNotice,
        event: ApprovalEvent,
        target: &NotifyTarget,
        render: impl FnMut(&str, &str) -> Result<String, String>,
        log: LogSink,
    ) -> tokio::task::JoinHandle<()> {
        let msg = notice.message(event);
        match ResolvedTarget::render(target, render) {
            Ok(target) => self.spawn_deliver(msg, target, log),
            Err(e) => tokio::spawn(async move {
                log.note(&format!(
                    "approval notification ({}) not sent: {e}",
                    event.as_str()
                ))
                .await;
            }),
        }
    }
}

/// `2026-11-22 05:57 UTC`: one zone for everyone who reads it.
fn show_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn notice() -> ApprovalNotice {
        ApprovalNotice {
            pipeline: "deploy".into(),
            run: RunId(12),
            node: "gate".into(),
            approval: Some(7),
            message: Some("Ship v1.2 to production?".into()),
            approvers: vec!["@ops".into(), "alice".into()],
            deadline: Some("2026-11-22T05:57:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn requested_says_who_by_when_and_how() {
        let m = notice().message(ApprovalEvent::Requested);
        assert_eq!(m.title, "Approval needed: deploy #12 (gate)");
        assert_eq!(
            m.text,
            "Ship v1.2 to production?\nApprovers: @ops, alice\nDecide by 2026-11-22 05:57 UTC.\nApprove: sluice approve 7    Reject: sluice reject 7 -m REASON"
        );
        assert_eq!(
            m.fields,
            vec![
                ("event".into(), json!("requested")),
                ("pipeline".into(), json!("deploy")),
                ("run".into(), json!(12)),
                ("node".into(), json!("gate")),
                ("approval".into(), json!(7)),
                ("approvers".into(), json!(["@ops", "alice"])),
                ("deadline".into(), json!("2026-11-22T05:57:00Z")),
            ]
        );
    }

    #[test]
    fn reminder_and_expiry_read_well_without_optional_parts() {
        let bare = ApprovalNotice {
            approval: None,
            message: None,
            approvers: Vec::new(),
            deadline: None,
            ..notice()
        };
        let m = bare.message(ApprovalEvent::Reminder);
        assert_eq!(
            m.title,
            "Reminder: approval still needed: deploy #12 (gate)"
        );
        assert_eq!(
            m.text,
            "Run #12 of deploy is waiting for approval at node gate.\nThis request is still undecided.\nApprovers: any operator\nDecide in the sluice console (Approvals) or with `sluice approvals`."
        );
        let m = notice().message(ApprovalEvent::Expired(OnTimeout::Reject));
        assert_eq!(m.title, "Approval expired: deploy #12 (gate)");
        assert_eq!(
            m.text,
            "Ship v1.2 to production?\nNo decision was made by 2026-11-22 05:57 UTC; it was treated as rejected."
        );
        assert_eq!(m.fields[0], ("event".into(), json!("expired")));
        assert!(
            bare.message(ApprovalEvent::Expired(OnTimeout::Fail))
                .text
                .ends_with("No decision was made; the node failed.")
        );
    }
}
