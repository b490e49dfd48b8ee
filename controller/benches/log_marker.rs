//! Log-line-to-signal latency: how long after a target appends its marker line to a log
//! file the SIGTERM aimed at that phase arrives, as the target feels it.
//!
//! ```text
//! cargo build --release -p atropos-fixtures && cargo bench -p atropos --bench log_marker
//! ```
//! The real `atropos run` (`--jobs 1` and `--jobs 2`) runs `ATROPOS_BENCH_TRIALS` trials
//! (default 500) of the `marker-clock` fixture with `--log ${trial.dir}/app.log`: it reads
//! CLOCK_MONOTONIC just before it writes `ready <t>` to the log and again in its SIGTERM
//! handler, and prints both on stdout. The phase `ready` is a `log` marker on that file
//! (an inotify watch on its folder wakes the trial's wait), the fault `SIGTERM` at it.
//! For comparison the same fixture runs with its marker on stdout. Prints p50, p99 and max
//! of the difference, from the JSON report.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn stamp(lines: &serde_json::Value, prefix: &str) -> Option<u64> {
    lines.as_array()?.iter().find_map(|l| {
        l["text"]
            .as_str()?
            .strip_prefix(prefix)?
            .trim()
            .parse()
            .ok()
    })
}

/// Felt latencies (ns) of every fault trial of one `atropos run`.
fn felt(dir: &Path, marker: &str, fixture_args: &str, trials: u64, jobs: u32) -> Vec<u64> {
    let fixture = root().join("target/release/marker-clock");
    let yaml = dir.join(format!("bench-{jobs}.yaml"));
    std::fs::write(
        &yaml,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: log-marker-bench }}
spec:
  target:
    run: {{ command: ["{fixture}"{fixture_args}] }}
  phases:
    - {{ name: ready, marker: {marker} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ codes: [0] }}
  trials: {trials}
"#,
            fixture = fixture.display()
        ),
    )
    .unwrap();
    let json = dir.join("report.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_atropos"))
        .current_dir(dir)
        .args([
            "run",
            yaml.to_str().unwrap(),
            "--no-db",
            "-j",
            &jobs.to_string(),
        ])
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "atropos run failed");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mut out = Vec::new();
    for t in report["trials"].as_array().unwrap() {
        if t["fault"] != "term-ready" {
            continue;
        }
        let tail = &t["observation"]["stdout_tail"];
        let wrote = stamp(tail, "logged ").or_else(|| stamp(tail, "ready "));
        let handled = stamp(tail, "handled ");
        if let (Some(w), Some(h)) = (wrote, handled) {
            out.push(h.saturating_sub(w));
        }
    }
    assert_eq!(out.len() as u64, trials, "every trial has both stamps");
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if !root().join("target/release/marker-clock").exists() {
        eprintln!(
            "error: marker-clock is missing\nhelp: cargo build --release -p atropos-fixtures"
        );
        std::process::exit(2);
    }
    let trials = std::env::var("ATROPOS_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let log = r#"{ log: { path: "${trial.dir}/app.log", regex: "^ready " } }"#;
    let stdout = r#"{ stdout: "^ready " }"#;
    for jobs in [1, 2] {
        for (label, marker, args) in [
            ("log file", log, r#", "--log", "${trial.dir}/app.log""#),
            ("stdout", stdout, ""),
        ] {
            let mut v = felt(dir.path(), marker, args, trials, jobs);
            v.sort_unstable();
            let at = |q: f64| v[((q * v.len() as f64) as usize).min(v.len() - 1)] as f64 / 1e3;
            println!(
                "marker on {label:<8} --jobs {jobs}: line written → SIGTERM felt p50 {:>6.1} µs  p99 {:>7.1} µs  max {:>8.1} µs  ({} trials)",
                at(0.5),
                at(0.99),
                v[v.len() - 1] as f64 / 1e3,
                v.len()
            );
        }
    }
}
