//! One client connection: bounded frames in, a bounded queue of frames out
//! written with a timeout, subscriptions that drop (and report) events rather
//! than wait for a slow reader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sluice_shared::method::{self, Method, notice};
use sluice_shared::protocol::{
    ErrorCode, EventNotice, HelloResult, LaggedNotice, Notification, Request, Response, Role,
    RpcError, SubscribeParams, SubscribeResult, UnsubscribeParams, protocol_version,
};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::ApiContext;
use super::dispatch::{self, parse, permit};
use super::frame::{BadFrame, Frame, FrameDecoder, check_hello, decode_request, read_frame};
use super::identity::Caller;
use super::slots::{SlotRefusal, UserSlot};

/// Frames queued for a client before events are dropped for it.
const OUT_QUEUE: usize = 1024;
/// Requests of one connection handled at the same time.
const MAX_IN_FLIGHT: usize = 64;
/// A client that does not take a frame for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection's identity, once known.
pub(crate) struct Session {
    pub caller: Caller,
    pub role: Option<Role>,
}

fn encode<T: serde::Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).unwrap_or_else(|e| {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{{\"code\":-32603,\"message\":\"cannot encode reply: {e}\"}}}}")
    })
}

/// Tells a connection it has no slot, without waiting for it, and drops it.
pub(crate) fn turn_away(stream: &UnixStream, refusal: &SlotRefusal) {
    tracing::debug!(%refusal, "socket connection refused");
    let e = RpcError::new(ErrorCode::Refused, refusal.to_string())
        .with_data(serde_json::json!({ "limit": "connections" }));
    let mut line = encode(&Response::err(Value::Null, e));
    line.push('\n');
    // A fresh socket's buffer takes one short line; if not, closing says enough.
    let _ = stream.try_write(line.as_bytes());
}

pub(crate) async fn serve(
    stream: UnixStream,
    mut slot: UserSlot,
    ctx: Arc<ApiContext>,
    stop: CancellationToken,
) {
    // The handshake deadline counts from accept, so a slow user lookup cannot extend it.
    let hello_deadline = tokio::time::Instant::now() + ctx.limits.hello_timeout;
    let (uid, gid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.gid()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    // User database lookups may hit NSS (LDAP, sssd): keep them off the runtime threads.
    let caller = match tokio::task::spawn_blocking(move || Caller::from_uid(uid, gid)).await {
        Ok(c) => c,
        Err(_) => return,
    };
    let role = ctx.access.role(&caller);
    if let Err(refusal) = slot.admit(role == Some(Role::Admin)) {
        turn_away(&stream, &refusal);
        return;
    }
    let session = Arc::new(Session { caller, role });
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(OUT_QUEUE);
    let conn_stop = stop.child_token();

    let writer_stop = conn_stop.clone();
    let writer = tokio::spawn(async move {
        while let Some(mut frame) = out_rx.recv().await {
            frame.push('\n');
            match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(frame.as_bytes())).await {
                Ok(Ok(())) => {}
                // A client that stopped reading (or left) loses its connection.
                _ => break,
            }
        }
        writer_stop.cancel();
    });

    let mut reader = BufReader::new(read);
    let mut decoder = FrameDecoder::new(ctx.limits.max_frame);
    let mut conn = Conn {
        ctx,
        session,
        out: out_tx,
        stop: conn_stop,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        greeted: false,
        subscriptions: HashMap::new(),
        next_sub: 1,
    };
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut reader, &mut decoder) => f,
            () = conn.stop.cancelled() => break,
            () = tokio::time::sleep_until(hello_deadline), if !conn.greeted => {
                let e = RpcError::new(
                    ErrorCode::Handshake,
                    format!(
                        "no `hello` within {} s of connecting; closing",
                        conn.ctx.limits.hello_timeout.as_secs_f64()
                    ),
                );
                let _ = send(&conn.out, encode(&Response::err(Value::Null, e))).await;
                break;
            }
        };
        let line = match frame {
            Ok(Some(Frame::Line(l))) => l,
            Ok(None) | Err(_) => break,
            Ok(Some(Frame::TooLarge)) => {
                let e = RpcError::new(
                    ErrorCode::FrameTooLarge,
                    format!(
                        "frame larger than {} bytes; it was discarded",
                        conn.ctx.limits.max_frame
                    ),
                );
                if !send(&conn.out, encode(&Response::err(Value::Null, e))).await {
                    break;
                }
                continue;
            }
        };
        let open = match decode_request(&line) {
            Ok(Some(request)) => conn.request(request).await,
            Ok(None) => true,
            Err(bad) => {
                let BadFrame { id, error } = *bad;
                send(&conn.out, encode(&Response::err(id, error))).await
            }
        };
        if !open {
            break;
        }
    }
    conn.stop.cancel();
    drop(conn);
    let _ = writer.await;
}

