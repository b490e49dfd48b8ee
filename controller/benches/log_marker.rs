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
//!
//! Then the same for an attached target: the benchmark starts `marker-clock --wait --log`
//! itself, the injector attaches to it (pid, start time, boot id; signals through the
//! pidfd), and once the trial watches the log the benchmark tells the fixture to write.
//! And with a `journald` marker: the fixture writes its entry into a journal that
//! `systemd-journal-remote` keeps in a temp folder (skipped where it is not installed), and
//! the trial follows it through `journalctl --follow`.

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

/// Felt latencies (ns) of `trials` trials against a `marker-clock` this benchmark started
/// and the injector attached to.
fn felt_attached(
    dir: &Path,
    trials: u64,
    journal: Option<&atropos_injector::journald::testing::TestJournal>,
) -> Vec<u64> {
    use atropos_injector as inj;
    use std::io::{BufRead, Write};
    atropos_injector::init().unwrap();
    let fixture = root().join("target/release/marker-clock");
    let mut out = Vec::new();
    for i in 0..trials {
        let log = dir.join(format!("attached-{i}.log"));
        let token = format!("atropos-log-bench-{}-{i}", std::process::id());
        let unit = format!("{token}.service");
        let mut command = std::process::Command::new(&fixture);
        command.arg("--wait");
        match journal {
            Some(j) => command.arg("--journal").arg(&j.fifo).args([&unit, &j.boot]),
            None => command.arg("--log").arg(&log),
        };
        let mut child = command
            .arg(&token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let starttime = loop {
            if let Some(s) = inj::procfs::ProcStat::read(pid) {
                break s.starttime;
            }
        };
        let plan = inj::TrialPlan {
            format: inj::PLAN_FORMAT,
            id: token.clone(),
            target: inj::Target::Attach(inj::AttachTarget {
                processes: vec![inj::Identity { pid, starttime }],
                boot_id: inj::journal::boot_id().to_owned(),
                cwd: dir.to_owned(),
                cgroup: None,
                spare: Vec::new(),
            }),
            phases: vec![inj::PhasePlan {
                name: "ready".into(),
                marker: match journal {
                    Some(j) => inj::Marker::Journald {
                        unit: unit.clone(),
                        regex: "^ready ".into(),
                        directory: Some(j.dir.clone()),
                        since_us: None,
                    },
                    None => inj::Marker::Log {
                        path: log.clone(),
                        regex: "^ready ".into(),
                        from: None,
                    },
                },
                within: None,
            }],
            steps: vec![inj::StepPlan {
                action: inj::Action::Signal(inj::Signal::TERM),
                aim: inj::Aim::Main,
                when: inj::When::Phase {
                    index: 0,
                    offset: std::time::Duration::ZERO,
                },
            }],
            watches: Vec::new(),
            finish: inj::Finish::Observe,
            hold: std::time::Duration::ZERO,
            grace: std::time::Duration::from_secs(2),
            timeout: std::time::Duration::from_secs(10),
            sample_resources: false,
            tail_lines: 0,
            kill_orphans: false,
        };
        let cancel = inj::CancellationToken::new();
        let trial = std::thread::spawn(move || inj::trial::run_blocking(&plan, &cancel));
        // The trial follows the log from its end before it pins the process: a moment
        // after the start is enough (journalctl takes a few milliseconds more to start).
        let settle = if journal.is_some() { 100 } else { 20 };
        std::thread::sleep(std::time::Duration::from_millis(settle));
        writeln!(child.stdin.take().unwrap(), "go").unwrap();
        let obs = trial.join().unwrap();
        assert_eq!(obs.deliveries.len(), 1, "{obs:?}");
        let lines: Vec<String> = std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .collect();
        child.wait().unwrap();
        let stamp = |prefix: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<u64>().ok())
        };
        if let (Some(w), Some(h)) = (stamp("logged "), stamp("handled ")) {
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
            let felt = felt(dir.path(), marker, args, trials, jobs);
            report(&format!("marker on {label:<8} --jobs {jobs}:"), felt);
        }
    }
    report(
        "attached, marker on log file: ",
        felt_attached(dir.path(), trials.min(300), None),
    );
    match atropos_injector::journald::testing::TestJournal::start(dir.path()) {
        Some(journal) => report(
            "attached, marker on journald:",
            felt_attached(dir.path(), trials.min(300), Some(&journal)),
        ),
        None => eprintln!("skipped journald: systemd-journal-remote is not installed"),
    }
}

/// Prints p50, p99 and max of the felt latencies `v` (ns) after `label`.
fn report(label: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    let at = |q: f64| v[((q * v.len() as f64) as usize).min(v.len() - 1)] as f64 / 1e3;
    println!(
        "{label} line written → SIGTERM felt p50 {:>6.1} µs  p99 {:>7.1} µs  max {:>8.1} µs  ({} trials)",
        at(0.5),
        at(0.99),
        v[v.len() - 1] as f64 / 1e3,
        v.len()
    );
}
