//! Nodes: the common fields every node has, and one struct per kind.
//!
//! A node is read in two halves: the common fields (`id`, `kind`, `needs`, ...)
//! and the kind's own fields, each half with unknown fields refused. That gives
//! "unknown field 'urll' in an http node — did you mean 'url'?" instead of
//! serde's generic untagged-enum failure.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{RetryPolicy, default_true};
use crate::document::DocPath;
use crate::duration::Duration;
use crate::suggest;

/// The kinds built into sluice; any other kind names an exec plugin.
pub const BUILTIN_KINDS: &[&str] = &[
    "shell",
    "http",
    "filter",
    "transform",
    "delay",
    "llm",
    "approval",
    "notify",
];

/// The fields every node may have, whatever its kind.
pub const COMMON_FIELDS: &[&str] = &[
    "id",
    "kind",
    "description",
    "needs",
    "when",
    "retry",
    "timeout",
    "on_crash",
    "retry_if",
];

/// One step of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique id within the pipeline; other nodes refer to it in `needs` and templates.
    pub id: String,
    /// What the node is for.
    pub description: Option<String>,
    /// Ids of the nodes that must finish first.
    pub needs: Vec<String>,
    /// Expression; when false the node (and what depends only on it) is skipped.
    pub when: Option<String>,
    /// This node's retry policy (else the pipeline's).
    pub retry: Option<RetryPolicy>,
    /// Time limit for one attempt (for approvals: the decision deadline).
    pub timeout: Option<Duration>,
    /// What to do with an attempt interrupted by a daemon crash.
    pub on_crash: Option<OnCrash>,
    /// Extra failures that are retried.
    pub retry_if: Option<RetryIf>,
    /// The kind and its settings.
    pub kind: NodeKind,
}

/// What the daemon does on restart with a node whose attempt was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCrash {
    /// Attempt it again under its retry policy (at-least-once).
    Retry,
    /// Hold it in `needs_decision` until an operator retries, succeeds or fails it.
    Ask,
}

/// Failures that are retried besides the kind's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryIf {
    /// Shell and plugin exit codes that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
    /// HTTP statuses that are retried (besides 429 and 5xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
}

/// A node's kind with the kind's own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// Run a shell script.
    Shell(ShellNode),
    /// Make an HTTP request.
    Http(HttpNode),
    /// End the run successfully unless a condition holds.
    Filter(FilterNode),
    /// Build a value from templates.
    Transform(TransformNode),
    /// Wait durably.
    Delay(DelayNode),
    /// Ask a language model.
    Llm(LlmNode),
    /// Wait for a person's decision.
    Approval(ApprovalNode),
    /// Send a message.
    Notify(NotifyNode),
    /// Run the executable `sluice-node-<kind>` from the plugins directory.
    Plugin(PluginNode),
}

impl NodeKind {
    /// The kind's name as written in files.
    pub fn name(&self) -> &str {
        match self {
            Self::Shell(_) => "shell",
            Self::Http(_) => "http",
            Self::Filter(_) => "filter",
            Self::Transform(_) => "transform",
            Self::Delay(_) => "delay",
            Self::Llm(_) => "llm",
            Self::Approval(_) => "approval",
            Self::Notify(_) => "notify",
            Self::Plugin(p) => &p.kind,
        }
    }

    fn fields_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::Shell(n) => serde_json::to_value(n),
            Self::Http(n) => serde_json::to_value(n),
            Self::Filter(n) => serde_json::to_value(n),
            Self::Transform(n) => serde_json::to_value(n),
            Self::Delay(n) => serde_json::to_value(n),
            Self::Llm(n) => serde_json::to_value(n),
            Self::Approval(n) => serde_json::to_value(n),
            Self::Notify(n) => serde_json::to_value(n),
            Self::Plugin(n) => {
                let mut map = Map::new();
                if !n.config.is_null() {
                    map.insert("config".into(), n.config.clone());
                }
                Ok(Value::Object(map))
            }
        }
    }
}

