//! Trials through `atropos-injector` on loopback against in-process, same fixture, same run.
//!
//! ```text
//! cargo build --release -p atropos-fixtures -p atropos-injector && cargo bench -p atropos --bench injectors
//! ```
//! Two injectors start on loopback ports. In `ATROPOS_BENCH_ROUNDS` (default 5) interleaved
//! rounds, the `marker-clock` fixture runs `ATROPOS_BENCH_TRIALS` (default 200) SIGTERM
//! trials with `--jobs 1`, once in-process and once on an injector:
//! - felt injection latency: the fixture's own clock, before its `ready` print and in its
//!   SIGTERM handler (measured on the node, so it must stay within the engine's targets);
//! - per-trial dispatch overhead: the record's duration at the controller minus the trial's
//!   own length on the node (`observation.ended_ns`), against the same difference
//!   in-process (planning, judging).
//!
//! Then throughput: `ATROPOS_BENCH_THROUGHPUT` (default 3000) trials of a fixture that exits
//! at once, spread over both injectors (`target.nodes`), `--jobs 32`; and the same
//! in-process with `--jobs 2`. Last, the idle RSS of a fresh injector (and of its guardian),
//! and the size of the binary as built and stripped.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn injector_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_atropos")).with_file_name("atropos-injector")
}

struct Injector {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, name: &str) -> Injector {
    let token = format!("bench-token-{name}-{}", std::process::id());
    let file = dir.join(format!("{name}.token"));
    std::fs::write(&file, &token).unwrap();
    let mut child = Command::new(injector_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node",
            name,
            "--label",
            "role=bench",
        ])
        .args(["--max-trials", "16"])
        .arg("--token-file")
        .arg(&file)
        .arg("--state-dir")
        .arg(dir.join(format!("{name}.state")))
        .env("ATROPOS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run `cargo build --release -p atropos-injector` first");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_owned();
    Injector { child, url, token }
}

fn write_fleet(dir: &Path, injectors: &[(&str, &Injector)]) {
    let mut yaml = String::from("kind: Injectors\ninjectors:\n");
    for (name, inj) in injectors {
        let file = dir.join(format!("{name}.ctl-token"));
        std::fs::write(&file, &inj.token).unwrap();
        yaml.push_str(&format!(
            "  - {{ name: {name}, url: \"{}\", token_file: {} }}\n",
            inj.url,
            file.display()
        ));
    }
    std::fs::write(dir.join("atropos.yaml"), yaml).unwrap();
}

fn experiment(dir: &Path, name: &str, placement: &str, command: &str, trials: usize) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: {name} }}
spec:
  target:
    {placement}
    run: {{ command: {command} }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready" }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ within: 2s }}
  trials: {trials}
  hold: 1ms
  seed: 1
"#
        ),
    )
    .unwrap();
    path
}

