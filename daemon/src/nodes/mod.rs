//! Node kinds: one type per kind implementing [`Execute`], dispatched by
//! [`execute`]. Nodes know nothing of the store, the socket or the HTTP
//! listener; they get a [`NodeContext`] to render templates, log lines,
//! notice cancellation and return a JSON output.

pub mod delay;
pub mod filter;
pub mod http;
pub mod llm;
pub mod notify;
pub mod pgroup;
pub mod plugin;
pub mod process;
pub mod shell;
pub mod transform;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_shared::model::NodeKind;
use sluice_shared::model::node::RetryIf;
use sluice_shared::run::RunId;
use sluice_shared::template::{Context, TemplateEngine};
use tokio_util::sync::CancellationToken;

pub use crate::attempt_log::{LogMsg, LogSink, NoteSlot};
use crate::secrets::Redactor;

/// Largest stdout or stderr kept in a node's output (the log keeps every line up to its cap).
pub const MAX_CAPTURE: usize = 64 * 1024;

/// Everything a node needs to execute one attempt.
#[derive(Clone)]
pub struct NodeContext {
    /// The run.
    pub run: RunId,
    /// The node's id.
    pub node: String,
    /// The attempt number, from 1.
    pub attempt: u32,
    /// Template data: inputs, upstream outputs, trigger, run, pipeline, secrets, params.
    /// As JSON without the secrets ([`NodeContext::context_json`]) it is what exec plugins get.
    pub template: Context,
    /// The template engine.
    pub templates: Arc<TemplateEngine>,
    /// Where log lines go.
    pub log: LogSink,
    /// Cancelled when the attempt must stop (cancel, timeout, shutdown).
    pub cancel: CancellationToken,
    /// Hides secret values.
    pub redactor: Arc<Redactor>,
    /// Shared HTTP client.
    pub http: reqwest::Client,
    /// Where `sluice-node-<kind>` executables live.
    pub plugins_dir: PathBuf,
    /// Extra failures that are retried.
    pub retry_if: RetryIf,
    /// The attempt's time limit, if any (the engine also enforces it).
    pub timeout: Option<Duration>,
    /// Environment variables passed through to child processes by default.
    pub base_env: Arc<[(String, String)]>,
    /// LLM providers from sluiced.toml (for `llm` nodes).
    pub llm: Arc<crate::llm::LlmProviders>,
    /// Webhook and email delivery (for `notify` nodes and approval notifications).
    pub notifier: Arc<crate::notify::Notifier>,
    /// Told the process group (and its leader's start time) of each child the
    /// attempt starts, so that a restart after a crash can stop it.
    pub on_spawn: Option<SpawnHook>,
    /// Set as [`ATTEMPT_MARKER`] in every child's environment: a restart finds
    /// an attempt's processes by it when their group was never recorded (a
    /// crash right after the spawn) or when they left the group.
    pub marker: Option<String>,
}

impl NodeContext {
    /// The template data as plain JSON without the secrets (what exec plugins get).
    pub fn context_json(&self) -> Value {
        self.template.to_json_without("secrets")
    }
}

/// The environment variable carrying an attempt's marker into its processes.
pub const ATTEMPT_MARKER: &str = "SLUICE_ATTEMPT";

/// The marker of an attempt: unique per state directory (the run's creation
/// time tells two databases' run 1 apart) and stable across restarts.
pub fn attempt_marker(run: RunId, created_at: i64, node: &str, attempt: u32) -> String {
    format!("{run}.{created_at}:{node}:{attempt}")
}

/// Receives `(pgid, leader start time)` of a child process an attempt started.
pub type SpawnHook = Arc<dyn Fn(i32, u64) + Send + Sync>;

/// How an attempt ended when it did not fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Finished with this output.
    Done(Value),
    /// A filter whose condition was false: the run ends successfully, dependents skipped.
    Stop(Value),
    /// Come back at this time (durable waits); the node then succeeds with the value.
    WaitUntil(jiff::Timestamp, Value),
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    /// What went wrong (secrets redacted).
    pub message: String,
    /// Whether the retry policy applies.
    pub retryable: bool,
    /// A wait the other side asked for (HTTP Retry-After).
    pub retry_after: Option<Duration>,
    /// Partial output worth keeping (exit code, stderr, status).
    pub output: Option<Value>,
}

impl NodeError {
    /// A failure that retrying will not fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            retry_after: None,
            output: None,
        }
    }

    /// A failure that may pass on another attempt.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::fatal(message)
        }
    }

    /// Attaches partial output.
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }
}

/// One node kind's behaviour.
pub trait Execute {
    /// Runs one attempt.
    fn execute(
        &self,
        ctx: &NodeContext,
    ) -> impl std::future::Future<Output = Result<Outcome, NodeError>> + Send;
}

/// Runs one attempt of a node of any kind.
pub async fn execute(kind: &NodeKind, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    match kind {
        NodeKind::Filter(n) => n.execute(ctx).await,
        NodeKind::Transform(n) => n.execute(ctx).await,
        NodeKind::Delay(n) => n.execute(ctx).await,
        NodeKind::Shell(n) => n.execute(ctx).await,
        NodeKind::Http(n) => n.execute(ctx).await,
        NodeKind::Plugin(n) => n.execute(ctx).await,
        NodeKind::Llm(n) => n.execute(ctx).await,
        NodeKind::Notify(n) => n.execute(ctx).await,
        NodeKind::Approval(_) => Err(NodeError::fatal(format!(
            "'{}' nodes are not supported by this version of sluiced",
            kind.name()
        ))),
    }
}