/// `shell`: run a script in its own process group.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellNode {
    /// The script. Template values reach it through environment variables, never as script text; `| safe` opts out.
    pub run: String,
    /// Interpreter run with `-c` (default `/bin/sh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Environment variables (templated); the daemon's own environment is not inherited.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Names of the daemon's environment variables to pass through (besides PATH).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Working directory (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET (the default).
    #[default]
    #[serde(alias = "get")]
    Get,
    /// POST
    #[serde(alias = "post")]
    Post,
    /// PUT
    #[serde(alias = "put")]
    Put,
    /// PATCH
    #[serde(alias = "patch")]
    Patch,
    /// DELETE
    #[serde(alias = "delete")]
    Delete,
    /// HEAD
    #[serde(alias = "head")]
    Head,
    /// OPTIONS
    #[serde(alias = "options")]
    Options,
}

impl HttpMethod {
    /// Whether repeating the request is harmless (used for the `on_crash` default).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Self::Get | Self::Head | Self::Put | Self::Delete | Self::Options
        )
    }
}

/// `http`: make a request.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpNode {
    /// Request method (default GET).
    #[serde(default)]
    pub method: HttpMethod,
    /// URL (templated).
    pub url: String,
    /// Request headers (values templated).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Query parameters (values templated).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub query: IndexMap<String, String>,
    /// A JSON body (every string in it templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A raw body (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Follow redirects (up to 10).
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// Fail the node on a 4xx or 5xx status (default true).
    #[serde(default = "default_true")]
    pub error_on_status: bool,
}

/// `filter`: let the run continue only when the condition holds.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterNode {
    /// Expression (no braces); false ends the run successfully, downstream skipped.
    pub condition: String,
}

/// `transform`: produce a structure from templates.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformNode {
    /// Any structure; every string in it is rendered.
    pub output: Value,
}

/// `delay`: a durable wait that survives restarts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayNode {
    /// Wait this long.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Wait until this RFC 3339 time (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// One model name or a fallback list tried in order.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelChoice {
    /// One model.
    One(String),
    /// Models tried in order until one answers.
    Fallbacks(Vec<String>),
}

/// Who says a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions.
    System,
    /// The user's turn.
    User,
    /// The model's earlier turn.
    Assistant,
}

/// One message of an LLM conversation.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// Speaker.
    pub role: ChatRole,
    /// Text (templated).
    pub content: String,
}

/// The shape of an LLM reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LlmFormat {
    /// Free text (the default).
    #[default]
    Text,
    /// JSON, parsed (and checked against `schema` when given).
    Json,
}

/// `llm`: a chat completion from a configured provider.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmNode {
    /// Provider name from sluiced.toml (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Model, or a list tried in order (default: the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelChoice>,
    /// System prompt (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The prompt (templated); or give `messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A conversation (templated); or give `prompt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Upper bound on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LlmFormat,
    /// JSON Schema the reply must match (with `format: json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Refuse (or, with `truncate`, cut) a rendered prompt longer than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_chars: Option<u32>,
    /// Cut an over-long prompt instead of failing.
    #[serde(default)]
    pub truncate: bool,
}

/// What an approval does when nobody decides in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Treat as rejected (the default).
    #[default]
    Reject,
    /// Treat as approved.
    Approve,
    /// Fail the node.
    Fail,
}

/// Payload style for webhook notifications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// `{"title", "text", ...fields}` (the default).
    #[default]
    Generic,
    /// Slack incoming-webhook payload.
    Slack,
    /// Discord webhook payload.
    Discord,
}

/// An email to send.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailTarget {
    /// Recipients (templated).
    pub to: Vec<String>,
    /// Subject (templated; default: the title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Where an approval request is announced.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// Webhook URL (templated; usually `{{ secrets.name }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Payload style for the webhook.
    #[serde(default)]
    pub format: NotifyFormat,
    /// Email delivery through the daemon's SMTP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTarget>,
}

