//! The daemon's own log cannot be forged through request data: a pipeline
//! name taken from a webhook URL is quoted and escaped in log fields.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Sluiced(Child);

impl Drop for Sluiced {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_newline_in_a_webhook_pipeline_name_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    let backend = common::Backend::new_blocking();
    std::fs::write(dir.path().join("sluiced.toml"), backend.config()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = common::sluiced_in(
        dir.path(),
        &dir.path().join("s.sock"),
        &format!("127.0.0.1:{port}"),
        "info",
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .expect("spawn sluiced");
    let stderr = child.stderr.take().expect("stderr");
    let _daemon = Sluiced(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no {what} from sluiced within 30 s: {e}"))
    };
    while !next("ready line").starts_with("sluiced: ready") {}

    let mut http = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    http.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    http.write_all(
        b"POST /hooks/evil%0AERROR%20forged%20line HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    http.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");

    let mut seen = Vec::new();
    loop {
        let line = next("'webhook refused' log line");
        let done = line.contains("webhook refused");
        seen.push(line);
        if done {
            break;
        }
    }
    let refused = seen.last().unwrap();
    assert!(
        refused.contains(r#"pipeline="evil\nERROR forged line""#),
        "the name is quoted and its newline escaped: {refused}"
    );
    assert!(
        !seen.iter().any(|l| l.starts_with("ERROR forged")),
        "a forged line reached the log: {seen:#?}"
    );
}
