//! A `sluiced` that cannot start (its HTTP port is taken) leaves no socket
//! file behind for clients to find.

mod common;

use std::process::Stdio;

use common::{Lines, wait_exit};

#[test]
fn a_start_failing_on_a_busy_http_port_removes_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
    // The suite's store (PostgreSQL in its PostgreSQL half): a start failing
    // after the store was opened leaves no socket behind either.
    let backend = common::Backend::new_blocking();
    std::fs::write(dir.path().join("sluiced.toml"), backend.config()).expect("config");
    let socket = dir.path().join("second.sock");
    let mut child = common::sluiced_in(dir.path(), &socket, &addr, "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluiced");
    let mut lines = Lines::new(child.stderr.take().expect("stderr"));
    let status = wait_exit(&mut child, 60, "sluiced on a busy port");
    let said = lines.rest(30, "sluiced's stderr").join("\n");
    assert!(!status.success(), "{said}");
    assert!(said.contains(&addr), "names the address: {said}");
    assert!(!socket.exists(), "the socket file is left behind: {said}");
}
