//! Building a run's driver state: from the store, or from what was just
//! committed; and the context each node attempt sees.

use std::sync::Arc;

use serde_json::Value;
use sluice_shared::model::{Node, NodeKind};
use sluice_shared::run::{NodeState, RunId, RunState};
use tokio_util::sync::CancellationToken;

use super::{Created, NodeRt, Run, process_recorder};
use crate::engine::context::{self, RunFacts};
use crate::engine::{EngineError, Inner, LoadedVersion};
use crate::nodes::{self, LogSink, NodeContext};
use crate::store::{NewRun, RunRecord};

impl Run {
    pub(super) fn facts(&self) -> RunFacts<'_> {
        RunFacts {
            id: self.id.0,
            started_at: self.record.started_at,
            retry_of: self.record.retry_of.map(|r| r.0),
            trigger_kind: self.record.trigger.kind,
            user: self.record.trigger.user.as_deref(),
            trigger_details: &self.details,
            inputs: &self.record.inputs,
            pipeline: &self.version.pipeline,
            version: self.version.version,
        }
    }

    pub(super) fn node_context(
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
        let template = context::build(&self.facts(), upstream, &inner.secrets_json);
        let node = self.node(i);
        let spawns = !nodes::is_instant(&node.kind);
        NodeContext {
            run: self.id,
            node: node.id.clone(),
            attempt,
            template,
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
            base_env: Arc::clone(&inner.base_env),
            llm: Arc::clone(&inner.opts.llm),
            notifier: Arc::clone(&inner.opts.notifier),
            // Instant kinds start no process: nothing to record or mark.
            on_spawn: spawns.then(|| process_recorder(inner, self.id, &node.id, attempt)),
            marker: spawns
                .then(|| nodes::attempt_marker(self.id, self.record.created_at, &node.id, attempt)),
        }
    }

    /// The log of node `i`'s attempt `attempt`.
    pub(super) fn log_sink(&self, inner: &Inner, i: usize, attempt: u32) -> LogSink {
        LogSink::new(
            self.id,
            &self.node(i).id,
            attempt,
            inner.logs.clone(),
            Arc::clone(&inner.redactor),
        )
    }
}

/// A node's runtime state from what is stored of it.
pub(super) fn node_rt(
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

pub(super) async fn load(
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
    Ok(Some(Run::new(id, record, version, nodes)))
}

/// The run as the store holds it right after its creation, built from what was
/// written (the same record `load` would read back).
pub(super) async fn load_created(inner: &Inner, created: Created) -> Result<Run, EngineError> {
    let version = inner.version(created.run.version_id).await?;
    Ok(from_created(version, created))
}

/// [`load_created`] with the run's version at hand.
pub(super) fn from_created(version: Arc<LoadedVersion>, created: Created) -> Run {
    let NewRun {
        pipeline,
        version_id,
        trigger,
        inputs,
        retry_of,
        deadline,
        nodes: mut new_nodes,
        done: _,
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
    Run::new(created.id, record, version, nodes)
}
