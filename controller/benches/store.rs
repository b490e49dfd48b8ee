//! Benchmark of the results store and the dashboard (not a test: `cargo bench` runs it).
//!
//! ```text
//! cargo bench -p atropos --bench store
//! ```
//! 1. fills a store with `ATROPOS_BENCH_TRIALS` trials (default 1,000,000) over
//!    `ATROPOS_BENCH_EXPERIMENTS` experiments (default 100): one experiment per run, 6 faults
//!    × 5 trials + a baseline, runs spread over 90 days (the file is kept under
//!    `target/bench/` and reused by later runs with the same sizes);
//! 2. times the overview and experiment pages through the real router (HTML and JSON),
//!    `ATROPOS_BENCH_REQUESTS` times each (default 300), and prints p50 / p99 / max;
//! 3. (alone with `ATROPOS_BENCH_ONLY=overhead`) measures what recording adds to a run: the real `atropos run` on
//!    `tests/fixtures/store/trivial.yaml` (501 trials of `sh -c 'exit 0'`, the cheapest trial
//!    there is) and `steady.yaml` with `--no-db` and with `--db` (one store file for all
//!    rounds, as `./atropos.db` is kept between runs), alternated, over
//!    `ATROPOS_BENCH_OVERHEAD_ROUNDS` rounds (default 40): the ratio of the mean wall times
//!    with a 95% bootstrap interval (single runs on this kind of machine vary by ±10%), the
//!    medians, the CPU time of the runs, and (from a 2-trial run) the part that is paid once
//!    per run rather than per trial.
//! 4. (alone with `ATROPOS_BENCH_ONLY=write`) what the writer spends per trial, in-process
//!    and without any target around it: 601 synthetic trials committed through the
//!    [`Recorder`] in batches of 1, 7, 25 (a 20 ms batch of the cheapest trials with
//!    `--jobs 2`), 100 and 601, `ATROPOS_BENCH_WRITE_ROUNDS` times each (default 15), with
//!    the median and the spread of the rounds.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use atropos::dashboard::{AppState, app};
use atropos::record::ExperimentInfo;
use atropos::store::{Recorder, Store, synthetic};
use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const FAULTS: usize = 6;
const PHASES: usize = 4;
const PER_FAULT: u32 = 5;

