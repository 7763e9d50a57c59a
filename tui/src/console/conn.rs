//! The socket task: connects (again and again, with capped backoff and
//! jitter), says hello, subscribes to every event, sends the console's calls
//! and feeds replies and notifications back as messages. Calls are never
//! replayed after a disconnect: a state-changing one might have been applied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sluice_shared::client::{Client, ClientError};
use sluice_shared::method::{self, Subscribe};
use sluice_shared::protocol::{HelloResult, ServerMessage, SubscribeParams};
use sluice_shared::time;
use tokio::sync::mpsc;

use super::msg::{CallError, ConnEvent, Msg, Tag};

/// A call from the console.
#[derive(Debug)]
pub struct Call {
    /// Where the reply goes.
    pub tag: Tag,
    /// Method (always some `Method::NAME`).
    pub method: &'static str,
    /// Params.
    pub params: Value,
}

/// Backoff before reconnect attempt `n` (from 1): 0.5 s doubling to 10 s,
/// with the retries' equal jitter (between half of the step and all of it).
pub fn backoff(n: u32) -> Duration {
    let step = time::exponential(
        Duration::from_millis(500),
        Duration::from_secs(10),
        n.saturating_add(1),
    );
    time::equal_jitter(step)
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong, in the words the header shows.
fn reason(socket: &std::path::Path, e: ClientError) -> String {
    match e {
        ClientError::Unreachable { source, .. } => format!("{}: {source}", socket.display()),
        other => words(other),
    }
}

/// A failure in few words: the header already says it is the connection.
fn words(e: ClientError) -> String {
    match e {
        ClientError::Rpc(e) => e.message,
        ClientError::Closed => "the daemon closed the connection".into(),
        ClientError::Protocol(m) => m,
        other => other.to_string(),
    }
}

async fn handshake(socket: &std::path::Path) -> Result<(Client, HelloResult), String> {
    let name = format!("sluice console {}", env!("CARGO_PKG_VERSION"));
    Client::open(socket, &name)
        .await
        .map_err(|e| reason(socket, e))
}

/// Runs until the console drops its end of `calls`.
pub async fn run(
    socket: PathBuf,
    mut calls: mpsc::UnboundedReceiver<Call>,
    out: mpsc::UnboundedSender<Msg>,
) {
    let mut attempt: u32 = 0;
    loop {
        let _ = out.send(Msg::Conn(ConnEvent::Connecting));
        let error = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&socket)).await {
            Ok(Ok((client, hello))) => {
                attempt = 0;
                let _ = out.send(Msg::Conn(ConnEvent::Connected(hello)));
                match serve(client, &mut calls, &out).await {
                    Some(e) => e,
                    None => return,
                }
            }
            Ok(Err(e)) => e,
            Err(_) => "the daemon did not answer hello in time".into(),
        };
        attempt += 1;
        let wait = backoff(attempt);
        let _ = out.send(Msg::Conn(ConnEvent::Disconnected {
            error,
            retry_at_ms: time::now_ms() + wait.as_millis() as i64,
        }));
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                call = calls.recv() => match call {
                    None => return,
                    Some(c) => {
                        let _ = out.send(Msg::Reply(c.tag, Err(CallError { code: None, message: "not connected".into() })));
                    }
                },
            }
        }
    }
}

/// Serves one connection; returns why it ended, or None when the console quit.
async fn serve(
    mut client: Client,
    calls: &mut mpsc::UnboundedReceiver<Call>,
    out: &mpsc::UnboundedSender<Msg>,
) -> Option<String> {
    let mut pending: HashMap<u64, Tag> = HashMap::new();
    let subscribe = method::Call::new::<Subscribe>(&SubscribeParams::default());
    let subscribed = match client.send(&subscribe).await {
        Ok(id) => id,
        Err(e) => return Some(words(e)),
    };
    let error = loop {
        tokio::select! {
            call = calls.recv() => {
                let c = call?;
                let request = method::Call { method: c.method, params: c.params };
                match client.send(&request).await {
                    Ok(id) => {
                        pending.insert(id, c.tag);
                    }
                    Err(e) => {
                        let e = words(e);
                        let _ = out.send(Msg::Reply(c.tag, Err(CallError { code: None, message: e.clone() })));
                        break e;
                    }
                }
            }
            message = client.next_message() => match message {
                Ok(ServerMessage::Response(r)) => {
                    let id = r.id.as_u64();
                    if id == Some(subscribed) {
                        if let Some(e) = r.error {
                            break format!("subscribe refused: {}", e.message);
                        }
                        let _ = out.send(Msg::Conn(ConnEvent::Synced));
                        continue;
                    }
                    let Some(tag) = id.and_then(|id| pending.remove(&id)) else { continue };
                    let result = match r.error {
                        Some(e) => Err(CallError { code: Some(e.code), message: e.message }),
                        None => Ok(r.result.unwrap_or(Value::Null)),
                    };
                    let _ = out.send(Msg::Reply(tag, result));
                }
                Ok(ServerMessage::Notification(n)) => {
                    let _ = out.send(Msg::Notice(n));
                }
                // A line this console cannot read is skipped, not fatal.
                Err(ClientError::Unreadable(_)) => {}
                Err(e) => break words(e),
            },
        }
    };
    // Calls in flight get an answer; they are not sent again on the next connection.
    for (_, tag) in pending.drain() {
        let _ = out.send(Msg::Reply(
            tag,
            Err(CallError {
                code: None,
                message: "connection lost before the reply (not retried; check before repeating)"
                    .into(),
            }),
        ));
    }
    Some(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for n in 1..40 {
            let d = backoff(n).as_millis();
            assert!((250..=10_000).contains(&d), "{n}: {d}");
        }
        assert!(backoff(1).as_millis() <= 500);
        assert!(
            backoff(30).as_millis() >= 5_000,
            "capped at 10 s, at least half of it"
        );
    }
}
