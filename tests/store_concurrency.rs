//! `atropos run` and `atropos serve` on one store file at the same time: the dashboard
//! answers every request while trials are being committed, shows the run while it runs, and
//! ends with exactly what the run reported.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Owned;

const ATROPOS: &str = env!("CARGO_BIN_EXE_atropos");
const STEADY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/store/steady.yaml"
);

/// `atropos serve` on a free loopback port; returns it with its address.
fn serve(db: &Path) -> (Owned, String) {
    let mut child = Command::new(ATROPOS)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = common::served_address(&mut child);
    (Owned(child), addr)
}

/// A plain HTTP/1.1 GET: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[test]
fn run_and_serve_share_one_store_file_while_trials_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let (_server, addr) = serve(&db);
    assert_eq!(json(&addr, "/api/overview")["runs"], 0);

    let report = dir.path().join("report.json");
    let mut run = Owned(
        Command::new(ATROPOS)
            .current_dir(dir.path())
            .args(["run", STEADY, "--trials", "12", "-j", "2", "--db"])
            .arg(&db)
            .arg("--json")
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let mut polls = 0;
    let mut seen_running_with_trials = false;
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run takes too long"
        );
        let list = json(&addr, "/api/runs?limit=1");
        if let Some(r) = list["runs"].as_array().unwrap().first() {
            let uid = r["uid"].as_str().unwrap();
            let page = json(&addr, &format!("/api/runs/{uid}"));
            let n = page["matching"].as_u64().unwrap();
            if page["run"]["status"] == "running" && n > 0 {
                seen_running_with_trials = true;
            }
            let (status, html) = get(&addr, &format!("/runs/{uid}"));
            assert_eq!(status, 200, "{html}");
        }
        let (status, _) = get(&addr, "/");
        assert_eq!(status, 200);
        polls += 1;
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(status.success(), "atropos run: {status}");
    assert!(
        polls >= 3,
        "the dashboard was asked while the run ran ({polls} polls)"
    );
    assert!(
        seen_running_with_trials,
        "the dashboard showed the run with its first trials before it ended"
    );

    // The dashboard ends with what the run reported.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 25, "a baseline and 2 faults × 12");
    let uid = report["run"]["id"].as_str().unwrap();
    let page = json(&addr, &format!("/api/runs/{uid}?verdict=pass"));
    assert_eq!(page["run"]["status"], "finished");
    let passed = trials.iter().filter(|t| t["verdict"] == "pass").count();
    assert_eq!(page["matching"].as_u64().unwrap() as usize, passed);
    let all = json(&addr, &format!("/api/runs/{uid}"));
    assert_eq!(all["matching"].as_u64().unwrap() as usize, trials.len());
    let overview = json(&addr, "/api/overview");
    assert_eq!(overview["experiments"][0]["name"], "store-steady");
    assert_eq!(
        overview["recent_trials"]["pass"].as_u64().unwrap() as usize,
        passed
    );
}
