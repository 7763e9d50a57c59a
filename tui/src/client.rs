//! A client of the sluiced socket: connect, `hello`, calls by id, and
//! notifications from subscriptions.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_shared::protocol::{
    ErrorCode, HelloParams, HelloResult, Notification, Request, Response, RpcError, ServerMessage,
    protocol_version,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

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

/// A connection that has completed `hello`.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    notifications: VecDeque<Notification>,
    /// What the daemon said in `hello`.
    pub hello: HelloResult,
}

impl Client {
    /// Connects and says hello.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| connect_error(path, source))?;
        let (read, writer) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            notifications: VecDeque::new(),
            hello: HelloResult {
                protocol: String::new(),
                daemon_version: String::new(),
                user: String::new(),
                role: sluice_shared::protocol::Role::Viewer,
            },
        };
        let params = HelloParams {
            protocol: protocol_version(),
            client: format!("sluice {}", env!("CARGO_PKG_VERSION")),
        };
        client.hello = client
            .call("hello", serde_json::to_value(params).unwrap_or_default())
            .await?;
        Ok(client)
    }

    async fn read_message(&mut self) -> Result<ServerMessage, ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if n == 0 {
            return Err(ClientError::Protocol(
                "the daemon closed the connection".into(),
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| ClientError::Protocol(format!("unreadable message: {e}")))
    }

    /// Calls a method and decodes its result.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = serde_json::to_string(&Request::new(id, method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        frame.push('\n');
        if let Err(e) = self.writer.write_all(frame.as_bytes()).await {
            // A daemon that turns a connection away (too many connections) says why
            // and closes it, maybe before our request arrives: its reason beats EPIPE.
            return match self.read_message().await {
                Ok(ServerMessage::Response(Response {
                    id: Value::Null,
                    error: Some(err),
                    ..
                })) => Err(ClientError::Rpc(err)),
                _ => Err(ClientError::Protocol(e.to_string())),
            };
        }
        loop {
            match self.read_message().await? {
                ServerMessage::Response(r) if r.id == id => {
                    if let Some(e) = r.error {
                        return Err(ClientError::Rpc(e));
                    }
                    return serde_json::from_value(r.result.unwrap_or(Value::Null)).map_err(|e| {
                        ClientError::Protocol(format!("unexpected result of {method}: {e}"))
                    });
                }
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

    /// The next notification (events of subscriptions, `lagged`).
    pub async fn notification(&mut self) -> Result<Notification, ClientError> {
        if let Some(n) = self.notifications.pop_front() {
            return Ok(n);
        }
        loop {
            if let ServerMessage::Notification(n) = self.read_message().await? {
                return Ok(n);
            }
        }
    }
}
