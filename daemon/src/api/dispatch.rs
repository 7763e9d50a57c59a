//! Dispatch through the method table: the caller's role is checked against
//! the method's ([`sluice_shared::method`]), params are read into the
//! method's params type, the handler of its area runs, and state-changing
//! calls are audited. A handler is a plain `async fn(&Cx, M::Params) ->
//! Result<M::Result, RpcError>`: it returns errors as values, so bad input
//! never takes the daemon down.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sluice_shared::method::{self, Method, MethodInfo};
use sluice_shared::protocol::{ErrorCode, Role, RpcError};

use super::ApiContext;
use super::conn::Session;
use super::{approvals, audit, limits, logs, pipelines, runs, schedules, status, tokens};
use crate::audit::AuditError;

/// What a handler gets besides its params: the daemon and who is calling.
pub(crate) struct Cx<'a> {
    /// The daemon's parts.
    pub api: &'a ApiContext,
    /// The caller.
    pub session: &'a Session,
}

impl Cx<'_> {
    /// The caller's user name.
    pub fn user(&self) -> &str {
        &self.session.caller.user
    }
}

/// Handlers read the daemon's parts (`cx.engine`, `cx.registry`) as if `cx`
/// were the context itself; who calls is `cx.user()`.
impl std::ops::Deref for Cx<'_> {
    type Target = ApiContext;

    fn deref(&self) -> &ApiContext {
        self.api
    }
}

/// Defines [`route`] from a list of `Method => handler`. Each arm reads the
/// params as the table's `M::Params` and requires the handler to answer
/// `M::Result`, so a handler that does not fit its table entry does not compile.
macro_rules! routes {
    ($( $m:ident => $handler:path, )*) => {
        /// Runs a method by name with its params as sent.
        async fn route(cx: &Cx<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
            match method {
                $(
                    n if n == method::$m::NAME => {
                        let p: <method::$m as Method>::Params = parse(params)?;
                        let r: <method::$m as Method>::Result = $handler(cx, p).await?;
                        to_value(r)
                    }
                )*
                other => Err(RpcError::new(
                    ErrorCode::MethodNotFound,
                    format!("no method '{other}'"),
                )),
            }
        }

        /// Reads `params` as the params of a method [`route`] serves.
        fn check_routed(method: &str, params: Value) -> Option<Result<(), RpcError>> {
            $( if method == method::$m::NAME {
                return Some(parse::<<method::$m as Method>::Params>(params).map(drop));
            } )*
            None
        }

        /// The methods [`route`] serves (the connection serves the rest).
        #[cfg(test)]
        const ROUTED: &[&str] = &[$(method::$m::NAME),*];
    };
}

routes! {
    Status => status::status,
    Metrics => status::metrics,
    ConfigErrorsList => status::config_errors,
    ConfigReload => status::config_reload,
    PipelinesList => pipelines::list,
    PipelinesGet => pipelines::get,
    PipelinesEnable => pipelines::enable,
    PipelinesDisable => pipelines::disable,
    PipelinesTrigger => pipelines::trigger,
    RunsList => runs::list,
    RunsGet => runs::get,
    RunsCancel => runs::cancel,
    RunsRetry => runs::retry,
    RunsResolve => runs::resolve,
    LogsGet => logs::get,
    ApprovalsList => approvals::list,
    ApprovalsDecide => approvals::decide,
    AuditList => audit::list,
    AuditVerify => audit::verify,
    AuditAck => audit::ack,
    SchedulesList => schedules::list,
    SchedulesPause => schedules::pause,
    SchedulesResume => schedules::resume,
    MisfiresList => schedules::misfires,
    LimitsUsage => limits::usage,
    LimitsExplain => limits::explain,
    TokensCreate => tokens::create,
    TokensList => tokens::list,
    TokensRevoke => tokens::revoke,
}

/// The role a method needs; `None` for a method that does not exist.
pub fn required_role(method: &str) -> Option<Role> {
    method::find(method).map(|m| m.role)
}

/// Reads a method's params (absent params read as `{}`).
pub fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("invalid params: {e}")))
}

/// Reads `params` as the params of the method named `method`; `None` for a
/// method that does not exist (so fuzzing reaches every params type).
pub fn check_params(method: &str, params: Value) -> Option<Result<(), RpcError>> {
    fn read<M: Method>(params: Value) -> Option<Result<(), RpcError>> {
        Some(parse::<M::Params>(params).map(drop))
    }
    match method {
        n if n == method::Hello::NAME => read::<method::Hello>(params),
        n if n == method::Subscribe::NAME => read::<method::Subscribe>(params),
        n if n == method::Unsubscribe::NAME => read::<method::Unsubscribe>(params),
        _ => check_routed(method, params),
    }
}

pub(crate) fn to_value<T: Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

/// Whether the session may call `method`, as the table says.
pub(crate) fn permit(session: &Session, method: MethodInfo) -> Result<(), RpcError> {
    let role = session.role.unwrap_or(Role::Viewer);
    if role < method.role {
        return Err(RpcError::new(
            ErrorCode::PermissionDenied,
            format!(
                "'{}' needs the {} role; user '{}' is {}",
                method.name,
                method.role.as_str(),
                session.caller.user,
                role.as_str()
            ),
        ));
    }
    Ok(())
}

