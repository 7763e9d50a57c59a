//! What one socket client may hold, against the real `sluiced`: the hello
//! deadline, connection caps per uid, subscriptions per connection, and
//! `logs.get` pages bounded in bytes.

mod common;

#[path = "common/daemon.rs"]
mod daemon;

use std::time::Duration;

use daemon::{Client, Daemon};
use serde_json::{Value, json};
use sluice_shared::method as m;
use sluice_shared::protocol::{ErrorCode, LOGS_PAGE_BYTES, LogsPage, ServerMessage};

/// 1,500 lines of 1,000 bytes each: half again the byte cap of one page.
const BIG: &str = "nodes:\n  - id: big\n    kind: shell\n    run: |\n      pad=$(printf '%0990d' 0)\n      i=1\n      while [ $i -le 1500 ]; do printf 'L%05d %s\\n' $i \"$pad\"; i=$((i+1)); done\n      printf 'esc \\033[31mred\\033[0m \\033]0;title\\007 cr\\rend\\n'\n";

/// Reads what the daemon sends until it closes the connection (with a deadline).
async fn until_closed(c: &mut Client) -> Vec<ServerMessage> {
    c.until_closed().await
}

fn error_of(m: &ServerMessage) -> &sluice_shared::protocol::RpcError {
    match m {
        ServerMessage::Response(r) => r.error.as_ref().expect("an error reply"),
        ServerMessage::Notification(n) => panic!("expected an error, got {n:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_hello_is_closed_at_the_deadline_and_a_greeted_one_stays() {
    let d = Daemon::start("[socket]\nhello_timeout = \"1s\"\n", &[]);
    let mut greeted = d.client().await;
    let mut idle = Client::connect(&d.socket).await;
    // Requests other than hello do not count as a handshake.
    let e = idle.call::<m::Status>(json!({})).await.unwrap_err();
    assert!(e.is(ErrorCode::Handshake), "{e:?}");
    let said = until_closed(&mut idle).await;
    assert_eq!(said.len(), 1, "one goodbye, then the close: {said:?}");
    let e = error_of(&said[0]);
    assert!(e.is(ErrorCode::Handshake), "{e:?}");
    assert!(e.message.contains("no `hello` within 1 s"), "{}", e.message);
    // The greeted client outlived the deadline and is still served.
    let status = greeted.call::<m::Status>(json!({})).await.unwrap();
    assert!(status["uptime_s"].is_u64(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uid_holds_at_most_its_share_of_connections() {
    let d = Daemon::start(
        "[socket]\nmax_connections_per_user = 3\nhello_timeout = \"60s\"\n",
        &[],
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(d.client().await);
    }
    // The fourth is told why, then closed, whether or not it said hello.
    let mut refused = Client::connect(&d.socket).await;
    let said = until_closed(&mut refused).await;
    assert_eq!(said.len(), 1, "{said:?}");
    let e = error_of(&said[0]);
    assert!(e.is(ErrorCode::Refused), "{e:?}");
    assert!(e.message.contains("at most 3 per user"), "{}", e.message);
    assert_eq!(e.data.as_ref().unwrap()["limit"], "connections");
    // Closing one frees its slot.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(&d.socket).await;
        match c.try_hello().await {
            Some(Ok(_)) => {
                c.call::<m::Status>(json!({})).await.unwrap();
                break;
            }
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the freed slot was never given out: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &mut held {
        c.call::<m::Status>(json!({})).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_capped_with_a_clear_error() {
    let d = Daemon::start("[socket]\nmax_subscriptions = 2\n", &[]);
    let mut c = d.client().await;
    let first = c.call::<m::Subscribe>(json!({})).await.unwrap();
    c.call::<m::Subscribe>(json!({ "run": 1 })).await.unwrap();
    let e = c.call::<m::Subscribe>(json!({})).await.unwrap_err();
    assert!(e.is(ErrorCode::Refused), "{e:?}");
    assert!(
        e.message.contains("2 subscriptions already"),
        "{}",
        e.message
    );
    assert_eq!(e.data.as_ref().unwrap()["limit"], "subscriptions");
    assert_eq!(e.data.as_ref().unwrap()["max"], 2);
    // Another connection has its own allowance; unsubscribing frees one here.
    let mut other = d.client().await;
    other.call::<m::Subscribe>(json!({})).await.unwrap();
    let ok = c
        .call::<m::Unsubscribe>(json!({ "subscription": first["subscription"] }))
        .await
        .unwrap();
    assert_eq!(ok, Value::Bool(true));
    c.call::<m::Subscribe>(json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_get_pages_are_bounded_in_bytes_and_follow_on_to_every_line() {
    let d = Daemon::start("", &[("big.yaml", BIG)]);
    let mut c = d.client().await;
    let run = c
        .call::<m::PipelinesTrigger>(json!({ "name": "big", "wait": true }))
        .await
        .unwrap();
    assert_eq!(run["detail"]["state"], "succeeded", "{run}");
    let run = &run["run"];
    let mut after = 0u64;
    let mut lines = Vec::new();
    let mut pages = 0;
    loop {
        let raw = c
            .call::<m::LogsGet>(
                json!({ "run": run, "node": "big", "after": after, "limit": 10_000 }),
            )
            .await
            .unwrap();
        let size = raw.to_string().len();
        // The cap counts the lines; the envelope adds a little.
        assert!(
            size <= LOGS_PAGE_BYTES + 1024,
            "a page of {size} bytes exceeds the cap"
        );
        let page: LogsPage = serde_json::from_value(raw).unwrap();
        pages += 1;
        assert!(page.finished);
        if page.more {
            assert!(!page.lines.is_empty() && page.next > after);
        }
        lines.extend(page.lines.into_iter().map(|l| l.line));
        if !page.more {
            break;
        }
        after = page.next;
        assert!(pages < 10, "paging does not end");
    }
    assert!(pages >= 2, "1.5 MB of lines took {pages} page(s)");
    // The script's 1501 lines, then sluice's outcome line.
    assert_eq!(lines.len(), 1502, "every line, once");
    assert_eq!(lines[1501], "node succeeded");
    for (i, l) in lines.iter().take(1500).enumerate() {
        assert!(
            l.starts_with(&format!("L{:05} ", i + 1)),
            "line {i}: {l:.20}"
        );
    }
    assert_eq!(
        lines[1500],
        "esc \u{1b}[31mred\u{1b}[0m \u{1b}]0;title\u{7} cr\rend"
    );
    // A small limit ends a page by count and still says more follows.
    let page: LogsPage = serde_json::from_value(
        c.call::<m::LogsGet>(json!({ "run": run, "limit": 2 }))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(page.lines.len(), 2);
    assert!(page.more);
    // Past the end: no lines, nothing more, and the cursor stays.
    let end: LogsPage = serde_json::from_value(
        c.call::<m::LogsGet>(json!({ "run": run, "after": u64::MAX }))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(end.lines.is_empty() && !end.more);
}
