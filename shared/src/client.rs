//! The one client of the sluiced socket, used by the CLI, the console, the
//! daemon's tests and the benchmarks: connect, `hello`, typed calls through
//! the [method table](crate::method), and the notifications of subscriptions.
//!
//! Calls are answered in order of their ids, not of sending; a client that
//! keeps several calls in flight (the console) sends with [`Client::send`]
//! and reads with [`Client::next_message`], which may sit in a
//! `tokio::select!`: a read interrupted there loses nothing.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::method::{Call, Hello, Method, notice};
use crate::protocol::{
    ErrorCode, EventNotice, HelloParams, HelloResult, LaggedNotice, Notification, Request,
    Response, RpcError, ServerMessage, protocol_version,
};

/// Why a call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket.
    #[error(
        "cannot reach sluiced at {path}: {source} (is the daemon running? set --socket or SLUICE_SOCKET)"
    )]
    Unreachable {
        /// The socket tried.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied on {path} (owner {owner}, group {group}, mode {mode:04o}); ask an admin to add you to its group: `sudo usermod -aG {group} $USER`, then log in again"
    )]
    SocketDenied {
        /// The socket.
        path: PathBuf,
        /// Its owner's name (or uid).
        owner: String,
        /// Its group's name (or gid).
        group: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The daemon closed the connection.
    #[error("connection to sluiced failed: the daemon closed the connection")]
    Closed,
    /// The daemon sent a line that is not a JSON-RPC message.
    #[error("connection to sluiced failed: unreadable message: {0}")]
    Unreadable(String),
    /// The connection broke or the daemon sent something unexpected.
    #[error("connection to sluiced failed: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The RPC error, when the daemon answered with one.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            Self::Rpc(e) => Some(e),
            _ => None,
        }
    }
}

/// Why connecting failed: permission denied on the socket (with its owner,
/// group and mode, which say what to ask for), or unreachable.
fn connect_error(path: &Path, source: std::io::Error) -> ClientError {
    use std::os::unix::fs::MetadataExt;
    if source.kind() == std::io::ErrorKind::PermissionDenied
        && let Ok(meta) = std::fs::metadata(path)
    {
        return ClientError::SocketDenied {
            path: path.to_owned(),
            owner: name_of("/etc/passwd", meta.uid()),
            group: name_of("/etc/group", meta.gid()),
            mode: meta.mode() & 0o7777,
        };
    }
    ClientError::Unreachable {
        path: path.to_owned(),
        source,
    }
}

/// The name an id has in `/etc/passwd` or `/etc/group` (`name:x:id:...`),
/// or the number when it has none there.
fn name_of(file: &str, id: u32) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _ = f.next();
            (f.next()?.parse::<u32>().ok()? == id).then(|| name.to_owned())
        })
        .unwrap_or_else(|| id.to_string())
}

/// A notification, read.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// An event of a subscription.
    Event(EventNotice),
    /// Events were dropped: resynchronise (`runs.list`, `runs.get`, `logs.get`).
    Lagged(LaggedNotice),
    /// A notification (or an event) of a kind this client does not know: a newer daemon's.
    Other(Notification),
}

impl Notice {
    /// Reads a notification as the kind its method names.
    pub fn read(n: Notification) -> Self {
        match n.method.as_str() {
            notice::EVENT => match serde_json::from_value(n.params.clone()) {
                Ok(e) => Self::Event(e),
                Err(_) => Self::Other(n),
            },
            notice::LAGGED => match serde_json::from_value(n.params.clone()) {
                Ok(l) => Self::Lagged(l),
                Err(_) => Self::Other(n),
            },
            _ => Self::Other(n),
        }
    }
}

fn protocol(e: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(e.to_string())
}

/// A connection to sluiced's socket.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The line being read; kept across reads so an interrupted one resumes.
    line: Vec<u8>,
    next_id: u64,
    notifications: VecDeque<Notification>,
}

