//! The method table: every socket method once, with its wire name, the least
//! role that may call it, and the types of its params and result. The daemon
//! dispatches through it and clients call through it
//! (`client.call::<RunsRetry>(params)`), so a method name is spelled here and
//! nowhere else. docs/protocol.md lists the same methods with the same roles
//! (a test checks it).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::{
    ApprovalInfo, ApprovalsListParams, AuditAckParams, AuditAckResult, AuditEntry, AuditListParams,
    AuditVerifyResult, CancelResult, ConfigErrors, DecideParams, DecideResult, HelloParams,
    HelloResult, LimitsExplainParams, LimitsExplainResult, LimitsUsageParams, LimitsUsageResult,
    LogsPage, LogsParams, MetricsResult, MisfireEntry, MisfiresListParams, NoParams,
    PipelineDetail, PipelineEnabled, PipelineRef, PipelineSummary, ReloadResult, ResolveParams,
    ResolveResult, RetryParams, RetryResult, Role, RunDetail, RunRef, RunsListParams, RunsPage,
    ScheduleRef, ScheduleSummary, SchedulesPaused, StatusResult, SubscribeParams, SubscribeResult,
    TokenCreateParams, TokenCreateResult, TokenInfo, TokenRevokeParams, TokenRevokeResult,
    TriggerParams, TriggerResult, UnsubscribeParams,
};

/// One socket method: a zero-sized type per method ties its name, role,
/// params and result together.
pub trait Method {
    /// The name on the wire, e.g. `runs.retry`.
    const NAME: &'static str;
    /// The least role that may call it.
    const ROLE: Role;
    /// What the caller sends.
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// What the daemon answers.
    type Result: Serialize + DeserializeOwned + Send + 'static;
}

/// A method's name and role, for code that works on every method at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// The name on the wire.
    pub name: &'static str,
    /// The least role that may call it.
    pub role: Role,
}

/// The method named `name`, if there is one.
pub fn find(name: &str) -> Option<MethodInfo> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// A request of some method with its params encoded, for a client that
/// queues requests of different methods together (the console).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The method's name (always some [`Method::NAME`]).
    pub method: &'static str,
    /// The encoded params.
    pub params: Value,
}

impl Call {
    /// A request of method `M`.
    pub fn new<M: Method>(params: &M::Params) -> Self {
        Self {
            method: M::NAME,
            // Params are plain data (strings, numbers, maps with string keys):
            // encoding them cannot fail, and if it ever did the daemon would
            // answer "invalid params" to the null sent instead.
            params: serde_json::to_value(params).unwrap_or(Value::Null),
        }
    }

    /// The same request carrying an idempotency key: the daemon applies a
    /// state-changing call once per key (docs/protocol.md, "Idempotency keys").
    pub fn idempotent(mut self, key: &str) -> Self {
        if let Value::Object(map) = &mut self.params {
            map.insert("idempotency_key".into(), Value::from(key));
        }
        self
    }
}

/// Names of the notifications the daemon sends (no id, no reply).
pub mod notice {
    /// An event of a subscription ([`crate::protocol::EventNotice`]).
    pub const EVENT: &str = "event";
    /// Events were dropped for a subscription ([`crate::protocol::LaggedNotice`]).
    pub const LAGGED: &str = "lagged";
}

