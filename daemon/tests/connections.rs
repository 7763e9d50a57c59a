//! Connection caps of the webhook listener over real TCP on 127.0.0.1: one
//! client address cannot hold more than its share of connections, and gets a
//! clear 503 when it tries.

mod common;
mod triggers_env;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_daemon::triggers::webhook::{WebhookOptions, WebhookState, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use triggers_env::Env;

const WAIT: Duration = Duration::from_secs(10);

/// Everything the server sends until it closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("the server to answer and close in time")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

async fn healthz(addr: SocketAddr) -> String {
    let mut s = common::within(10, "a connection to the listener", TcpStream::connect(addr))
        .await
        .expect("connect");
    common::within(
        10,
        "the listener to take a request",
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
    .expect("write");
    read_to_close(&mut s).await
}

#[tokio::test]
async fn one_address_is_capped_and_told_so_and_its_slots_come_back() {
    let env = Env::new(&[], BTreeMap::new()).await;
    let stop = CancellationToken::new();
    let state = WebhookState::new(
        env.triggers.clone(),
        env.secrets.clone(),
        WebhookOptions {
            max_per_peer: 3,
            ..WebhookOptions::default()
        },
        stop.clone(),
    );
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(serve(listener, state, stop.clone()));

    // Three idle connections take this address's share...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            common::within(
                10,
                "an idle connection to the listener",
                TcpStream::connect(addr),
            )
            .await
            .unwrap(),
        );
    }
    // ...(each is accepted before the next: a request on the last proves it)
    let last = held.last_mut().unwrap();
    common::within(
        10,
        "the listener to take a request",
        last.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, last.read(&mut buf))
        .await
        .expect("the third connection is served")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // ...so a fourth is refused with a reason and closed.
    let reply = healthz(addr).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after: 1"),
        "{reply}"
    );
    assert!(
        reply.contains("too many connections from your address"),
        "{reply}"
    );

    // A closed connection gives its slot back.
    drop(held.remove(0));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = healthz(addr).await;
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    drop(held);
    tokio::time::timeout(WAIT, served)
        .await
        .expect("the listener stops")
        .unwrap();
}
