//! The daemon as a library: `Daemon::start` in this process on a temp
//! directory (a real SQLite file, or the suite's PostgreSQL database in its
//! PostgreSQL half, a real Unix socket, real HTTP on
//! 127.0.0.1:0, shell nodes as real child processes), a run triggered over
//! HTTP, a reload, and a graceful stop that frees everything it held.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use serde_json::{Value, json};
use sluice_daemon::statedir::StateLock;
use sluice_daemon::{Daemon, Overrides, Settings, StartError};
use sluice_shared::run::{NodeState, RunId, RunState};

/// A bearer-authenticated webhook whose shell node echoes its input.
const DEPLOY: &str = r#"
inputs:
  n: { type: integer, default: 1 }
triggers:
  - webhook: { auth: bearer, secret: hook }
nodes:
  - id: say
    kind: shell
    run: echo "deployed {{ inputs.n }}"
"#;

const FIRST: &str = "first-token-0123456789";
const SECOND: &str = "second-token-9876543210";

fn write_secret(dir: &Path, token: &str) {
    let file = dir.join("secrets.toml");
    std::fs::write(&file, format!("hook = \"{token}\"\n")).expect("write secrets");
    // The daemon refuses a secrets file others can read.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// `sluiced.toml` on `dir` and the `backend`'s store, HTTP on `listen`, as
/// `sluiced --config` reads it.
fn settings(dir: &Path, backend: &common::Backend, listen: &str) -> Settings {
    let toml = format!(
        "[paths]\nstate_dir = {state:?}\npipelines = {pipelines:?}\nsecrets = {secrets:?}\nplugins = {plugins:?}\n\n[http]\nlisten = {listen:?}\n\n[engine]\nworkers = 2\n",
        state = dir.join("state"),
        pipelines = dir.join("pipelines"),
        secrets = dir.join("secrets.toml"),
        plugins = dir.join("plugins"),
    );
    let toml = backend.with_config(&toml);
    let file = dir.join("sluiced.toml");
    std::fs::write(&file, toml).expect("write sluiced.toml");
    // The socket as a flag: it wins over a SLUICE_SOCKET the test runner may have.
    Settings::load(Overrides {
        config_file: Some(file),
        socket: Some(dir.join("sluice.sock")),
        ..Overrides::default()
    })
    .expect("settings")
}

/// The directory and the store (keep both while the daemon runs).
async fn prepare() -> (tempfile::TempDir, common::Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("pipelines")).expect("pipelines dir");
    std::fs::write(dir.path().join("pipelines/deploy.yaml"), DEPLOY).expect("pipeline");
    write_secret(dir.path(), FIRST);
    (dir, common::Backend::new().await)
}

/// POSTs to the deploy hook with `token`: the status and the JSON answer.
async fn deliver(addr: std::net::SocketAddr, token: &str, body: Value) -> (u16, Value) {
    let response = common::within(
        30,
        "the webhook's answer",
        common::http_client()
            .post(format!("http://{addr}/hooks/deploy"))
            .bearer_auth(token)
            .json(&body)
            .send(),
    )
    .await
    .expect("webhook request");
    let status = response.status().as_u16();
    let json = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_in_process_runs_a_webhook_reloads_and_stops() {
    let (dir, backend) = prepare().await;
    let handle = common::within(
        60,
        "the daemon to start",
        Daemon::start(settings(dir.path(), &backend, "127.0.0.1:0")),
    )
    .await
    .expect("start");
    assert_ne!(handle.http_addr().port(), 0, "the chosen port is reported");
    assert_eq!(handle.socket_path(), dir.path().join("sluice.sock"));

    // The control socket speaks the protocol.
    let mut client = daemon::Client::connect(handle.socket_path()).await;
    let hello = client.hello().await.expect("hello");
    assert_eq!(
        hello["protocol"],
        json!(sluice_shared::protocol::protocol_version()),
        "{hello}"
    );

    // A webhook starts a run; its shell node runs as a child process.
    let (status, answer) = deliver(handle.http_addr(), FIRST, json!({})).await;
    assert_eq!(status, 202, "{answer}");
    let run = RunId(answer["run"].as_i64().expect("the run's id"));
    let record = common::finished(handle.engine(), run).await;
    assert_eq!(record.state, RunState::Succeeded, "{record:?}");
    let nodes = handle.engine().store().nodes(run).await.expect("nodes");
    assert_eq!(nodes[0].state, NodeState::Succeeded);
    let stdout = nodes[0].output.as_ref().expect("output")["stdout"].clone();
    assert_eq!(stdout, json!("deployed 1\n"));

    // A new secret counts only after a reload.
    write_secret(dir.path(), SECOND);
    let (status, _) = deliver(handle.http_addr(), SECOND, json!({})).await;
    assert_eq!(status, 403, "the new token before the reload");
    let outcome = common::within(60, "the reload", handle.reload()).await;
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let report = outcome.pipelines.expect("the pipelines were rescanned");
    assert!(report.rejected.is_empty(), "{report:?}");
    assert!(handle.registry().get("deploy").is_some());
    let (status, _) = deliver(handle.http_addr(), FIRST, json!({})).await;
    assert_eq!(status, 403, "the old token after the reload");
    let (status, answer) = deliver(handle.http_addr(), SECOND, json!({ "n": 2 })).await;
    assert_eq!(status, 202, "{answer}");
    let run = RunId(answer["run"].as_i64().expect("the run's id"));
    assert_eq!(
        common::finished(handle.engine(), run).await.state,
        RunState::Succeeded
    );

    // A graceful stop frees the socket, the port and the state directory.
    let socket = handle.socket_path().to_owned();
    let addr = handle.http_addr();
    assert!(
        std::fs::metadata(&socket)
            .expect("socket")
            .file_type()
            .is_socket()
    );
    common::within(60, "the daemon to stop", handle.shutdown()).await;
    // A second stop returns at once.
    common::within(5, "a second stop", handle.shutdown()).await;
    // A reload after the stop does nothing and says so.
    let late = common::within(5, "a reload after the stop", handle.reload()).await;
    assert!(late.pipelines.is_none(), "{late:?}");
    assert!(late.problems[0].contains("stopping"), "{late:?}");
    assert!(!socket.exists(), "the socket file is left behind");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the HTTP listener still accepts"
    );
    StateLock::acquire(&dir.path().join("state")).expect("the state lock is released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_leaves_nothing_behind() {
    let (dir, backend) = prepare().await;
    // The HTTP port is taken: the start fails after the socket was bound.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let err = common::within(
        60,
        "the start to fail",
        Daemon::start(settings(dir.path(), &backend, &addr)),
    )
    .await
    .expect_err("the port is busy");
    assert!(
        matches!(&err, StartError::HttpBind { addr: a, .. } if *a == addr),
        "{err:?}"
    );
    assert!(
        !dir.path().join("sluice.sock").exists(),
        "socket left behind"
    );
    drop(busy);

    // The state directory is free again: the same settings start now.
    let handle = common::within(
        60,
        "the second start",
        Daemon::start(settings(dir.path(), &backend, &addr)),
    )
    .await
    .expect("start after the port was freed");
    assert_eq!(handle.http_addr().to_string(), addr);
    common::within(60, "the daemon to stop", handle.shutdown()).await;
}