/// Runs a method for a caller.
pub(crate) async fn dispatch(
    ctx: &ApiContext,
    session: &Session,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let Some(info) = method::find(method) else {
        return Err(RpcError::new(
            ErrorCode::MethodNotFound,
            format!("no method '{method}'; see docs/protocol.md"),
        ));
    };
    let audited = info.role > Role::Viewer;
    if let Err(refused) = permit(session, info) {
        // Only state-changing methods can be refused (every role may read).
        if audited {
            // The caller typed the target: masked like any audited parameter.
            let target =
                target_of(method, &params).map(|t| ctx.engine.redactor().redact(&t).into_owned());
            ctx.denials.note(&session.caller.user, method, target);
        }
        return Err(refused);
    }
    let is_ack = method == method::AuditAck::NAME;
    // Every state-changing call is audited: while the trail is broken none runs
    // unrecorded, except the acknowledgement that repairs it.
    if audited
        && !is_ack
        && let Some(problem) = ctx.audit.problem().await
    {
        return Err(
            RpcError::new(ErrorCode::Conflict, AuditError::Broken(problem).to_string())
                .with_data(json!({ "audit_broken": true })),
        );
    }
    let cx = Cx { api: ctx, session };
    if audited && let Some(key) = params.get("idempotency_key") {
        let Some(key) = key
            .as_str()
            .filter(|k| !k.is_empty() && k.len() <= super::idempotency::MAX_KEY_LEN)
        else {
            return Err(RpcError::new(
                ErrorCode::InvalidParams,
                format!(
                    "idempotency_key must be a string of 1 to {} characters",
                    super::idempotency::MAX_KEY_LEN
                ),
            ));
        };
        let key = key.to_owned();
        return ctx
            .idempotency
            .once(
                &session.caller.user,
                method,
                &key,
                &params,
                apply(&cx, method, params.clone(), audited && !is_ack),
            )
            .await;
    }
    apply(&cx, method, params, audited && !is_ack).await
}

/// Runs an allowed method and, with `audit`, records it when it succeeds.
async fn apply(cx: &Cx<'_>, method: &str, params: Value, audit: bool) -> Result<Value, RpcError> {
    let detail = params.clone();
    let result = route(cx, method, params).await;
    if audit && result.is_ok() {
        let target = target_of(method, &detail);
        // Parameters can carry secret values (inputs, reasons): never stored as typed.
        let detail = cx.engine.redactor().redact_json(detail);
        if let Err(e) = cx.audit.record(cx.user(), method, target, detail).await {
            tracing::error!(error = %e, method, "cannot write the audit trail");
        }
    }
    result
}

/// What an audited call acted on, for the audit row (`run #12`, `pipeline x`).
fn target_of(method: &str, params: &Value) -> Option<String> {
    let area = method.split_once('.').map_or(method, |(area, _)| area);
    match area {
        "pipelines" => params
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!("pipeline {n}")),
        "runs" => params
            .get("id")
            .and_then(Value::as_i64)
            .map(|id| format!("run #{id}")),
        "schedules" => params.get("pipeline").and_then(Value::as_str).map(|n| {
            match params.get("id").and_then(Value::as_str) {
                Some(id) => format!("pipeline {n} schedule {id}"),
                None => format!("pipeline {n}"),
            }
        }),
        "approvals" => params
            .get("id")
            .and_then(Value::as_i64)
            .map(|id| format!("approval #{id}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection serves these itself (they act on the connection).
    const CONNECTION: &[&str] = &[
        method::Hello::NAME,
        method::Subscribe::NAME,
        method::Unsubscribe::NAME,
    ];

    #[test]
    fn every_method_of_the_table_is_served_once() {
        for m in method::ALL {
            let n = ROUTED.iter().filter(|r| **r == m.name).count()
                + CONNECTION.iter().filter(|r| **r == m.name).count();
            assert_eq!(n, 1, "{} is served {n} times", m.name);
            assert!(check_params(m.name, json!({})).is_some(), "{}", m.name);
        }
        assert_eq!(ROUTED.len() + CONNECTION.len(), method::ALL.len());
        assert!(check_params("runs.nope", json!({})).is_none());
    }

    #[test]
    fn audited_calls_name_their_target() {
        let t = |m: &str, p: Value| target_of(m, &p);
        assert_eq!(
            t(method::RunsRetry::NAME, json!({ "id": 4 })).as_deref(),
            Some("run #4")
        );
        assert_eq!(
            t(method::PipelinesTrigger::NAME, json!({ "name": "x" })).as_deref(),
            Some("pipeline x")
        );
        assert_eq!(
            t(
                method::SchedulesPause::NAME,
                json!({ "pipeline": "x", "id": "ab12cd" })
            )
            .as_deref(),
            Some("pipeline x schedule ab12cd")
        );
        assert_eq!(
            t(method::ApprovalsDecide::NAME, json!({ "id": 3 })).as_deref(),
            Some("approval #3")
        );
        assert_eq!(t(method::ConfigReload::NAME, json!({})), None);
    }
}
