//! `transform`: the rendered structure is the output.

use sluice_shared::model::node::TransformNode;

use super::{Execute, NodeContext, NodeError, Outcome, render_json};

impl Execute for TransformNode {
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        render_json(ctx, "output", &self.output).map(Outcome::Done)
    }
}
