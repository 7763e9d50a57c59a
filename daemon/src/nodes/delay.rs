//! `delay`: a durable wait. The engine stores the deadline and holds no task
//! while waiting, so a restart does not lose or restart the wait.

use serde_json::json;
use sluice_shared::model::node::DelayNode;
use sluice_shared::template::Escape;

use super::{Execute, NodeContext, NodeError, Outcome, render};

impl Execute for DelayNode {
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let until = match (&self.duration, &self.until) {
            (Some(d), _) => jiff::Timestamp::now()
                .checked_add(
                    jiff::SignedDuration::try_from(d.std())
                        .map_err(|_| NodeError::fatal("delay is too long"))?,
                )
                .map_err(|_| NodeError::fatal("delay is too long"))?,
            (None, Some(until)) => {
                let text = render(ctx, "until", until, Escape::Text)?;
                text.trim().parse::<jiff::Timestamp>().map_err(|e| {
                    NodeError::fatal(format!(
                        "`until` is not an RFC 3339 time ('{}'): {e}",
                        ctx.redactor.redact(&text)
                    ))
                })?
            }
            (None, None) => return Err(NodeError::fatal("a delay needs `for` or `until`")),
        };
        Ok(Outcome::WaitUntil(
            until,
            json!({ "until": until.to_string() }),
        ))
    }
}