/// `approval`: pause until an allowed person approves or rejects.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalNode {
    /// What the approver is asked (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Users and `@groups` who may decide (default: any operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Outcome when the node's `timeout` passes undecided.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Distinct approvals needed (two-person rule with 2).
    #[serde(default = "default_one")]
    pub min_approvals: u32,
    /// Let the user who triggered the run approve it.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// Repeat the notification this often while undecided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind_every: Option<Duration>,
    /// Announce the request here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyTarget>,
}

impl Default for ApprovalNode {
    fn default() -> Self {
        Self {
            message: None,
            approvers: Vec::new(),
            on_timeout: OnTimeout::default(),
            min_approvals: 1,
            allow_self_approval: false,
            remind_every: None,
            notify: None,
        }
    }
}

fn default_one() -> u32 {
    1
}

/// `notify`: post a message to a webhook or send an email.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyNode {
    /// The message (templated).
    pub message: String,
    /// A title or heading (templated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Webhook URL (templated; usually `{{ secrets.name }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Payload style for the webhook.
    #[serde(default)]
    pub format: NotifyFormat,
    /// Email delivery through the daemon's SMTP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTarget>,
}

/// An exec plugin node: `sluice-node-<kind>` gets `config` and the context as JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginNode {
    /// The plugin's kind name.
    pub kind: String,
    /// Settings passed to the plugin (every string templated).
    pub config: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginFields {
    #[serde(default)]
    config: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonFields {
    id: String,
    // Read separately to pick the kind; declared so a missing `kind` is reported.
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default)]
    timeout: Option<Duration>,
    #[serde(default)]
    on_crash: Option<OnCrash>,
    #[serde(default)]
    retry_if: Option<RetryIf>,
}

/// A problem with one field of a node or trigger, relative to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path below the node or trigger.
    pub path: DocPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// Point at the key rather than the value.
    pub at_key: bool,
}

/// Deserialises `value` as `T`, turning serde's error into a [`FieldError`]
/// with the failing path and, for unknown fields, a did-you-mean hint drawn from `known`.
pub fn from_value_at<T: serde::de::DeserializeOwned>(
    value: Value,
    what: &str,
    known: &[&str],
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let path = DocPath::from_serde(err.path());
        let inner = err.into_inner().to_string();
        explain_serde_error(&inner, path, what, known)
    })
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

fn explain_serde_error(msg: &str, path: DocPath, what: &str, known: &[&str]) -> FieldError {
    if let Some(field) = backticked(msg, "unknown field ") {
        let path = match path.0.last() {
            Some(crate::document::Seg::Key(k)) if *k == field => path,
            _ => path.key(&field),
        };
        let hint = suggest::did_you_mean(&field, known.iter().copied()).or_else(|| {
            (!known.is_empty()).then(|| format!("allowed fields: {}", known.join(", ")))
        });
        return FieldError {
            path,
            message: format!("unknown field '{field}' in {what}"),
            hint,
            at_key: true,
        };
    }
    if let Some(field) = backticked(msg, "missing field ") {
        return FieldError {
            path,
            message: format!("missing required field '{field}' in {what}"),
            hint: None,
            at_key: true,
        };
    }
    if let Some(variant) = backticked(msg, "unknown variant ") {
        let expected: Vec<String> = msg
            .split('`')
            .skip(3)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let hint = suggest::did_you_mean(&variant, expected.iter().map(String::as_str))
            .or_else(|| Some(format!("expected one of: {}", expected.join(", "))));
        return FieldError {
            path: path.clone(),
            message: format!("invalid value '{variant}' for '{path}'"),
            hint,
            at_key: false,
        };
    }
    let field = if path.0.is_empty() {
        what.to_owned()
    } else {
        format!("'{path}'")
    };
    FieldError {
        message: format!("invalid value for {field}: {msg}"),
        path,
        hint: None,
        at_key: false,
    }
}

