//! Interrupting atropos mid-run. SIGINT: it stops starting trials, kills every target (also
//! one that left its session), writes what it has, exits 3. SIGKILL: its guardian kills the
//! targets' groups. Either way no process is left behind.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{atropos, processes_with, tempdir, token};

/// An experiment whose trials run until killed: a phase that never comes, a fault an hour
/// away. `script` starts two processes carrying the token `tok`.
fn slow_experiment(dir: &Path, tok: &str, script: &str) -> PathBuf {
    let path = dir.join("slow.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: slow }}
spec:
  target:
    run:
      command: ["sh", "-c", "{script}", "{tok}"]
      env: {{ E2E_MARKER: "{tok}" }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
    - {{ name: never, marker: {{ stdout: "^never$" }} }}
  faults:
    - {{ name: usr-ready, signal: SIGUSR2, at: {{ phase: ready, offset: 45s }} }}
  trials: 6
  timeout: 50s
"#
        ),
    )
    .unwrap();
    path
}

/// Waits until the first target and its second process run.
fn wait_for_targets(tok: &str) {
    let start = Instant::now();
    while processes_with(tok).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the targets never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for `child` (ours, not yet reaped) to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "atropos did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_mid_run_kills_every_target_and_writes_the_report() {
    let dir = tempdir();
    let tok = token("interrupt");
    let path = slow_experiment(
        dir.path(),
        &tok,
        "setsid sleep 61 & echo ready; exec sleep 60",
    );
    let json = dir.path().join("report.json");
    let mut child = atropos()
        .args(["run", "--jobs", "2", "--no-db", "--json"])
        .arg(&json)
        .arg(&path)
        .spawn()
        .unwrap();
    wait_for_targets(&tok);
    // Our own child, not reaped yet: its pid cannot name another process.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(3),
        "interrupted without failures is a harness stop"
    );
    assert_eq!(
        processes_with(&tok),
        vec![],
        "a target survived the interruption"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["end"]["status"], "interrupted");
    let trials = report["trials"].as_array().unwrap();
    assert!(
        !trials.is_empty() && trials.len() < 7,
        "only started trials are recorded"
    );
    for t in trials {
        assert_eq!(t["verdict"], "error");
        assert_eq!(t["observation"]["stop"], "interrupted");
        assert!(t["reasons"][0].as_str().unwrap().starts_with("interrupted"));
    }
}

#[test]
fn sigkill_to_atropos_still_leaves_no_target_behind() {
    let dir = tempdir();
    let tok = token("guardian");
    let path = slow_experiment(dir.path(), &tok, "sleep 61 & echo ready; exec sleep 60");
    let mut child = atropos()
        .args(["run", "--jobs", "2", "--no-db"])
        .arg(&path)
        .spawn()
        .unwrap();
    wait_for_targets(&tok);
    // SIGKILL: atropos gets no chance to clean up; its guardian must.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&tok).is_empty() {
        assert!(
            Instant::now() < deadline,
            "targets outlived a SIGKILLed atropos: {:?}",
            processes_with(&tok)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