impl Client {
    /// Connects without saying hello (see [`Client::hello`]).
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| connect_error(path, source))?;
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer,
            line: Vec::new(),
            next_id: 1,
            notifications: VecDeque::new(),
        })
    }

    /// Connects and says hello as `client` (name and version, for the daemon's logs).
    pub async fn open(path: &Path, client: &str) -> Result<(Self, HelloResult), ClientError> {
        let mut c = Self::connect(path).await?;
        let hello = c.hello(client).await?;
        Ok((c, hello))
    }

    /// The handshake: this client's protocol version; the daemon says who we are.
    pub async fn hello(&mut self, client: &str) -> Result<HelloResult, ClientError> {
        self.call::<Hello>(HelloParams {
            protocol: protocol_version(),
            client: client.to_owned(),
        })
        .await
    }

    /// Calls method `M` and waits for its result.
    pub async fn call<M: Method>(&mut self, params: M::Params) -> Result<M::Result, ClientError> {
        self.call_typed::<M>(&Call::new::<M>(&params)).await
    }

    /// [`Client::call`] carrying an idempotency key: the daemon applies the
    /// call once per key, and a repeat gets the first reply ([`Call::idempotent`]).
    pub async fn call_idempotent<M: Method>(
        &mut self,
        params: M::Params,
        key: &str,
    ) -> Result<M::Result, ClientError> {
        self.call_typed::<M>(&Call::new::<M>(&params).idempotent(key))
            .await
    }

    async fn call_typed<M: Method>(&mut self, call: &Call) -> Result<M::Result, ClientError> {
        let value = self.call_value(call).await?;
        serde_json::from_value(value)
            .map_err(|e| ClientError::Protocol(format!("unexpected result of {}: {e}", M::NAME)))
    }

    /// Sends `call` and waits for its result as JSON, for callers that check
    /// the wire itself (tests) or pass it on unread.
    pub async fn call_value(&mut self, call: &Call) -> Result<Value, ClientError> {
        let id = match self.send(call).await {
            Ok(id) => id,
            Err(ClientError::Protocol(e)) => {
                // A daemon that turns a connection away (too many connections) says why
                // and closes it, maybe before our request arrives: its reason beats EPIPE.
                return match self.read_message().await {
                    Ok(ServerMessage::Response(Response {
                        id: Value::Null,
                        error: Some(err),
                        ..
                    })) => Err(ClientError::Rpc(err)),
                    _ => Err(ClientError::Protocol(e)),
                };
            }
            Err(other) => return Err(other),
        };
        loop {
            match self.read_message().await? {
                ServerMessage::Response(r) if r.id == id => {
                    return match r.error {
                        Some(e) => Err(ClientError::Rpc(e)),
                        None => Ok(r.result.unwrap_or(Value::Null)),
                    };
                }
                // An error about no request in particular (a refusal, the hello deadline).
                ServerMessage::Response(r) if r.id.is_null() => {
                    return Err(ClientError::Rpc(r.error.unwrap_or_else(|| {
                        RpcError::new(ErrorCode::Internal, "error without details")
                    })));
                }
                ServerMessage::Response(_) => {}
                ServerMessage::Notification(n) => self.notifications.push_back(n),
            }
        }
    }

    /// Sends `call` without waiting for its reply; returns the id the reply will carry.
    pub async fn send(&mut self, call: &Call) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request::new(id, call.method, call.params.clone());
        let mut frame = serde_json::to_vec(&request).map_err(protocol)?;
        frame.push(b'\n');
        self.send_raw(&frame).await?;
        Ok(id)
    }

    /// Writes bytes as they are, for tests of what the daemon does with bad frames.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_all(bytes).await.map_err(protocol)
    }

    /// The next message: a notification held back by a call first, then what
    /// the daemon sends. Safe to cancel (in `tokio::select!`): a line half
    /// read is kept for the next call.
    pub async fn next_message(&mut self) -> Result<ServerMessage, ClientError> {
        if let Some(n) = self.notifications.pop_front() {
            return Ok(ServerMessage::Notification(n));
        }
        self.read_message().await
    }

    /// The next message off the socket (cancel-safe, as [`Client::next_message`]).
    async fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .await
                .map_err(protocol)?;
            if n == 0 && self.line.is_empty() {
                return Err(ClientError::Closed);
            }
            let line = std::mem::take(&mut self.line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(&line)
                .map_err(|e| ClientError::Unreadable(e.to_string()));
        }
    }

    /// The next notification (events of subscriptions, `lagged`); replies
    /// read meanwhile are dropped.
    pub async fn notification(&mut self) -> Result<Notification, ClientError> {
        loop {
            if let ServerMessage::Notification(n) = self.next_message().await? {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::{RunsGet, Status};
    use crate::protocol::{NoParams, RunRef};
    use crate::run::RunId;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A socket whose other end the test scripts by hand.
    async fn pair() -> (tempfile::TempDir, Client, UnixStream) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (client, server) = tokio::join!(Client::connect(&path), listener.accept());
        (dir, client.expect("connect"), server.expect("accept").0)
    }

    async fn request(server: &mut BufReader<&mut UnixStream>) -> Request {
        let mut line = String::new();
        server.read_line(&mut line).await.expect("read");
        serde_json::from_str(&line).expect("a request")
    }

    #[tokio::test]
    async fn a_call_matches_its_reply_by_id_and_keeps_notifications_for_later() {
        let (_dir, mut client, mut server) = pair().await;
        let daemon = async move {
            let mut r = BufReader::new(&mut server);
            let req = request(&mut r).await;
            assert_eq!(
                (req.method.as_str(), req.params.clone()),
                (RunsGet::NAME, serde_json::json!({ "id": 7 }))
            );
            let out = r.get_mut();
            // Another id's reply, a notification, then ours.
            let lines = format!(
                "{}\n{}\n{}\n",
                r#"{"jsonrpc":"2.0","id":99,"result":1}"#,
                r#"{"jsonrpc":"2.0","method":"event","params":{"n":1}}"#,
                serde_json::json!({"jsonrpc":"2.0","id":req.id,"error":{"code":-32001,"message":"run #7 not found"}})
            );
            out.write_all(lines.as_bytes()).await.expect("write");
            server
        };
        let (reply, _server) =
            tokio::join!(client.call::<RunsGet>(RunRef { id: RunId(7) }), daemon);
        let e = reply.expect_err("an error reply");
        assert!(e.rpc().is_some_and(|e| e.is(ErrorCode::NotFound)), "{e}");
        let n = client
            .notification()
            .await
            .expect("the notification read meanwhile");
        assert_eq!(n.params, serde_json::json!({ "n": 1 }));
    }

    #[tokio::test]
    async fn an_interrupted_read_loses_nothing_and_a_close_is_closed() {
        let (_dir, mut client, mut server) = pair().await;
        server
            .write_all(br#"{"jsonrpc":"2.0","id":1,"#)
            .await
            .expect("write");
        // The first half arrives; the read is given up before the rest.
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), client.next_message()).await;
        assert!(early.is_err(), "no message from half a line: {early:?}");
        server
            .write_all(b"\"result\":{\"ok\":true}}\n")
            .await
            .expect("write");
        match client.next_message().await.expect("the whole line") {
            ServerMessage::Response(r) => {
                assert_eq!(r.result, Some(serde_json::json!({ "ok": true })))
            }
            other => panic!("{other:?}"),
        }
        drop(server);
        assert!(matches!(
            client.next_message().await,
            Err(ClientError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_refusal_sent_before_the_request_is_read_is_the_answer() {
        let (_dir, mut client, mut server) = pair().await;
        server
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32003,\"message\":\"too many connections\"}}\n")
            .await
            .expect("write");
        let e = client.call::<Status>(NoParams).await.expect_err("refused");
        assert!(e.rpc().is_some_and(|e| e.is(ErrorCode::Refused)), "{e}");
        let mut rest = Vec::new();
        drop(client);
        server.read_to_end(&mut rest).await.expect("read");
        assert!(rest.ends_with(b"\n"), "the request was sent whole");
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable_naming_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.sock");
        let e = Client::connect(&path).await.err().expect("unreachable");
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
}
