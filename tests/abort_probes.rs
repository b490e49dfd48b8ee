//! Stop conditions (`abort:`): a health probe served by the test that turns unhealthy
//! mid-run aborts the run with the reason and leaves no paused or running target; one that
//! is unhealthy from the start skips the run before any trial.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{atropos, processes_with, tempdir, token};

/// A health endpoint on loopback: 200 `ok` while `healthy`, else 503. Serves until the
/// test ends (its thread is detached; the listener closes with the process).
fn health_server(healthy: Arc<AtomicBool>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let answer = if healthy.load(Ordering::SeqCst) {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    address
}

/// Trials that each pause the target for 2 s at `ready`, then SIGTERM it.
fn experiment(tok: &str, health: &str) -> String {
    format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: guarded }}
spec:
  target:
    run: {{ command: [sh, -c, "echo ready; sleep 1", {tok}] }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - name: pause-then-term
      steps:
        - {{ pause: 2s, to: group, at: {{ phase: ready }} }}
        - {{ signal: SIGTERM, after: 10ms }}
  expect:
    exit: {{ within: 5s }}
  trials: 6
  abort:
    - name: health
      http: {{ url: "http://{health}/healthz", status: [200], body: "^ok$" }}
      interval: 100ms
      timeout: 500ms
      failure_threshold: 2
"#
    )
}

fn run(dir: &std::path::Path, yaml: &str) -> std::process::Child {
    let path = dir.join("guarded.yaml");
    std::fs::write(&path, yaml).unwrap();
    atropos()
        .arg("run")
        .arg(&path)
        .args(["-j", "1", "--db"])
        .arg(dir.join("atropos.db"))
        .arg("--json")
        .arg(dir.join("report.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn sql(db: &std::path::Path, query: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(query)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_probe_that_turns_unhealthy_mid_run_aborts_it_and_leaves_no_target() {
    let dir = tempdir();
    let tok = token("probe-abort");
    let healthy = Arc::new(AtomicBool::new(true));
    let health = health_server(healthy.clone());
    let child = run(dir.path(), &experiment(&tok, &health));
    // Once a trial holds its target paused, the service gets hurt.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let paused = processes_with(&tok).iter().any(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('T'))
            })
        });
        if paused {
            break;
        }
        assert!(Instant::now() < deadline, "no trial paused its target");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hurt = Instant::now();
    healthy.store(false, Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    let took = hurt.elapsed();
    eprintln!("the run stopped {took:?} after the service got hurt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("aborted: probe `health` failed 2 time(s) in a row"),
        "{stdout}"
    );
    // Two failed checks 100 ms apart, then the trial's cancellation: not the 6 trials.
    assert!(
        took < Duration::from_secs(5),
        "the run took {took:?} to stop"
    );
    assert_eq!(
        processes_with(&tok),
        Vec::new(),
        "a target outlived the abort"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["end"]["status"], "aborted");
    let answers = report["end"]["probes"].as_array().unwrap();
    assert!(
        answers
            .iter()
            .any(|a| a["ok"] == true && a["stage"] == "before")
    );
    assert!(
        answers
            .iter()
            .filter(|a| a["ok"] == false && a["stage"] == "during")
            .count()
            >= 2,
        "{answers:?}"
    );
    let db = dir.path().join("atropos.db");
    if std::process::Command::new("sqlite3")
        .arg("-version")
        .output()
        .is_ok()
    {
        let row = sql(&db, "SELECT status, abort_reason FROM runs");
        assert!(row.starts_with("aborted|probe `health` failed"), "{row}");
        let failed: u32 = sql(&db, "SELECT count(*) FROM probe_answers WHERE ok = 0")
            .parse()
            .unwrap();
        assert!(failed >= 2);
    }
    // The run page shows the abort and the probe's answers.
    let uid = sql(&db, "SELECT uid FROM runs");
    let mut serve = common::Owned(
        atropos()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let address = common::served_address(&mut serve.0);
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /runs/{uid} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    assert!(
        page.contains("probe `health` failed 2 time(s) in a row"),
        "{page}"
    );
    assert!(page.contains("Stop conditions") && page.contains("<strong>unhealthy</strong>"));
    assert!(page.contains("503 Service Unavailable"), "{page}");
}

#[test]
fn a_service_unhealthy_before_the_first_trial_skips_the_run() {
    let dir = tempdir();
    let tok = token("probe-skip");
    let healthy = Arc::new(AtomicBool::new(false));
    let health = health_server(healthy);
    let out = run(dir.path(), &experiment(&tok, &health))
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("skipped: not in its steady state: probe `health` before the trials: 503"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["end"]["status"], "skipped");
    assert_eq!(
        report["trials"].as_array().unwrap().len(),
        0,
        "no trial ran"
    );
    assert!(processes_with(&tok).is_empty());
}

#[test]
fn bad_probes_exit_2_with_their_field() {
    let dir = tempdir();
    let yaml = experiment("atropos-e2e-unused", "127.0.0.1:1")
        .replace("status: [200]", "status: [\"299-200\"]")
        .replace("failure_threshold: 2", "failure_threshold: 0");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = atropos().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("spec.abort[0].status: `299-200`: the range ends before it begins"),
        "{stderr}"
    );
}