/// A connection between frames: who it is, whether it said hello, its
/// subscriptions, and the queue its replies and events go out through.
struct Conn {
    ctx: Arc<ApiContext>,
    session: Arc<Session>,
    out: mpsc::Sender<String>,
    stop: CancellationToken,
    /// Bounds the requests of this connection running at once.
    in_flight: Arc<Semaphore>,
    greeted: bool,
    subscriptions: HashMap<u64, CancellationToken>,
    next_sub: u64,
}

/// A reply to the request with `id`, as a frame.
fn reply(id: &Value, result: Result<Value, RpcError>) -> String {
    match result {
        Ok(v) => encode(&Response::ok(id.clone(), v)),
        Err(e) => encode(&Response::err(id.clone(), e)),
    }
}

impl Conn {
    /// Answers one request (or starts it); false when the connection must close.
    async fn request(&mut self, request: Request) -> bool {
        let id = request.id.clone().unwrap_or(Value::Null);
        let name = request.method.as_str();
        if name == method::Hello::NAME {
            let result = hello(&self.session, request.params);
            let fatal = result.is_err();
            self.greeted = !fatal;
            return send(&self.out, reply(&id, result)).await && !fatal;
        }
        if let Err(e) = self.admitted() {
            return send(&self.out, reply(&id, Err(e))).await;
        }
        if name == method::Subscribe::NAME {
            return self.subscribe(&id, request.params).await;
        }
        if name == method::Unsubscribe::NAME {
            let result = self.unsubscribe(request.params);
            return send(&self.out, reply(&id, result)).await;
        }
        self.start(id, request).await
    }

    /// Whether requests other than `hello` may run: greeted, and the caller has a role.
    fn admitted(&self) -> Result<(), RpcError> {
        if !self.greeted {
            return Err(RpcError::new(
                ErrorCode::Handshake,
                "send `hello` with your protocol version first",
            ));
        }
        if self.session.role.is_none() {
            return Err(RpcError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "user '{}' has no role in [access]",
                    self.session.caller.user
                ),
            ));
        }
        Ok(())
    }

    /// `subscribe`: the reply, then the events as they come (see [`forward`]).
    async fn subscribe(&mut self, id: &Value, params: Value) -> bool {
        let max = self.ctx.limits.max_subscriptions;
        let checked = permit(&self.session, info::<method::Subscribe>())
            .and_then(|()| parse::<SubscribeParams>(params))
            .and_then(|p| {
                if self.subscriptions.len() >= max {
                    Err(subscription_cap(max))
                } else {
                    Ok(p)
                }
            });
        let params = match checked {
            Ok(p) => p,
            Err(e) => return send(&self.out, reply(id, Err(e))).await,
        };
        let subscription = self.next_sub;
        self.next_sub += 1;
        let (rx, seq) = self.ctx.subscribe_feed();
        let token = self.stop.child_token();
        self.subscriptions.insert(subscription, token.clone());
        let result = SubscribeResult { subscription, seq };
        // The reply goes first so the client knows the id before events arrive.
        if !send(&self.out, reply(id, dispatch::to_value(result))).await {
            return false;
        }
        tokio::spawn(forward(rx, self.out.clone(), subscription, params, token));
        true
    }

    /// `unsubscribe`: stops one subscription of this connection.
    fn unsubscribe(&mut self, params: Value) -> Result<Value, RpcError> {
        permit(&self.session, info::<method::Unsubscribe>())?;
        // Params that do not read as a subscription name none (not found).
        let sub = parse::<UnsubscribeParams>(params)
            .ok()
            .and_then(|p| p.subscription);
        match sub.and_then(|s| self.subscriptions.remove(&s)) {
            Some(token) => {
                token.cancel();
                dispatch::to_value(true)
            }
            None => Err(RpcError::new(
                ErrorCode::NotFound,
                "no such subscription on this connection",
            )),
        }
    }

    /// Starts a method of the table; its reply goes out when it is done.
    async fn start(&self, id: Value, request: Request) -> bool {
        // Other requests run concurrently; replies carry their ids. A request runs to
        // its end even if the client leaves: stopping it halfway could leave a store
        // write without its audit row (or the registry without its flag).
        // At most MAX_IN_FLIGHT requests of one connection run at once; reading
        // waits beyond that, so one client cannot pile up unbounded work.
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return false;
        };
        let ctx = Arc::clone(&self.ctx);
        let session = Arc::clone(&self.session);
        let out = self.out.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = dispatch::dispatch(&ctx, &session, &request.method, request.params).await;
            let _ = send(&out, reply(&id, result)).await;
        });
        true
    }
}