impl Node {
    /// Reads a node from its document value, collecting every problem found.
    pub fn from_value(value: &Value) -> Result<Node, Vec<FieldError>> {
        let Some(map) = value.as_object() else {
            return Err(vec![FieldError {
                path: DocPath::root(),
                message: "a node must be a mapping with at least `id` and `kind`".into(),
                hint: None,
                at_key: false,
            }]);
        };
        let mut common = Map::new();
        let mut own = Map::new();
        for (k, v) in map {
            if COMMON_FIELDS.contains(&k.as_str()) {
                common.insert(k.clone(), v.clone());
            } else {
                own.insert(k.clone(), v.clone());
            }
        }
        let kind_name = common
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut errors = Vec::new();
        let common: Option<CommonFields> =
            match from_value_at(Value::Object(common), "a node", COMMON_FIELDS) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
        let kind = match kind_name.as_deref() {
            Some(name) => match parse_kind(name, own) {
                Ok(kind) => Some(kind),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        match (common, kind) {
            (Some(c), Some(kind)) if errors.is_empty() => Ok(Node {
                id: c.id,
                description: c.description,
                needs: c.needs,
                when: c.when,
                retry: c.retry,
                timeout: c.timeout,
                on_crash: c.on_crash,
                retry_if: c.retry_if,
                kind,
            }),
            _ => Err(errors),
        }
    }

    /// The `on_crash` policy in force: the node's own, else `ask` for non-idempotent
    /// HTTP methods and `retry` for everything else.
    pub fn effective_on_crash(&self) -> OnCrash {
        match (&self.on_crash, &self.kind) {
            (Some(policy), _) => *policy,
            (None, NodeKind::Http(http)) if !http.method.is_idempotent() => OnCrash::Ask,
            _ => OnCrash::Retry,
        }
    }

    /// The node as a document value (the inverse of [`Node::from_value`]).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut map = Map::new();
        map.insert("id".into(), Value::String(self.id.clone()));
        map.insert("kind".into(), Value::String(self.kind.name().to_owned()));
        if let Some(d) = &self.description {
            map.insert("description".into(), Value::String(d.clone()));
        }
        if !self.needs.is_empty() {
            map.insert("needs".into(), serde_json::to_value(&self.needs)?);
        }
        if let Some(w) = &self.when {
            map.insert("when".into(), Value::String(w.clone()));
        }
        if let Some(r) = &self.retry {
            map.insert("retry".into(), serde_json::to_value(r)?);
        }
        if let Some(t) = &self.timeout {
            map.insert("timeout".into(), serde_json::to_value(t)?);
        }
        if let Some(c) = &self.on_crash {
            map.insert("on_crash".into(), serde_json::to_value(c)?);
        }
        if let Some(r) = &self.retry_if {
            map.insert("retry_if".into(), serde_json::to_value(r)?);
        }
        if let Value::Object(fields) = self.kind.fields_value()? {
            map.extend(fields);
        }
        Ok(Value::Object(map))
    }
}

/// Field names of a kind, for hints.
pub fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "shell" => &["run", "shell", "env", "inherit_env", "workdir"],
        "http" => &[
            "method",
            "url",
            "headers",
            "query",
            "json",
            "body",
            "follow_redirects",
            "error_on_status",
        ],
        "filter" => &["condition"],
        "transform" => &["output"],
        "delay" => &["for", "until"],
        "llm" => &[
            "provider",
            "model",
            "system",
            "prompt",
            "messages",
            "temperature",
            "max_tokens",
            "format",
            "schema",
            "max_input_chars",
            "truncate",
        ],
        "approval" => &[
            "message",
            "approvers",
            "on_timeout",
            "min_approvals",
            "allow_self_approval",
            "remind_every",
            "notify",
        ],
        "notify" => &["message", "title", "webhook", "format", "email"],
        _ => &["config"],
    }
}

