//! The pipeline model: what a pipeline file says, as Rust types.
//!
//! [`PipelineDoc`] is the file as written; [`Pipeline`] is a resolved, runnable
//! pipeline (name settled, template instantiated). Nodes and triggers have
//! hand-written (de)serialisation so that unknown fields and kinds get precise
//! errors; see [`node`] and [`trigger`].

pub mod node;
pub mod trigger;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::Duration;

pub use node::{Node, NodeKind};
pub use trigger::Trigger;

/// A pipeline file as written. `N` and `T` are the node and trigger types, so the
/// loader can read nodes and triggers one at a time and report each one's errors.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "sluice pipeline",
    description = "A sluice pipeline file (YAML, TOML or JSON): settings, triggers and a DAG of nodes.",
    bound = "N: JsonSchema, T: JsonSchema"
)]
pub struct PipelineDoc<N = Node, T = Trigger> {
    /// Unique pipeline name; defaults to the file name without its extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the pipeline is for, shown in the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The user whose limits apply to scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Inputs a run takes, available to templates as `inputs.<name>`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, InputSpec>,
    /// What starts runs besides manual triggers: cron schedules and webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<T>,
    /// How many runs may be in flight at once and what happens on overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Time limit for a whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Default retry policy for every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// At most this many nodes of one run execute at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_nodes: Option<u32>,
    /// In a template: the parameters it declares (name → spec). In a file that
    /// says `template:`: the values given to those parameters.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, Value>,
    /// Instantiate the template pipeline with this name instead of listing nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The steps of the pipeline; `needs` lists make them a DAG.
    #[serde(default)]
    pub nodes: Vec<N>,
}

/// The type of an input or template parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Any string (the default).
    #[default]
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// true or false.
    Boolean,
    /// A mapping.
    Object,
    /// A list.
    Array,
}

impl InputType {
    /// Whether `value` is of this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Boolean => value.is_boolean(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
        }
    }

    /// The name with its article, for messages ("a string", "an integer").
    pub fn with_article(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Boolean => "a boolean",
            Self::Object => "an object",
            Self::Array => "an array",
        }
    }

    /// The lowercase name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
        }
    }
}

/// One declared input (or template parameter).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The value's type.
    #[serde(default, rename = "type")]
    pub ty: InputType,
    /// Used when a trigger gives no value; an input without a default is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Shown in the console's trigger prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The only values allowed, if given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Value>,
}

impl InputSpec {
    /// An input without a default must be given by every trigger.
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

/// What happens when a trigger fires while `max_runs` runs are in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Drop the new trigger (recorded as skipped).
    Skip,
    /// Queue the new run until a slot frees (the default).
    #[default]
    Queue,
    /// Cancel the oldest running run and start the new one.
    CancelPrevious,
    /// Start it anyway, ignoring `max_runs`.
    Allow,
}

/// Per-pipeline concurrency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Runs of this pipeline allowed in flight at once (unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u32>,
    /// What to do with a trigger that would exceed `max_runs`.
    #[serde(default)]
    pub on_overlap: OverlapPolicy,
}

/// How a node is retried after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 means no retry).
    pub attempts: u32,
    /// Wait before the second attempt; doubles after each failure.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// The longest wait between attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// Randomise waits (each between half and all of its step) so retries of many runs do not align.
    #[serde(default = "default_true")]
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            jitter: true,
        }
    }
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

pub(crate) fn default_true() -> bool {
    true
}

/// A resolved, runnable pipeline: the unit a run executes and a version stores.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Pipeline {
    /// Unique name.
    pub name: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The user whose limits apply to scheduled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Declared inputs.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// Cron and webhook triggers.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// Concurrency settings.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Run time limit.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Default retry policy for nodes.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Node parallelism cap within a run.
    #[serde(default)]
    pub max_active_nodes: Option<u32>,
    /// Bound template parameters, available to templates as `params.<name>`.
    #[serde(default)]
    pub params: IndexMap<String, Value>,
    /// The template this pipeline instantiates, if any.
    #[serde(default)]
    pub template: Option<String>,
    /// The nodes, in file order.
    pub nodes: Vec<Node>,
}

impl Pipeline {
    /// The node with this id.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The retry policy that applies to `node`: its own, else the pipeline's, else none.
    pub fn retry_for(&self, node: &Node) -> RetryPolicy {
        node.retry.or(self.retry).unwrap_or_default()
    }
}