/// Queues a reply, waiting (bounded) for room; false when the client is gone or stuck.
async fn send(out: &mpsc::Sender<String>, frame: String) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, out.send(frame)).await,
        Ok(Ok(()))
    )
}

fn hello(session: &Session, params: Value) -> Result<Value, RpcError> {
    check_hello(params)?;
    let role = session.role.ok_or_else(|| {
        RpcError::new(
            ErrorCode::PermissionDenied,
            format!("user '{}' has no role in [access]", session.caller.user),
        )
    })?;
    serde_json::to_value(HelloResult {
        protocol: protocol_version(),
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        user: session.caller.user.clone(),
        role,
    })
    .map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

/// The table's entry for `M`.
fn info<M: Method>() -> method::MethodInfo {
    method::MethodInfo {
        name: M::NAME,
        role: M::ROLE,
    }
}

fn subscription_cap(max: usize) -> RpcError {
    RpcError::new(
        ErrorCode::Refused,
        format!(
            "this connection has {max} subscriptions already (the most allowed); unsubscribe from one first"
        ),
    )
    .with_data(serde_json::json!({ "limit": "subscriptions", "max": max }))
}

fn lagged(subscription: u64, missed: u64) -> String {
    encode(&Notification {
        jsonrpc: "2.0".into(),
        method: notice::LAGGED.into(),
        params: serde_json::to_value(LaggedNotice {
            subscription,
            missed,
        })
        .unwrap_or_default(),
    })
}

/// Passes events to the client without ever waiting for it: a full queue
/// drops events and a `lagged` notice tells the client to resynchronise.
async fn forward(
    mut rx: broadcast::Receiver<super::Sequenced>,
    out: mpsc::Sender<String>,
    subscription: u64,
    params: SubscribeParams,
    stop: CancellationToken,
) {
    let mut missed: u64 = 0;
    loop {
        // With events owed, retry the `lagged` notice soon even if no new event comes,
        // so a client is never left waiting for events it will not get.
        let retry = async {
            if missed > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let item = tokio::select! {
            i = rx.recv() => Some(i),
            () = retry => None,
            () = stop.cancelled() => return,
        };
        let Some(item) = item else {
            match out.try_send(lagged(subscription, missed)) {
                Ok(()) => missed = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
            continue;
        };
        let ev = match item {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                missed += n;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let (seq, event) = match &ev.1 {
            Some(event) => (&ev.0, event),
            None => {
                missed += ev.0;
                continue;
            }
        };
        if let Some(run) = params.run
            && event_run(event) != Some(run)
        {
            continue;
        }
        if missed > 0 {
            match out.try_send(lagged(subscription, missed)) {
                Ok(()) => missed = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    missed += 1;
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        let notice = Notification {
            jsonrpc: "2.0".into(),
            method: notice::EVENT.into(),
            params: serde_json::to_value(EventNotice {
                subscription,
                seq: *seq,
                event: event.clone(),
            })
            .unwrap_or_default(),
        };
        match out.try_send(encode(&notice)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => missed += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

fn event_run(e: &sluice_shared::event::Event) -> Option<sluice_shared::run::RunId> {
    use sluice_shared::event::Event;
    match e {
        Event::RunCreated { run, .. }
        | Event::RunState { run, .. }
        | Event::NodeState { run, .. }
        | Event::Log { run, .. }
        | Event::ApprovalRequested { run, .. }
        | Event::ApprovalDecided { run, .. }
        | Event::ApprovalExpired { run, .. } => Some(*run),
        _ => None,
    }
}