fn parse_kind(name: &str, own: Map<String, Value>) -> Result<NodeKind, FieldError> {
    let known: Vec<&str> = COMMON_FIELDS
        .iter()
        .chain(kind_fields(name))
        .copied()
        .collect();
    let what = match name {
        "http" | "llm" => format!("an {name} node"),
        _ if BUILTIN_KINDS.contains(&name) => format!("a {name} node"),
        _ => format!("a plugin node (kind '{name}')"),
    };
    let v = Value::Object(own);
    Ok(match name {
        "shell" => NodeKind::Shell(from_value_at(v, &what, &known)?),
        "http" => NodeKind::Http(from_value_at(v, &what, &known)?),
        "filter" => NodeKind::Filter(from_value_at(v, &what, &known)?),
        "transform" => NodeKind::Transform(from_value_at(v, &what, &known)?),
        "delay" => NodeKind::Delay(from_value_at(v, &what, &known)?),
        "llm" => NodeKind::Llm(from_value_at(v, &what, &known)?),
        "approval" => NodeKind::Approval(from_value_at(v, &what, &known)?),
        "notify" => NodeKind::Notify(from_value_at(v, &what, &known)?),
        _ => {
            let fields: PluginFields = from_value_at(v, &what, &known)?;
            NodeKind::Plugin(PluginNode {
                kind: name.to_owned(),
                config: fields.config,
            })
        }
    })
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Node::from_value(&value).map_err(|errors| {
            let msg = errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            serde::de::Error::custom(msg)
        })
    }
}

impl JsonSchema for Node {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Node".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        crate::schema::node_schema(generator)
    }
}

/// Fields common to all nodes, described for the JSON Schema only.
#[derive(JsonSchema, Deserialize)]
#[allow(dead_code)]
pub(crate) struct CommonFieldsSchema {
    /// Unique id within the pipeline.
    id: String,
    /// What the node is for.
    description: Option<String>,
    /// Ids of the nodes that must finish first.
    #[serde(default)]
    needs: Vec<String>,
    /// Expression (no braces); when false the node is skipped.
    when: Option<String>,
    /// Retry policy for this node.
    retry: Option<RetryPolicy>,
    /// Time limit for one attempt (approvals: the decision deadline).
    timeout: Option<Duration>,
    /// On restart after a crash: `retry` the interrupted attempt or `ask` an operator.
    on_crash: Option<OnCrash>,
    /// Extra failures that are retried.
    retry_if: Option<RetryIf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_common_and_kind_fields() {
        let node = Node::from_value(&json!({
            "id": "fetch", "kind": "http", "url": "https://x", "needs": ["a"], "timeout": "5s"
        }))
        .unwrap();
        assert_eq!(node.id, "fetch");
        assert_eq!(node.needs, vec!["a"]);
        assert!(matches!(&node.kind, NodeKind::Http(h) if h.url == "https://x"));
    }

    #[test]
    fn unknown_field_names_the_kind_and_suggests() {
        let errs = Node::from_value(&json!({"id": "a", "kind": "http", "urll": "x"})).unwrap_err();
        let e = errs.iter().find(|e| e.message.contains("urll")).unwrap();
        assert_eq!(e.message, "unknown field 'urll' in an http node");
        assert_eq!(e.hint.as_deref(), Some("did you mean 'url'?"));
        assert_eq!(e.path.to_string(), "urll");
    }

    #[test]
    fn round_trips_through_value() {
        let v =
            json!({"id": "p", "kind": "notify", "message": "hi", "webhook": "u", "needs": ["a"]});
        let node = Node::from_value(&v).unwrap();
        let back = Node::from_value(&node.to_value().unwrap()).unwrap();
        assert_eq!(node, back);
    }

    #[test]
    fn post_requests_ask_after_a_crash_by_default() {
        let post =
            Node::from_value(&json!({"id": "p", "kind": "http", "method": "POST", "url": "u"}));
        assert_eq!(post.unwrap().effective_on_crash(), OnCrash::Ask);
        let get = Node::from_value(&json!({"id": "g", "kind": "http", "url": "u"}));
        assert_eq!(get.unwrap().effective_on_crash(), OnCrash::Retry);
    }
}
