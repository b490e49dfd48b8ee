//! `atropos serve` cannot be held open, and cannot be read cross-site: half-sent requests
//! are closed after the header timeout while normal requests still answer, a flood beyond
//! the connection limit sheds the flooder's idle connections, and a request for a host name
//! the dashboard does not answer for gets 421 and none of its data.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Owned;

const ATROPOS: &str = env!("CARGO_BIN_EXE_atropos");

/// `atropos serve` on a free loopback port with `args`, its store and its log (`serve.log`)
/// in `dir`; returns it with its address.
fn serve(dir: &Path, args: &[&str]) -> (Owned, String) {
    let mut child = Command::new(ATROPOS)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("store.db"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let addr = common::served_address(&mut child);
    (Owned(child), addr)
}

/// Sends `request` as it is and reads the whole answer: (status, body).
fn exchange(addr: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A GET of `path` with `Host: host`.
fn get_as(addr: &str, host: &str, path: &str) -> (u16, String) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// `n` connections that each send half a request line, then nothing.
fn slow_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /api/ov").unwrap();
            s
        })
        .collect()
}

/// Whether the server has closed `stream` (end of file or reset; whatever it sent first is
/// read and dropped).
fn closed_by_server(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

#[test]
fn half_sent_requests_are_closed_after_the_header_timeout_and_normal_requests_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = Duration::from_secs(3);
    let (_server, addr) = serve(dir.path(), &["--header-timeout", "3s"]);
    let (status, _) = get_as(&addr, &addr, "/api/overview");
    assert_eq!(status, 200);

    // More than the default limit of 256 connections.
    let opened = Instant::now();
    let slow = slow_connections(&addr, 300);
    assert_eq!(slow.len(), 300);

    for _ in 0..3 {
        let asked = Instant::now();
        let (status, body) = get_as(&addr, &addr, "/api/overview");
        let took = asked.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(
            took < Duration::from_millis(1500),
            "a normal request waited {took:?} behind 300 half-sent ones"
        );
    }

    // Every slow connection is closed once the header timeout has passed (some sooner, to
    // make room), and none of them is answered as if its request were complete.
    let deadline = opened + header_timeout + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_open = slow.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of 300 half-sent connections still open {:?} after they were opened",
        opened.elapsed()
    );
}

#[test]
fn a_flood_beyond_the_connection_limit_sheds_idle_connections_not_normal_requests() {
    let dir = tempfile::tempdir().unwrap();
    // A header timeout far longer than the test: only shedding can make room.
    let (_server, addr) = serve(
        dir.path(),
        &["--max-connections", "8", "--header-timeout", "60s"],
    );
    let slow = slow_connections(&addr, 40);
    assert_eq!(slow.len(), 40);
    for i in 0..5 {
        let asked = Instant::now();
        let (status, body) = get_as(&addr, &addr, "/api/overview");
        let took = asked.elapsed();
        assert_eq!(status, 200, "request {i}: {body}");
        assert!(
            took < Duration::from_millis(1500),
            "request {i} waited {took:?} behind 40 half-sent connections with room for 8"
        );
    }
    // The oldest slow connections made room; the newest ones are still open.
    std::thread::sleep(Duration::from_millis(300));
    let closed = slow.iter().filter(|s| closed_by_server(s)).count();
    assert!(
        (32..40).contains(&closed),
        "{closed} of 40 half-sent connections closed, with room for 8"
    );
}

#[test]
fn a_foreign_host_gets_421_and_no_data_while_the_dashboards_own_names_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(dir.path(), &[]);
    let port = addr.rsplit_once(':').unwrap().1;

    let own = [
        addr.clone(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ];
    for host in &own {
        let (status, body) = get_as(&addr, host, "/api/overview");
        assert_eq!(status, 200, "Host: {host}: {body}");
        assert!(body.contains("\"runs\""), "Host: {host}: {body}");
    }

    let foreign = [
        get_as(&addr, "evil.example", "/api/overview"),
        get_as(&addr, &format!("evil.example:{port}"), "/"),
        get_as(&addr, "localhost:1", "/api/overview"),
        get_as(&addr, "localhost.evil.example", "/api/overview"),
        // No Host at all.
        exchange(
            &addr,
            "GET /api/overview HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        // An absolute target naming another host, with an allowed Host header.
        exchange(
            &addr,
            &format!(
                "GET http://evil.example/api/overview HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            ),
        ),
        // Two Host headers, the second one foreign.
        exchange(
            &addr,
            &format!(
                "GET /api/overview HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
            ),
        ),
    ];
    assert_eq!(foreign.len(), 7);
    for (i, (status, body)) in foreign.iter().enumerate() {
        assert!(
            (400..500).contains(status),
            "request {i} got {status}: {body}"
        );
        assert!(
            !body.contains("runs") && !body.contains("experiments"),
            "request {i} got data: {body}"
        );
    }
    assert_eq!(foreign[0].0, 421);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let refused = log.matches("refused a dashboard request").count();
    assert_eq!(refused, 7, "{log}");
}

#[test]
fn allow_host_adds_a_name_on_any_port_or_on_the_one_it_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = serve(
        dir.path(),
        &[
            "--allow-host",
            "dash.example",
            "--allow-host",
            "ci.example:8443",
        ],
    );
    for host in ["dash.example", "dash.example:8080", "ci.example:8443"] {
        let (status, body) = get_as(&addr, host, "/api/overview");
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    for host in ["ci.example", "ci.example:80", "evil.example"] {
        let (status, _) = get_as(&addr, host, "/api/overview");
        assert_eq!(status, 421, "Host: {host}");
    }
}
