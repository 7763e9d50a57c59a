//! The socket task: connects (again and again, with capped backoff and
//! jitter), says hello, subscribes to every event, sends the console's calls
//! and feeds replies and notifications back as messages. Calls are never
//! replayed after a disconnect: a state-changing one might have been applied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_shared::protocol::{HelloResult, Request, ServerMessage, protocol_version};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::msg::{CallError, ConnEvent, Msg, Tag};

/// A call from the console.
#[derive(Debug)]
pub struct Call {
    /// Where the reply goes.
    pub tag: Tag,
    /// Method.
    pub method: &'static str,
    /// Params.
    pub params: Value,
}

/// Backoff before attempt `n` (from 1): 0.5 s doubling to 10 s, ±25 % jitter.
pub fn backoff(n: u32) -> Duration {
    let base = 500u64
        .saturating_mul(1 << n.saturating_sub(1).min(5))
        .min(10_000);
    let jitter = fastrand::u64(0..=base / 2);
    Duration::from_millis(base - base / 4 + jitter)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

struct Session {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

async fn write(
    writer: &mut OwnedWriteHalf,
    id: u64,
    method: &str,
    params: Value,
) -> std::io::Result<()> {
    let mut frame = serde_json::to_string(&Request::new(id, method, params))?;
    frame.push('\n');
    writer.write_all(frame.as_bytes()).await
}

async fn handshake(socket: &PathBuf) -> Result<(Session, HelloResult), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let (read, mut writer) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let hello = json!({ "protocol": protocol_version(), "client": format!("sluice console {}", env!("CARGO_PKG_VERSION")) });
    write(&mut writer, 0, "hello", hello)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the daemon closed the connection")?;
        if let Ok(ServerMessage::Response(r)) = serde_json::from_str::<ServerMessage>(&line) {
            if let Some(e) = r.error {
                return Err(e.message);
            }
            let hello: HelloResult = serde_json::from_value(r.result.unwrap_or_default())
                .map_err(|e| format!("unexpected hello: {e}"))?;
            return Ok((Session { lines, writer }, hello));
        }
    }
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
            Ok(Ok((session, hello))) => {
                attempt = 0;
                let _ = out.send(Msg::Conn(ConnEvent::Connected(hello)));
                match serve(session, &mut calls, &out).await {
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
            retry_at_ms: now_ms() + wait.as_millis() as i64,
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
    mut s: Session,
    calls: &mut mpsc::UnboundedReceiver<Call>,
    out: &mpsc::UnboundedSender<Msg>,
) -> Option<String> {
    const SUBSCRIBE: u64 = 1;
    let mut next_id: u64 = 2;
    let mut pending: HashMap<u64, Tag> = HashMap::new();
    if let Err(e) = write(&mut s.writer, SUBSCRIBE, "subscribe", json!({})).await {
        return Some(e.to_string());
    }
    let error = loop {
        tokio::select! {
            call = calls.recv() => {
                let c = call?;
                let id = next_id;
                next_id += 1;
                if let Err(e) = write(&mut s.writer, id, c.method, c.params).await {
                    let _ = out.send(Msg::Reply(c.tag, Err(CallError { code: None, message: e.to_string() })));
                    break e.to_string();
                }
                pending.insert(id, c.tag);
            }
            line = s.lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) => break "the daemon closed the connection".to_string(),
                    Err(e) => break e.to_string(),
                };
                match serde_json::from_str::<ServerMessage>(&line) {
                    Ok(ServerMessage::Response(r)) => {
                        let id = r.id.as_u64();
                        if id == Some(SUBSCRIBE) {
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
                    Err(_) => {}
                }
            }
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
            assert!((375..=12_500).contains(&d), "{n}: {d}");
        }
        assert!(backoff(1).as_millis() <= 625);
    }
}
