//! The engine benchmark: injection latency, per-trial overhead against a bare loop, and
//! throughput, with the `marker-clock` fixture.
//!
//! ```text
//! cargo build --release -p atropos-fixtures && cargo bench -p atropos --bench engine
//! ```
//! `ATROPOS_BENCH_TRIALS` sets the number of trials per measurement (default 1000), split
//! over `ATROPOS_BENCH_ROUNDS` interleaved rounds (default 10): bare loop, atropos
//! `--jobs 1`, atropos `--jobs 2`, again and again, so that the machine's drift hits all
//! three alike. The wall-time ratio comes with a 95% bootstrap interval over the rounds:
//! on a 2-vCPU virtual machine the same loop varies by ±20% from one round to the next.
//!
//! Each round also runs the injector alone (`run_blocking` in a plain loop, no runner) three
//! times: as the only thread of the process; with an idle two-worker tokio runtime alive
//! beside it; and with that runtime woken by one message per trial, as a runner that
//! announced each trial the moment it ended would do. The differences between those lines
//! are what parked threads, and waking them, cost on this machine whatever atropos does: on
//! a 2-vCPU virtual machine a wake-up that crosses to the other, halted vCPU takes about
//! 50 µs, against a few on the same one.
//!
//! The fixture reads CLOCK_MONOTONIC just before it prints `ready <t>` and again inside its
//! SIGTERM handler; the difference is the latency the target feels, from its marker to the
//! signal. The bare loop does the same spawn → read marker → SIGTERM → wait with nothing else;
//! atropos runs the same trials through its whole engine (planning, pidfds, phase tracking,
//! orphan sweep, judging, records).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use atropos::record::TrialRecord;
use atropos::{plan, runner, spec};
use atropos_injector::record::{Line, Observation};

fn fixture() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let path = root.join("target/release/marker-clock");
    if !path.exists() {
        eprintln!(
            "error: {} is missing\nhelp: cargo build --release -p atropos-fixtures",
            path.display()
        );
        std::process::exit(2);
    }
    path
}

fn stamp(line: &str) -> Option<u64> {
    line.split(' ').nth(1)?.parse().ok()
}

/// The fixture's first line starting with `prefix` (`ready `, `handled `) as atropos read
/// it, with the fixture's clock reading in it.
fn fixture_line<'a>(obs: &'a Observation, prefix: &str) -> Option<(&'a Line, u64)> {
    let line = obs
        .stdout_tail
        .iter()
        .find(|l| l.text.starts_with(prefix))?;
    Some((line, stamp(&line.text)?))
}

/// The latency the fixture felt: its clock in the signal handler minus at its marker.
fn felt(obs: &Observation) -> Option<u64> {
    let (_, ready) = fixture_line(obs, "ready ")?;
    let (_, handled) = fixture_line(obs, "handled ")?;
    Some(handled.saturating_sub(ready))
}

struct Stats {
    name: &'static str,
    values: Vec<u64>,
}

impl Stats {
    fn pct(&mut self, q: f64) -> u64 {
        self.values.sort_unstable();
        self.values[((self.values.len() as f64 - 1.0) * q).round() as usize]
    }
    fn mean(&self) -> f64 {
        self.values.iter().sum::<u64>() as f64 / self.values.len() as f64
    }
    fn show(&mut self) -> String {
        let (p50, p99, max) = (self.pct(0.5), self.pct(0.99), self.pct(1.0));
        format!(
            "{:<34} p50 {:>8.1}µs  p99 {:>8.1}µs  max {:>8.1}µs  mean {:>8.1}µs  (n={})",
            self.name,
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            max as f64 / 1e3,
            self.mean() / 1e3,
            self.values.len()
        )
    }
}