async fn fill(db: &Path, trials: u64, experiments: usize) -> anyhow::Result<()> {
    let exps: Vec<ExperimentInfo> = (0..experiments)
        .map(|i| synthetic::experiment(i, PHASES, FAULTS))
        .collect();
    let per_run = 1 + FAULTS as u64 * u64::from(PER_FAULT);
    let runs = trials.div_ceil(per_run);
    let mut recorder = Recorder::open(db).await?;
    let start = Instant::now();
    let now = atropos::record::unix_now();
    let span = 90.0 * 86_400.0;
    let mut batch = Vec::new();
    for r in 0..runs {
        let exp = &exps[(r as usize) % experiments];
        let at = now - span + span * (r as f64 / runs as f64);
        batch.extend(synthetic::run(
            &format!("r{r:08x}"),
            at,
            r.wrapping_mul(0x9e37_79b9),
            std::slice::from_ref(exp),
            PER_FAULT,
        ));
        if r % 50 == 49 || r + 1 == runs {
            recorder.record_batch(&batch).await?;
            batch.clear();
        }
        if r % 5000 == 4999 {
            eprintln!(
                "  {} of {runs} runs ({:.0}s)",
                r + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    recorder.close().await?;
    eprintln!(
        "filled {} trials in {runs} runs in {:.1}s",
        runs * per_run,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}

async fn time_route(
    router: &axum::Router,
    label: &str,
    uris: &mut dyn FnMut(usize) -> String,
    n: usize,
) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n {
        let uri = uris(i);
        let start = Instant::now();
        let response = router
            .clone()
            .oneshot(axum::http::Request::get(&uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{uri}: {}",
            response.status()
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        times.push(start.elapsed());
        bytes = body.len();
    }
    times.sort();
    let (p50, p99) = (quantile(&times, 0.5), quantile(&times, 0.99));
    println!(
        "{label:<28} p50 {:>8}  p99 {:>8}  max {:>8}  ({n} requests, ~{} KiB)",
        ms(p50),
        ms(p99),
        ms(*times.last().unwrap()),
        bytes / 1024
    );
    (p50, p99)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// CPU time (user + system) of this process's reaped children, in seconds.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // After the command name: field 3 is the state; cutime and cstime are fields 16 and 17.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(16) + ticks(17)) / 100.0
}

/// Wall time of `atropos run` on `fixture` (in `tests/fixtures/store/`) with `extra` args.
fn atropos_run(
    dir: &Path,
    fixture: &str,
    extra: &[&str],
    db: Option<&Path>,
) -> anyhow::Result<(Duration, f64)> {
    let fixture = format!(
        "{}/../tests/fixtures/store/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_atropos"));
    cmd.current_dir(dir)
        .args(["run", &fixture, "-j", "2"])
        .args(extra);
    match db {
        Some(db) => cmd.arg("--db").arg(db),
        None => cmd.arg("--no-db"),
    };
    let (start, cpu) = (Instant::now(), children_cpu());
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    let took = (start.elapsed(), children_cpu() - cpu);
    anyhow::ensure!(status.code() == Some(0), "atropos run failed: {status}");
    Ok(took)
}

/// Runs `fixture` alternately without and with a store (in turn first, so that neither
/// always follows the other); prints the medians, the ratio of the mean wall times with a 95%
/// bootstrap interval, and the CPU time of the runs. Returns the mean wall times.
fn compare_runs(
    label: &str,
    fixture: &str,
    extra: &[&str],
    rounds: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut cpu_without, mut cpu_with) = (0.0, 0.0);
    // One store for all rounds, made by a first run, as `./atropos.db` is between runs.
    let db = dir.path().join("atropos.db");
    atropos_run(dir.path(), fixture, extra, Some(&db))?;
    for round in 0..rounds {
        for store in [round % 2 == 1, round % 2 == 0] {
            if store {
                let (wall, cpu) = atropos_run(dir.path(), fixture, extra, Some(&db))?;
                with.push(wall.as_secs_f64());
                cpu_with += cpu;
            } else {
                let (wall, cpu) = atropos_run(dir.path(), fixture, extra, None)?;
                without.push(wall.as_secs_f64());
                cpu_without += cpu;
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (a, b) = (mean(&without), mean(&with));
    // How far the ratio of means moves with the noise, resampling the rounds.
    let pairs: Vec<(f64, f64)> = without.iter().copied().zip(with.iter().copied()).collect();
    let (low, high) = common::ratio_interval(&pairs);
    let pct = |r: f64| (r - 1.0) * 100.0;
    let mut sorted = (without.clone(), with.clone());
    sorted.0.sort_by(f64::total_cmp);
    sorted.1.sort_by(f64::total_cmp);
    println!(
        "{label:<44} --no-db {:>7.1}ms  --db {:>7.1}ms (means of {rounds}): {:+.1}% [95%: {:+.1}% .. {:+.1}%]; medians {:+.1}%; CPU of the runs {:+.1}%",
        a * 1e3,
        b * 1e3,
        pct(b / a),
        pct(low),
        pct(high),
        pct(sorted.1[rounds / 2] / sorted.0[rounds / 2]),
        pct(cpu_with / cpu_without)
    );
    Ok((a, b))
}

async fn overhead() -> anyhow::Result<()> {
    let rounds = env_or("ATROPOS_BENCH_OVERHEAD_ROUNDS", 40) as usize;
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_atropos"))
        .args(["run", "--help"])
        .output()?;
    if String::from_utf8_lossy(&help.stdout).contains("--no-db") {
        // What opening and closing the store cost a run, whatever its trials.
        let (a, b) = compare_runs(
            "atropos run trivial.yaml --trials 1 (2 × `exit 0`)",
            "trivial.yaml",
            &["--trials", "1"],
            rounds,
        )?;
        let fixed = b - a;
        let (a, b) = compare_runs(
            "atropos run trivial.yaml (501 × `exit 0`)",
            "trivial.yaml",
            &[],
            rounds,
        )?;
        println!(
            "  of which per run: {:.1} ms (open, migrations, close); per trial: {:.0} µs",
            fixed * 1e3,
            (b - a - fixed) / 501.0 * 1e6
        );
        compare_runs(
            "atropos run steady.yaml (81 × ~100ms)",
            "steady.yaml",
            &["--trials", "40"],
            rounds.div_ceil(2),
        )?;
    } else {
        println!("atropos run has no --db/--no-db yet: write overhead of a real run not measured");
    }
    Ok(())
}

/// CPU time (user + system) of this process so far, all threads, in seconds.
fn process_cpu() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}

/// What committing a trial costs the writer, by batch size (see the module's doc).
async fn write_cost() -> anyhow::Result<()> {
    let rounds = env_or("ATROPOS_BENCH_WRITE_ROUNDS", 15);
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("write.db");
    let exp = synthetic::experiment(0, PHASES, FAULTS);
    let now = atropos::record::unix_now();
    for batch in [1, 7, 25, 100, 601] {
        let (mut per_trial, mut cpu_per_trial) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let events = synthetic::run(
                &format!("w{batch}-{round}"),
                now,
                round,
                std::slice::from_ref(&exp),
                100,
            );
            let [start, trials @ .., end] = events.as_slice() else {
                anyhow::bail!("a synthetic run has a start and an end");
            };
            assert_eq!(trials.len(), 601);
            let mut recorder = Recorder::open(&db).await?;
            recorder.record(start).await?;
            let (began, cpu) = (Instant::now(), process_cpu());
            for chunk in trials.chunks(batch) {
                recorder.record_batch(chunk).await?;
            }
            per_trial.push(began.elapsed().as_secs_f64() / trials.len() as f64);
            cpu_per_trial.push((process_cpu() - cpu) / trials.len() as f64);
            recorder.record(end).await?;
            recorder.close().await?;
        }
        per_trial.sort_by(f64::total_cmp);
        cpu_per_trial.sort_by(f64::total_cmp);
        let at = |v: &[f64], q: f64| v[((q * v.len() as f64) as usize).min(v.len() - 1)] * 1e6;
        println!(
            "write cost per trial, batches of {batch:>3}: wall median {:>5.1} µs (min {:.1}, p90 {:.1}); CPU median {:>5.1} µs (min {:.1}, p90 {:.1}); {rounds} rounds",
            at(&per_trial, 0.5),
            per_trial[0] * 1e6,
            at(&per_trial, 0.9),
            at(&cpu_per_trial, 0.5),
            cpu_per_trial[0] * 1e6,
            at(&cpu_per_trial, 0.9),
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` and `--list` probes: nothing to do.
        return Ok(());
    }
    let trials = env_or("ATROPOS_BENCH_TRIALS", 1_000_000);
    let experiments = env_or("ATROPOS_BENCH_EXPERIMENTS", 100) as usize;
    let requests = env_or("ATROPOS_BENCH_REQUESTS", 300) as usize;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join(format!("store-{trials}-{experiments}.db"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match std::env::var("ATROPOS_BENCH_ONLY").as_deref() {
            Ok("overhead") => return overhead().await,
            Ok("write") => return write_cost().await,
            _ => {}
        }
        if !db.exists() {
            eprintln!("filling {} ...", db.display());
            let partial = db.with_extension("partial");
            let _ = std::fs::remove_file(&partial);
            fill(&partial, trials, experiments).await?;
            std::fs::rename(&partial, &db)?;
        }
        let store = Store::open(&db, false).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM trials")
            .fetch_one(store.pool())
            .await?;
        let (runs,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs")
            .fetch_one(store.pool())
            .await?;
        println!(
            "store {}: {count} trials, {runs} runs, {experiments} experiments, {:.0} MiB",
            db.display(),
            (file_size(&db) + file_size(&db.with_extension("db-wal"))) as f64 / 1_048_576.0
        );
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM experiments ORDER BY id")
            .fetch_all(store.pool())
            .await?;
        let last_run: String =
            sqlx::query_scalar("SELECT uid FROM runs ORDER BY started_at DESC LIMIT 1")
                .fetch_one(store.pool())
                .await?;
        let router = app(AppState { store });
        // Warm the page cache as a running dashboard would be.
        let mut warm = |_| "/".to_owned();
        time_route(&router, "(warm-up)", &mut warm, 3).await;
        let mut o = |_| "/".to_owned();
        time_route(&router, "GET / (overview)", &mut o, requests).await;
        let mut oj = |_| "/api/overview".to_owned();
        time_route(&router, "GET /api/overview", &mut oj, requests).await;
        let mut e = |i: usize| format!("/experiments/{}", names[i * 37 % names.len()]);
        time_route(&router, "GET /experiments/{name}", &mut e, requests).await;
        let mut ej = |i: usize| format!("/api/experiments/{}", names[i * 37 % names.len()]);
        time_route(&router, "GET /api/experiments/{name}", &mut ej, requests).await;
        let mut r = |_| format!("/runs/{last_run}");
        time_route(&router, "GET /runs/{uid}", &mut r, requests / 3).await;
        let mut c = |i: usize| format!("/experiments/{}/compare", names[i * 37 % names.len()]);
        time_route(
            &router,
            "GET /experiments/{n}/compare",
            &mut c,
            requests / 3,
        )
        .await;
        overhead().await
    })
}
