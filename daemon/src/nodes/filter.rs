//! `filter`: continue when the condition holds; otherwise stop the run successfully.

use serde_json::json;
use sluice_shared::model::node::FilterNode;

use super::{Execute, NodeContext, NodeError, Outcome};

impl Execute for FilterNode {
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let passed = ctx
            .templates
            .eval_condition(&self.condition, &ctx.template)
            .map_err(|e| {
                NodeError::fatal(format!(
                    "cannot evaluate `condition`: {}",
                    ctx.redactor.redact(&e.message)
                ))
            })?;
        let output = json!({ "passed": passed });
        Ok(if passed {
            Outcome::Done(output)
        } else {
            Outcome::Stop(output)
        })
    }
}