/// spawn → marker → SIGTERM → wait, nothing else; per-trial wall and target-felt latency.
fn bare_loop(exe: &Path, n: usize) -> (Stats, Stats, f64, Stats) {
    let mut startup = Stats {
        name: "bare loop: spawn→marker printed",
        values: Vec::with_capacity(n),
    };
    let mut wall = Stats {
        name: "bare loop: per-trial wall",
        values: Vec::with_capacity(n),
    };
    let mut latency = Stats {
        name: "bare loop: marker→handler",
        values: Vec::with_capacity(n),
    };
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let t0_ns = atropos_injector::clock::now_ns();
        let mut child = Command::new(exe)
            .args(["--token", &format!("atropos-bench-bare-{i}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("the fixture starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = lines
            .next()
            .and_then(Result::ok)
            .expect("the fixture prints its marker");
        // Our own child, not reaped yet: the pid cannot name another process.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("the child is alive");
        let handled = lines
            .next()
            .and_then(Result::ok)
            .expect("the fixture reports its handler");
        child.wait().expect("the child exits");
        wall.values.push(t0.elapsed().as_nanos() as u64);
        latency.values.push(
            stamp(&handled)
                .unwrap_or(0)
                .saturating_sub(stamp(&ready).unwrap_or(0)),
        );
        startup
            .values
            .push(stamp(&ready).unwrap_or(0).saturating_sub(t0_ns));
    }
    let secs = start.elapsed().as_secs_f64();
    (wall, latency, secs, startup)
}

fn experiment(dir: &Path, exe: &Path, n: usize) -> PathBuf {
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: bench }}
spec:
  target:
    run: {{ command: ["{}", "--token", "atropos-bench-${{trial.id}}"] }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready " }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ codes: [0], within: 2s }}
    stdout: {{ contains: ["^handled "] }}
    orphans: none
  trials: {n}
  hold: 1ms
  seed: 1
"#,
            exe.display()
        ),
    )
    .expect("the temp dir is writable");
    path
}

/// The same trials through the whole engine; returns records and wall seconds.
fn engine(path: &Path, jobs: usize) -> (Vec<std::sync::Arc<TrialRecord>>, f64) {
    let loaded = spec::load_all(&[path.to_owned()]).expect("the bench experiment is valid");
    let run_plan = plan::plan(
        loaded,
        &format!("rbench{jobs}"),
        1,
        &plan::PlanOptions::default(),
    );
    // As `atropos run` has it: the async side on this thread, the lanes on blocking threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        atropos_injector::init().expect("subreaper");
        let (tx, mut rx) = tokio::sync::mpsc::channel(runner::EVENTS_CAPACITY);
        // The runner keeps no records: the bench collects them from the events.
        let drain = tokio::spawn(async move {
            let mut records = Vec::new();
            while let Some(event) = rx.recv().await {
                if let atropos::record::RunEvent::Trial(r) = event {
                    records.push(r);
                }
            }
            records
        });
        let start = Instant::now();
        runner::execute(
            run_plan,
            &runner::RunOptions {
                jobs,
                keep_dirs: false,
                fleet: None,
            },
            tx,
            Default::default(),
        )
        .await;
        let secs = start.elapsed().as_secs_f64();
        let records = drain.await.expect("the drain task does not panic");
        (records, secs)
    })
}

/// What else is in the process while [`injector_loop`] runs.
#[derive(Clone, Copy, PartialEq)]
enum Beside {
    /// Nothing: the loop is the process's only thread.
    Nothing,
    /// A tokio runtime with two worker threads that have run and now sleep.
    IdleRuntime,
    /// That runtime, with a task that is sent one message per trial.
    RuntimeWokenPerTrial,
}

/// The injector alone: the same trials through `run_blocking` in a plain loop on this
/// thread, without the runner, judging or records, with `beside` in the process. Returns
/// seconds per trial and the felt latency's p50 in ns.
fn injector_loop(path: &Path, beside: Beside) -> (f64, u64) {
    let rt = (beside != Beside::Nothing).then(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            for _ in 0..4 {
                let _ = tokio::spawn(async {}).await;
            }
        });
        rt
    });
    let loaded = spec::load_all(&[path.to_owned()]).expect("the bench experiment is valid");
    let run_plan = plan::plan(loaded, "rinj", 1, &plan::PlanOptions::default());
    let exp = &run_plan.experiments[0];
    atropos_injector::init().expect("subreaper");
    let cancel = atropos_injector::CancellationToken::new();
    let env = plan::TrialEnv {
        port: 0,
        dir: std::env::temp_dir(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let listener = rt
        .as_ref()
        .filter(|_| beside == Beside::RuntimeWokenPerTrial)
        .map(|rt| rt.spawn(async move { while rx.recv().await.is_some() {} }));
    let start = Instant::now();
    let (base, _) = plan::injector_plan(exp, &exp.baseline, &env, &Default::default(), None);
    let base = atropos_injector::trial::run_blocking(&base, &cancel);
    let lengths = plan::PhaseLengths::from_baseline(&base);
    let mut felt = Vec::new();
    for trial in exp.trials() {
        let (iplan, _) = plan::injector_plan(exp, &trial, &env, &lengths, None);
        let obs = atropos_injector::trial::run_blocking(&iplan, &cancel);
        felt.extend(self::felt(&obs));
        if listener.is_some() {
            let _ = tx.send(felt.len());
        }
    }
    let per = start.elapsed().as_secs_f64() / (exp.fault_trials() + 1) as f64;
    drop(rt);
    felt.sort_unstable();
    (per, felt.get(felt.len() / 2).copied().unwrap_or(0))
}

fn felt_latency(records: &[std::sync::Arc<TrialRecord>]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.fault != plan::BASELINE)
        .filter_map(|r| felt(&r.observation))
        .collect()
}

