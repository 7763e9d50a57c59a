//! Rules of each node kind that its fields' types cannot say: one of two
//! fields, value ranges, approvers that can be met, reserved names.

use super::Checker;
use crate::document::DocPath;
use crate::model::node::{ApprovalNode, LlmFormat, LlmNode, ModelChoice, NotifyNode, ShellNode};
use crate::model::{Node, NodeKind};
use crate::template::SHELL_VALUE_PREFIX;

/// Checks the rules of `node`'s kind.
pub(super) fn check_kind(c: &mut Checker<'_>, base: &DocPath, node: &Node) {
    match &node.kind {
        NodeKind::Plugin(_) | NodeKind::Filter(_) | NodeKind::Transform(_) => {}
        NodeKind::Http(h) => {
            if h.json.is_some() && h.body.is_some() {
                c.error(
                    &base.key("body"),
                    true,
                    "an http node takes `json` or `body`, not both".into(),
                    None,
                );
            }
        }
        NodeKind::Delay(d) => match (&d.duration, &d.until) {
            (None, None) => c.error(
                base,
                true,
                "a delay node needs `for` (a duration) or `until` (a time)".into(),
                Some("e.g. `for: 10m`".into()),
            ),
            (Some(_), Some(_)) => c.error(
                &base.key("until"),
                true,
                "a delay node takes `for` or `until`, not both".into(),
                None,
            ),
            _ => {}
        },
        NodeKind::Llm(l) => check_llm(c, base, l),
        NodeKind::Approval(a) => check_approval(c, base, a),
        NodeKind::Notify(n) => check_notify(c, base, n),
        NodeKind::Shell(s) => check_shell(c, base, s),
    }
}

/// `prompt` or `messages`, a temperature in range, `schema` only for JSON, a non-empty model list.
fn check_llm(c: &mut Checker<'_>, base: &DocPath, l: &LlmNode) {
    match (&l.prompt, l.messages.is_empty()) {
        (None, true) => c.error(
            base,
            true,
            "an llm node needs `prompt` or `messages`".into(),
            None,
        ),
        (Some(_), false) => c.error(
            &base.key("messages"),
            true,
            "an llm node takes `prompt` or `messages`, not both".into(),
            None,
        ),
        _ => {}
    }
    if let Some(t) = l.temperature
        && !(0.0..=2.0).contains(&t)
    {
        c.error(
            &base.key("temperature"),
            false,
            format!("temperature {t} is out of range"),
            Some("use a value from 0 to 2".into()),
        );
    }
    if l.schema.is_some() && l.format != LlmFormat::Json {
        c.error(
            &base.key("schema"),
            true,
            "`schema` needs `format: json`".into(),
            None,
        );
    }
    if let Some(ModelChoice::Fallbacks(list)) = &l.model
        && list.is_empty()
    {
        c.error(
            &base.key("model"),
            false,
            "the model list is empty".into(),
            None,
        );
    }
}

/// At least one approval needed, and no more than the listed approvers can
/// give; reminders spaced and only with `notify`, which needs a channel.
fn check_approval(c: &mut Checker<'_>, base: &DocPath, a: &ApprovalNode) {
    if a.min_approvals == 0 {
        c.error(
            &base.key("min_approvals"),
            false,
            "min_approvals must be at least 1".into(),
            None,
        );
    }
    for (j, who) in a.approvers.iter().enumerate() {
        if who.trim().is_empty() || who == "@" {
            c.error(
                &base.key("approvers").index(j),
                false,
                "empty approver".into(),
                Some("write a user name or @group".into()),
            );
        }
    }
    let users = a
        .approvers
        .iter()
        .filter(|w| !w.starts_with('@'))
        .collect::<std::collections::BTreeSet<_>>();
    if a.approvers.iter().all(|w| !w.starts_with('@'))
        && !a.approvers.is_empty()
        && a.min_approvals as usize > users.len()
    {
        c.error(
            &base.key("min_approvals"),
            true,
            format!(
                "min_approvals is {} but only {} approver(s) are listed, so it can never be met",
                a.min_approvals,
                users.len()
            ),
            Some("list more approvers, add a @group, or lower min_approvals".into()),
        );
    }
    if let Some(every) = a.remind_every
        && every.std() < std::time::Duration::from_secs(1)
    {
        c.error(
            &base.key("remind_every"),
            true,
            format!("remind_every is {every}; reminders need at least 1s between them"),
            Some("people need minutes, not milliseconds: try 30m".into()),
        );
    }
    if a.remind_every.is_some() && a.notify.is_none() {
        c.warn(
            &base.key("remind_every"),
            true,
            "remind_every has no effect without `notify`".into(),
            None,
        );
    }
    if let Some(target) = &a.notify
        && target.webhook.is_none()
        && target.email.is_none()
    {
        c.error(
            &base.key("notify"),
            true,
            "`notify` needs `webhook` or `email`".into(),
            None,
        );
    }
}

/// A channel, and a recipient for email.
fn check_notify(c: &mut Checker<'_>, base: &DocPath, n: &NotifyNode) {
    if n.webhook.is_none() && n.email.is_none() {
        c.error(
            base,
            true,
            "a notify node needs `webhook` or `email`".into(),
            Some("e.g. `webhook: \"{{ secrets.slack_url }}\"`".into()),
        );
    }
    if let Some(email) = &n.email
        && email.to.is_empty()
    {
        c.error(
            &base.key("email").key("to"),
            true,
            "email needs at least one recipient".into(),
            None,
        );
    }
}

/// A script, and no variables in the prefix that carries template values.
fn check_shell(c: &mut Checker<'_>, base: &DocPath, s: &ShellNode) {
    if s.run.trim().is_empty() {
        c.error(&base.key("run"), false, "the script is empty".into(), None);
    }
    let reserved = format!(
        "the {SHELL_VALUE_PREFIX} prefix is reserved: it carries template values into `run`"
    );
    for name in s.env.keys().filter(|k| k.starts_with(SHELL_VALUE_PREFIX)) {
        c.error(
            &base.key("env").key(name),
            true,
            format!("`env` may not set '{name}': {reserved}"),
            Some("rename the variable".into()),
        );
    }
    for (i, name) in s.inherit_env.iter().enumerate() {
        if name.starts_with(SHELL_VALUE_PREFIX) {
            c.error(
                &base.key("inherit_env").index(i),
                false,
                format!("`inherit_env` may not pass '{name}': {reserved}"),
                None,
            );
        }
    }
}
