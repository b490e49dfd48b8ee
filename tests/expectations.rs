//! Expectations that the examples do not exercise, each failing with its one-line reason:
//! resource bounds, a check command, files present, phases reached, stderr patterns.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use common::{processes_with, root, run_json, tempdir, token, trials_n};

#[test]
fn each_expectation_fails_with_what_was_expected_and_what_happened() {
    let dir = tempdir();
    let tok = token("expect");
    let fixture = root().join("target/debug/well-behaved");
    let path = dir.path().join("x.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: expectations }}
spec:
  target:
    run: {{ command: ["{fixture}", "--port", "${{trial.port}}", "--token", "{tok}"] }}
  phases:
    - {{ name: init, marker: {{ stdout: "^init: loading config" }} }}
    - {{ name: ready, marker: {{ listen: "${{trial.port}}" }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ codes: [0], within: 2s }}
    reaches: [ready]
    resources: {{ max_threads: 1, max_rss: 1GiB }}
    stderr: {{ not_contains: ["panic"] }}
    files: {{ present: ["${{trial.dir}}/never-written"] }}
    check: {{ command: ["sh", "-c", "echo 'lost 3 records' >&2; exit 4"], within: 5s }}
  trials: 2
"#,
            fixture = fixture.display()
        ),
    )
    .unwrap();
    let (out, report) = run_json(&[path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    for t in trials_n(&report, "expectations", "term-ready", 2) {
        let by_name = |n: &str| {
            t["expectations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(by_name("exit")["passed"], true);
        assert_eq!(by_name("reaches ready")["passed"], true);
        assert_eq!(by_name("stderr.not_contains[0]")["passed"], true);
        assert_eq!(by_name("resources.max_rss")["passed"], true);
        let threads = by_name("resources.max_threads");
        assert_eq!(threads["passed"], false);
        assert_eq!(
            threads["actual"], "peaked at 2",
            "main thread and signal thread"
        );
        let file = by_name("files.present[0]");
        assert_eq!(file["passed"], false);
        assert!(
            file["expected"]
                .as_str()
                .unwrap()
                .ends_with("/never-written to exist")
        );
        let check = by_name("check");
        assert_eq!(check["passed"], false);
        assert_eq!(check["actual"], "it exited 4: `lost 3 records`");
        assert_eq!(t["check"]["code"], 4);
        let reasons: Vec<&str> = t["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons.contains(&"resources.max_threads: expected at most 1 threads, but peaked at 2"),
            "{reasons:?}"
        );
    }
    assert!(processes_with(&tok).is_empty());
}

#[test]
fn a_log_marker_follows_the_file_across_rotation_and_truncation() {
    let dir = tempdir();
    let tok = token("logrotate");
    // The target writes `booting` to its log, rotates it by rename (the old descriptor
    // still writes `loaded` into the rotated file), starts a new log with `listening`, then
    // cuts that one to nothing (copytruncate) and writes `ready` into it.
    let script = r#"
log="$1/app.log"
exec 3>>"$log"
echo booting >&3
sleep 0.05
mv "$log" "$log.1"
echo loaded >&3
sleep 0.05
echo listening >> "$log"
sleep 0.05
: > "$log"
echo ready >> "$log"
sleep 5
"#;
    let path = dir.path().join("x.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: log-rotation }}
spec:
  target:
    run: {{ command: ["sh", "-c", {script:?}, "{tok}", "${{trial.dir}}"] }}
  phases:
    - {{ name: booted, marker: {{ log: {{ path: "${{trial.dir}}/app.log", regex: "^booting$" }} }} }}
    - {{ name: loaded, marker: {{ log: {{ path: "${{trial.dir}}/app.log", regex: "^loaded$" }} }} }}
    - {{ name: listening, marker: {{ log: {{ path: "${{trial.dir}}/app.log", regex: "^listening$" }} }} }}
    - {{ name: ready, marker: {{ log: {{ path: "${{trial.dir}}/app.log", regex: "^ready$" }} }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ signals: [SIGTERM] }}
    reaches: [ready]
  trials: 3
"#
        ),
    )
    .unwrap();
    let (out, report) = run_json(&[path.to_str().unwrap()], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for t in trials_n(&report, "log-rotation", "term-ready", 3) {
        let phases = t["observation"]["phases"].as_array().unwrap();
        let entered: Vec<u64> = phases
            .iter()
            .map(|p| {
                p["entered_ns"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{phases:?}"))
            })
            .collect();
        assert_eq!(entered.len(), 4, "{phases:?}");
        assert!(entered.is_sorted(), "entered in order: {phases:?}");
        let ready = phases.iter().find(|p| p["name"] == "ready").unwrap();
        assert_eq!(ready["evidence"], "ready");
        assert_eq!(t["observation"]["deliveries"][0]["signal"], "SIGTERM");
    }
    assert!(processes_with(&tok).is_empty());
}