/// Per-trial breakdown of where atropos's time goes, from the records.
fn breakdown(fault: &[&std::sync::Arc<TrialRecord>]) {
    let mut spans: Vec<(u64, u64)> = fault
        .iter()
        .map(|r| {
            (
                r.observation.started_ns,
                r.observation.started_ns + r.observation.ended_ns,
            )
        })
        .collect();
    spans.sort_unstable();
    let mut gap = Stats {
        name: "  gap between trials",
        values: spans
            .windows(2)
            .map(|w| w[1].0.saturating_sub(w[0].1))
            .collect(),
    };
    let mut read = Stats {
        name: "  fixture print→atropos read",
        values: Vec::new(),
    };
    let mut sig = Stats {
        name: "  atropos send→fixture handler",
        values: Vec::new(),
    };
    let mut startup = Stats {
        name: "  spawn→marker printed",
        values: Vec::new(),
    };
    for r in fault {
        let o = &r.observation;
        let ready = fixture_line(o, "ready ");
        let handled = fixture_line(o, "handled ").map(|(_, at)| at);
        if let (Some((ready, printed)), Some(handled), Some(d)) =
            (ready, handled, o.deliveries.first())
        {
            read.values
                .push((o.started_ns + ready.at_ns).saturating_sub(printed));
            sig.values
                .push(handled.saturating_sub(o.started_ns + d.delivered_ns));
            startup.values.push(printed.saturating_sub(o.started_ns));
        }
    }
    for s in [&mut gap, &mut read, &mut sig, &mut startup] {
        println!("{}", s.show());
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe benches this way.
    }
    let n: usize = std::env::var("ATROPOS_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rounds: usize = std::env::var("ATROPOS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let per_round = n.div_ceil(rounds);
    let exe = fixture();
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = experiment(dir.path(), &exe, per_round);
    println!(
        "atropos engine benchmark: {} trials per measurement in {rounds} interleaved rounds, {} cores",
        per_round * rounds,
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // Warm the page cache and the fixture binary.
    let _ = bare_loop(&exe, 20);
    // Bare loop and atropos alternate, so that load from elsewhere hits both alike.
    let mut bare_wall = Stats {
        name: "bare loop: per-trial wall",
        values: Vec::new(),
    };
    let mut bare_latency = Stats {
        name: "bare loop: marker→handler",
        values: Vec::new(),
    };
    let mut bare_startup = Stats {
        name: "bare loop: spawn→marker printed",
        values: Vec::new(),
    };
    let (mut bare_secs, mut seq_secs, mut par_secs) = (0.0, 0.0, 0.0);
    // Per round: (bare seconds, atropos --jobs 1 seconds), for the interval of the ratio.
    let mut round_secs: Vec<(f64, f64)> = Vec::new();
    // Per round: the injector alone beside nothing, an idle runtime, a runtime woken per
    // trial; seconds per trial and felt p50.
    let mut alone: Vec<[(f64, u64); 3]> = Vec::new();
    let mut records = Vec::new();
    let mut par_records = Vec::new();
    for _ in 0..rounds {
        let (w, l, secs, s) = bare_loop(&exe, per_round);
        let bare_round = secs;
        bare_wall.values.extend(w.values);
        bare_latency.values.extend(l.values);
        bare_startup.values.extend(s.values);
        bare_secs += secs;
        alone.push(
            [
                Beside::Nothing,
                Beside::IdleRuntime,
                Beside::RuntimeWokenPerTrial,
            ]
            .map(|beside| injector_loop(&path, beside)),
        );
        let (r, secs) = engine(&path, 1);
        records.extend(r);
        seq_secs += secs;
        // The engine's round has one trial more (the baseline): compare per trial.
        round_secs.push((bare_round / per_round as f64, secs / (per_round + 1) as f64));
        let (r, secs) = engine(&path, 2);
        par_records.extend(r);
        par_secs += secs;
    }
    let fault: Vec<_> = records
        .iter()
        .filter(|r| r.fault != plan::BASELINE)
        .collect();
    let failed = fault
        .iter()
        .filter(|r| r.verdict != atropos::record::Verdict::Pass)
        .count();
    let par_failed = par_records
        .iter()
        .filter(|r| r.verdict != atropos::record::Verdict::Pass)
        .count();
    let mut felt = Stats {
        name: "atropos: marker→handler (target)",
        values: felt_latency(&records),
    };
    let mut injected = Stats {
        name: "atropos: marker seen→delivered",
        values: fault.iter().filter_map(|r| r.latency_ns).collect(),
    };
    let mut trial_wall = Stats {
        name: "atropos: per-trial wall (record)",
        values: fault.iter().map(|r| r.duration_ns).collect(),
    };
    let mut par_felt = Stats {
        name: "atropos --jobs 2: marker→handler",
        values: felt_latency(&par_records),
    };

    println!("{}", bare_latency.show());
    println!("{}", felt.show());
    println!("{}", injected.show());
    println!("{}", par_felt.show());
    println!("{}", bare_startup.show());
    println!("{}", bare_wall.show());
    println!("{}", trial_wall.show());
    println!("where atropos's time goes (--jobs 1):");
    breakdown(&fault);
    let trials = (per_round * rounds) as f64;
    let bare_per = bare_secs / trials;
    let seq_per = seq_secs / (trials + rounds as f64);
    // How far the ratio moves with the machine's noise.
    let (low, high) = common::ratio_interval(&round_secs);
    let mut per_round: Vec<f64> = round_secs.iter().map(|(b, a)| a / b).collect();
    per_round.sort_by(f64::total_cmp);
    println!(
        "per-trial wall, whole run / trials: bare {:.3}ms · atropos --jobs 1 {:.3}ms · ratio {:.2}x [95%: {:.2}x .. {:.2}x; rounds {:.2}x .. {:.2}x] (target ≤ 1.30x)",
        bare_per * 1e3,
        seq_per * 1e3,
        seq_per / bare_per,
        low,
        high,
        per_round[0],
        per_round[per_round.len() - 1],
    );
    // Where the rest goes: the injector alone, as the only thread of this process, with
    // idle runtime threads beside it, and with those threads woken once per trial.
    for (i, label) in [
        "alone in the process",
        "beside an idle tokio runtime",
        "beside a runtime woken per trial",
    ]
    .iter()
    .enumerate()
    {
        let mut ratios: Vec<f64> = alone
            .iter()
            .zip(&round_secs)
            .map(|(a, (bare, _))| a[i].0 / bare)
            .collect();
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        ratios.sort_by(f64::total_cmp);
        let mut p50s: Vec<u64> = alone.iter().map(|a| a[i].1).collect();
        p50s.sort_unstable();
        println!(
            "  injector loop {label:<30} ratio mean {mean:.2}x (rounds {:.2}x .. {:.2}x) · felt p50 median {:.1}µs",
            ratios[0],
            ratios[ratios.len() - 1],
            p50s[p50s.len() / 2] as f64 / 1e3
        );
    }
    println!(
        "throughput: atropos --jobs 2 {:.0} trials/s (target ≥ 200/s) · --jobs 1 {:.0} trials/s · bare loop {:.0}/s",
        (trials + rounds as f64) / par_secs,
        (trials + rounds as f64) / seq_secs,
        trials / bare_secs
    );
    println!(
        "targets: felt latency p50 {:.1}µs (≤ 100µs) · p99 {:.1}µs (≤ 1000µs) · trials not passing: {failed} + {par_failed}",
        felt.pct(0.5) as f64 / 1e3,
        felt.pct(0.99) as f64 / 1e3
    );
}