/// [`execute`] for the kinds [`is_instant`] accepts. Its future is small:
/// [`execute`]'s holds the state of every kind (an HTTP request, a child
/// process), which the intake path that runs instant nodes would otherwise
/// carry and copy with every move of its own future.
pub async fn execute_instant(kind: &NodeKind, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    match kind {
        NodeKind::Filter(n) => n.execute(ctx).await,
        NodeKind::Transform(n) => n.execute(ctx).await,
        NodeKind::Delay(n) => n.execute(ctx).await,
        other => Err(NodeError::fatal(format!(
            "internal error: '{}' nodes are not instant",
            other.name()
        ))),
    }
}

/// Whether a kind completes instantly in-process (no worker slot, no separate start record).
pub fn is_instant(kind: &NodeKind) -> bool {
    matches!(
        kind,
        NodeKind::Filter(_) | NodeKind::Transform(_) | NodeKind::Delay(_)
    )
}

/// Renders a template field, mapping template errors to a node error naming the field.
pub fn render(
    ctx: &NodeContext,
    field: &str,
    source: &str,
    escape: sluice_shared::template::Escape,
) -> Result<String, NodeError> {
    ctx.templates
        .render_str(source, &ctx.template, escape)
        .map_err(|e| render_error(ctx, field, &e))
}

/// The node error for a template of `field` that failed to render.
pub fn render_error(
    ctx: &NodeContext,
    field: &str,
    e: &sluice_shared::template::TemplateError,
) -> NodeError {
    NodeError::fatal(format!(
        "cannot render `{field}`: {}",
        ctx.redactor.redact(&e.message)
    ))
}

/// Renders every string of a JSON structure, naming the field in errors.
pub fn render_json(ctx: &NodeContext, field: &str, value: &Value) -> Result<Value, NodeError> {
    ctx.templates
        .render_json(value, &ctx.template)
        .map_err(|e| {
            NodeError::fatal(format!(
                "cannot render `{field}`: {}",
                ctx.redactor.redact(&e.message)
            ))
        })
}

/// Contexts for node tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use serde_json::Value;
    use sluice_shared::run::LogLine;
    use tokio::sync::mpsc;

    use super::*;
    use crate::secrets::Secrets;

    /// A context for attempt 1 of node `n` in run #1. Templates see `template`
    /// plus `secrets`; plugins get `template` alone; PATH is the only base variable.
    pub(crate) fn context(
        template: Value,
        secrets: &[(&str, &str)],
    ) -> (NodeContext, mpsc::Receiver<LogMsg>) {
        let secrets = Secrets::from_map(
            secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        );
        let redactor = Arc::new(secrets.redactor());
        // Roomy enough that tests can read the log after the attempt ends.
        let (tx, rx) = mpsc::channel(100_000);
        let run = RunId(1);
        let ctx = NodeContext {
            run,
            node: "n".into(),
            attempt: 1,
            // As the engine makes it: the secrets are a layer over the data.
            template: Context::shared_with(
                Arc::new(template),
                "secrets",
                Arc::new(secrets.as_json()),
            ),
            templates: Arc::new(TemplateEngine::new()),
            log: LogSink::new(run, "n", 1, tx, redactor.clone()),
            cancel: CancellationToken::new(),
            redactor,
            http: reqwest::Client::new(),
            plugins_dir: PathBuf::from("/nonexistent/plugins"),
            retry_if: RetryIf::default(),
            timeout: None,
            base_env: vec![(
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )]
            .into(),
            llm: Arc::new(crate::llm::LlmProviders::default()),
            notifier: Arc::new(crate::notify::Notifier::disabled()),
            on_spawn: None,
            marker: None,
        };
        (ctx, rx)
    }

    /// How long a node attempt in a test may take before the test fails.
    pub(crate) const ATTEMPT_SECS: u64 = 60;

    /// A deadline for any future a test awaits (a node attempt, a log line):
    /// past it the test fails saying what it waited for, instead of hanging.
    pub(crate) trait Deadline: std::future::Future + Sized {
        /// This future, failing the test after `secs` seconds with `what`.
        fn deadline(
            self,
            secs: u64,
            what: &str,
        ) -> impl std::future::Future<Output = Self::Output> {
            let what = what.to_owned();
            async move {
                tokio::time::timeout(std::time::Duration::from_secs(secs), self)
                    .await
                    .unwrap_or_else(|_| panic!("timed out after {secs} s waiting for {what}"))
            }
        }
    }

    impl<F: std::future::Future> Deadline for F {}

    /// The log lines received so far.
    pub(crate) fn drain(rx: &mut mpsc::Receiver<LogMsg>) -> Vec<LogLine> {
        let mut lines = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let LogMsg::Line(line) = msg {
                lines.push(line);
            }
        }
        lines
    }

    /// The text of the lines of one stream received so far.
    pub(crate) fn lines_of(rx: &mut mpsc::Receiver<LogMsg>, stream: &str) -> Vec<String> {
        drain(rx)
            .into_iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.line)
            .collect()
    }
}