macro_rules! methods {
    ($( $(#[$doc:meta])* $ty:ident = $name:literal, $role:ident, $params:ty => $result:ty; )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
            pub struct $ty;

            impl Method for $ty {
                const NAME: &'static str = $name;
                const ROLE: Role = Role::$role;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method, in the order docs/protocol.md describes them.
        pub const ALL: &[MethodInfo] = &[
            $( MethodInfo { name: $name, role: Role::$role }, )*
        ];
    };
}

methods! {
    /// `hello`: the handshake, first on every connection (a caller without a role is refused).
    Hello = "hello", Viewer, HelloParams => HelloResult;
    /// `status`: the daemon at a glance.
    Status = "status", Viewer, NoParams => StatusResult;
    /// `pipelines.list`: every known pipeline.
    PipelinesList = "pipelines.list", Viewer, NoParams => Vec<PipelineSummary>;
    /// `pipelines.get`: one pipeline with its definition.
    PipelinesGet = "pipelines.get", Viewer, PipelineRef => PipelineDetail;
    /// `pipelines.enable`: lets a pipeline's triggers start runs again.
    PipelinesEnable = "pipelines.enable", Admin, PipelineRef => PipelineEnabled;
    /// `pipelines.disable`: stops a pipeline's triggers starting runs.
    PipelinesDisable = "pipelines.disable", Admin, PipelineRef => PipelineEnabled;
    /// `pipelines.trigger`: starts a run now.
    PipelinesTrigger = "pipelines.trigger", Operator, TriggerParams => TriggerResult;
    /// `runs.list`: runs newest first, filtered and paged.
    RunsList = "runs.list", Viewer, RunsListParams => RunsPage;
    /// `runs.get`: one run with its nodes.
    RunsGet = "runs.get", Viewer, RunRef => RunDetail;
    /// `runs.cancel`: stops a run.
    RunsCancel = "runs.cancel", Operator, RunRef => CancelResult;
    /// `runs.retry`: a new run of a finished one.
    RunsRetry = "runs.retry", Operator, RetryParams => RetryResult;
    /// `runs.resolve`: decides a node that needs a decision.
    RunsResolve = "runs.resolve", Operator, ResolveParams => ResolveResult;
    /// `logs.get`: a page of a run's stored log lines.
    LogsGet = "logs.get", Viewer, LogsParams => LogsPage;
    /// `approvals.list`: the pending queue, or every approval.
    ApprovalsList = "approvals.list", Viewer, ApprovalsListParams => Vec<ApprovalInfo>;
    /// `approvals.decide`: approves or rejects.
    ApprovalsDecide = "approvals.decide", Operator, DecideParams => DecideResult;
    /// `metrics`: throughput, durations and queue depth.
    Metrics = "metrics", Viewer, NoParams => MetricsResult;
    /// `audit.list`: audit rows newest first.
    AuditList = "audit.list", Viewer, AuditListParams => Vec<AuditEntry>;
    /// `audit.verify`: checks the audit trail's hash chain.
    AuditVerify = "audit.verify", Viewer, NoParams => AuditVerifyResult;
    /// `audit.ack`: an admin acknowledges a broken audit trail.
    AuditAck = "audit.ack", Admin, AuditAckParams => AuditAckResult;
    /// `config.errors`: problems of rejected pipeline files, and warnings.
    ConfigErrorsList = "config.errors", Viewer, NoParams => ConfigErrors;
    /// `config.reload`: reads the pipelines directory again.
    ConfigReload = "config.reload", Admin, NoParams => ReloadResult;
    /// `schedules.list`: every cron schedule.
    SchedulesList = "schedules.list", Viewer, NoParams => Vec<ScheduleSummary>;
    /// `schedules.pause`: stops a pipeline's schedules firing.
    SchedulesPause = "schedules.pause", Operator, ScheduleRef => SchedulesPaused;
    /// `schedules.resume`: lets paused schedules fire again.
    SchedulesResume = "schedules.resume", Operator, ScheduleRef => SchedulesPaused;
    /// `misfires.list`: fires that were due and did not run as scheduled.
    MisfiresList = "misfires.list", Viewer, MisfiresListParams => Vec<MisfireEntry>;
    /// `limits.usage`: each user's usage against each limit.
    LimitsUsage = "limits.usage", Viewer, LimitsUsageParams => LimitsUsageResult;
    /// `limits.explain`: why a run has (not) started.
    LimitsExplain = "limits.explain", Viewer, LimitsExplainParams => LimitsExplainResult;
    /// `tokens.create`: a webhook token for a user.
    TokensCreate = "tokens.create", Admin, TokenCreateParams => TokenCreateResult;
    /// `tokens.list`: every webhook token (never the token itself).
    TokensList = "tokens.list", Admin, NoParams => Vec<TokenInfo>;
    /// `tokens.revoke`: a token stops working.
    TokensRevoke = "tokens.revoke", Admin, TokenRevokeParams => TokenRevokeResult;
    /// `subscribe`: events on this connection, as notifications.
    Subscribe = "subscribe", Viewer, SubscribeParams => SubscribeResult;
    /// `unsubscribe`: ends a subscription of this connection.
    Unsubscribe = "unsubscribe", Viewer, UnsubscribeParams => bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, m) in ALL.iter().enumerate() {
            assert!(
                ALL[i + 1..].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            assert_eq!(find(m.name), Some(*m));
        }
        assert_eq!(find("runs.nope"), None);
        assert_eq!(find(RunsRetry::NAME).map(|m| m.role), Some(RunsRetry::ROLE));
    }

    #[test]
    fn a_key_travels_among_the_params() {
        let c = Call::new::<RunsCancel>(&crate::protocol::RunRef {
            id: crate::run::RunId(4),
        })
        .idempotent("k1");
        assert_eq!(
            c.params,
            serde_json::json!({ "id": 4, "idempotency_key": "k1" })
        );
    }

    #[test]
    fn methods_without_params_send_an_object_and_accept_anything() {
        let c = Call::new::<Status>(&NoParams);
        assert_eq!(c.method, "status");
        assert_eq!(c.params, serde_json::json!({}));
        for v in [
            serde_json::json!(null),
            serde_json::json!([1]),
            serde_json::json!("x"),
            serde_json::json!({ "idempotency_key": "k" }),
        ] {
            assert_eq!(serde_json::from_value::<NoParams>(v).ok(), Some(NoParams));
        }
    }

    #[test]
    fn loosely_typed_params_read_odd_values_as_absent() {
        let p: ApprovalsListParams =
            serde_json::from_value(serde_json::json!({ "pending": "yes" })).expect("read");
        assert_eq!(p.pending, None);
        let p: MisfiresListParams =
            serde_json::from_value(serde_json::json!({ "pipeline": 3, "limit": 20 }))
                .expect("read");
        assert_eq!((p.pipeline, p.limit), (None, Some(20)));
        let p: UnsubscribeParams =
            serde_json::from_value(serde_json::json!({ "subscription": -1 })).expect("read");
        assert_eq!(p.subscription, None);
    }
}