/// Runs `atropos run` on `yaml`; returns the fault trials' records and the wall seconds.
fn run(dir: &Path, yaml: &Path, jobs: usize) -> (Vec<serde_json::Value>, f64) {
    let json = dir.join("report.json");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_atropos"))
        .current_dir(dir)
        .arg("run")
        .arg(yaml)
        .args(["--no-db", "-j", &jobs.to_string(), "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(
        status.code(),
        Some(0),
        "atropos run of {} failed",
        yaml.display()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let trials = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["fault"] == "term-ready")
        .cloned()
        .collect();
    (trials, wall)
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

#[derive(Default)]
struct Figures {
    felt: Vec<u64>,
    engine: Vec<u64>,
    overhead: Vec<u64>,
}

impl Figures {
    fn add(&mut self, trials: &[serde_json::Value]) {
        for t in trials {
            let tail = &t["observation"]["stdout_tail"];
            if let (Some(w), Some(h)) = (stamp(tail, "ready "), stamp(tail, "handled ")) {
                self.felt.push(h.saturating_sub(w));
            }
            if let Some(l) = t["latency_ns"].as_u64() {
                self.engine.push(l);
            }
            let (Some(d), Some(e)) = (
                t["duration_ns"].as_u64(),
                t["observation"]["ended_ns"].as_u64(),
            ) else {
                continue;
            };
            self.overhead.push(d.saturating_sub(e));
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe benches this way.
    }
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let trials = env("ATROPOS_BENCH_TRIALS", 200);
    let rounds = env("ATROPOS_BENCH_ROUNDS", 5);
    let many = env("ATROPOS_BENCH_THROUGHPUT", 3000);
    let fixture = root().join("target/release/marker-clock");
    assert!(
        fixture.exists(),
        "run `cargo build --release -p atropos-fixtures` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let n1 = start(dir.path(), "n1");
    let n2 = start(dir.path(), "n2");
    write_fleet(dir.path(), &[("n1", &n1), ("n2", &n2)]);
    // Idle, before any trial: the agent and its guardian.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let idle = rss_kib(n1.child.id());
    let guardian = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", n1.child.id()))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .map(rss_kib)
        .sum::<u64>();

    let command = format!("[\"{}\"]", fixture.display());
    let local = experiment(dir.path(), "local", "", &command, trials);
    let remote = experiment(dir.path(), "remote", "node: n1", &command, trials);
    println!(
        "injectors benchmark: {trials} trials × {rounds} rounds each way, {} cores",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let (mut here, mut there) = (Figures::default(), Figures::default());
    for _ in 0..rounds {
        here.add(&run(dir.path(), &local, 1).0);
        there.add(&run(dir.path(), &remote, 1).0);
    }
    for (name, f) in [("in-process", &mut here), ("injector  ", &mut there)] {
        println!(
            "{name}: felt latency p50 {:.1} µs p99 {:.1} µs · engine latency p50 {:.1} µs · \
             per-trial overhead p50 {:.1} µs p99 {:.1} µs ({} trials)",
            pct(&mut f.felt, 0.5),
            pct(&mut f.felt, 0.99),
            pct(&mut f.engine, 0.5),
            pct(&mut f.overhead, 0.5),
            pct(&mut f.overhead, 0.99),
            f.felt.len()
        );
    }
    println!(
        "dispatch overhead (injector − in-process), p50: {:.1} µs",
        pct(&mut there.overhead, 0.5) - pct(&mut here.overhead, 0.5)
    );

    // Throughput: a target that says ready and exits on its SIGTERM at once.
    let quick = format!("[\"{}\"]", fixture.display());
    let spread = experiment(dir.path(), "spread", "nodes: { role: bench }", &quick, many);
    let (records, wall) = run(dir.path(), &spread, 32);
    let on_n1 = records.iter().filter(|t| t["node"] == "n1").count();
    println!(
        "throughput over two injectors (--jobs 32): {:.0} trials/s ({} trials, {on_n1} on n1, {} on n2, {:.2} s)",
        records.len() as f64 / wall,
        records.len(),
        records.len() - on_n1,
        wall
    );
    let alone = experiment(dir.path(), "alone", "", &quick, many);
    let (records, wall) = run(dir.path(), &alone, 2);
    println!(
        "throughput in-process (--jobs 2): {:.0} trials/s ({} trials)",
        records.len() as f64 / wall,
        records.len()
    );
    let after = rss_kib(n1.child.id());
    println!(
        "atropos-injector RSS: idle {:.1} MiB (guardian {:.1} MiB), after the runs {:.1} MiB",
        idle as f64 / 1024.0,
        guardian as f64 / 1024.0,
        after as f64 / 1024.0
    );
    let built = std::fs::metadata(injector_bin()).map_or(0, |m| m.len());
    let stripped_path = dir.path().join("atropos-injector.stripped");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(injector_bin())
        .status()
        .ok()
        .filter(std::process::ExitStatus::success)
        .and_then(|_| std::fs::metadata(&stripped_path).ok())
        .map_or(0, |m| m.len());
    println!(
        "atropos-injector binary: {:.1} MiB as built (line tables), {:.1} MiB stripped",
        built as f64 / (1 << 20) as f64,
        stripped as f64 / (1 << 20) as f64
    );
}
