//! Peak memory of `atropos run` against the number of trials: it must not grow with it.
//!
//! Runs the built `atropos` (this bench's profile: optimised) on the cheapest trial there is
//! (`tests/fixtures/store/trivial.yaml`: `sh -c 'exit 0'`, hit after it exited) with
//! `--trials` 10,000 and 200,000 (ATROPOS_RSS_TRIALS=10000,200000 to choose), with the store
//! and without it (`--no-db`), always writing the JSON and JUnit reports, and prints each
//! run's peak RSS and how the largest compares with the smallest run's (target: within
//! 10 %).
//!
//! Peak RSS is `ru_maxrss` of `getrusage(RUSAGE_CHILDREN)`, which keeps the largest over
//! every child ever waited for; so each measurement runs in a fresh copy of this binary
//! (`ATROPOS_RSS_MEASURE=1`) that spawns one `atropos`, waits for it and prints its figure.
//! The targets that atropos spawns are far smaller than atropos itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use nix::sys::resource::{UsageWho, getrusage};

const MEASURE: &str = "ATROPOS_RSS_MEASURE";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/store/trivial.yaml")
}

/// In the measuring copy: runs `atropos` with these arguments, prints `KIB SECONDS CODE`.
fn measure(args: &[String]) -> anyhow::Result<()> {
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_atropos"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    println!(
        "{} {:.1} {}",
        usage.max_rss(),
        start.elapsed().as_secs_f64(),
        status.code().unwrap_or(-1)
    );
    Ok(())
}

/// Peak RSS (KiB) of `atropos run --dry-run` of `trials` trials: what the plan alone takes.
fn plan_peak(trials: u64) -> anyhow::Result<u64> {
    let out = Command::new(std::env::current_exe()?)
        .env(MEASURE, "1")
        .args(["run", &fixture().display().to_string(), "--dry-run"])
        .args(["--trials", &trials.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib = text.split_whitespace().next().unwrap_or_default();
    Ok(kib.parse()?)
}

/// Peak RSS (KiB) and wall seconds of one `atropos run` of `trials` trials.
fn peak(trials: u64, db: bool, dir: &Path) -> anyhow::Result<(u64, f64)> {
    let mut args: Vec<String> = vec![
        "run".into(),
        fixture().display().to_string(),
        "--trials".into(),
        trials.to_string(),
        "--jobs".into(),
        "2".into(),
        "--json".into(),
        dir.join("report.json").display().to_string(),
        "--junit".into(),
        dir.join("report.xml").display().to_string(),
    ];
    if db {
        args.extend([
            "--db".into(),
            dir.join(format!("rss-{trials}.db")).display().to_string(),
        ]);
    } else {
        args.push("--no-db".into());
    }
    let out = Command::new(std::env::current_exe()?)
        .env(MEASURE, "1")
        .args(&args)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    anyhow::ensure!(fields.len() == 3, "the measuring copy said {text:?}");
    anyhow::ensure!(
        fields[2] == "0",
        "atropos exited {} ({trials} trials): every trivial trial passes",
        fields[2]
    );
    Ok((fields[0].parse()?, fields[1].parse()?))
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os(MEASURE).is_some() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return measure(&args);
    }
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<u64> = std::env::var("ATROPOS_RSS_TRIALS")
        .unwrap_or_else(|_| "10000,200000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    println!(
        "peak RSS of `atropos run` on {} trials of `sh -c 'exit 0'`, --jobs 2, with JSON and JUnit reports",
        sizes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    // The plan (every planned trial, built before the first one runs) is measured apart:
    // its size is the planner's, not the run's.
    let plans: Vec<u64> = sizes
        .iter()
        .map(|&n| plan_peak(n))
        .collect::<Result<_, _>>()?;
    for (n, kib) in sizes.iter().zip(&plans) {
        println!(
            "  {n:>7} trials, --dry-run (the plan alone): {:>7.1} MiB",
            mib(*kib)
        );
    }
    let modes: Vec<bool> = match std::env::var("ATROPOS_RSS_DB").as_deref() {
        Ok("no") => vec![false],
        Ok("yes") => vec![true],
        _ => vec![false, true],
    };
    for db in modes {
        let mut peaks = Vec::new();
        for (&n, plan) in sizes.iter().zip(&plans) {
            let (kib, secs) = peak(n, db, dir.path())?;
            println!(
                "  {:>7} trials {:8}: {:>7.1} MiB in {secs:.1} s ({:.0} trials/s); beyond the plan {:+.1} MiB",
                n,
                if db { "--db" } else { "--no-db" },
                mib(kib),
                n as f64 / secs,
                mib(kib) - mib(*plan),
            );
            peaks.push(kib);
        }
        let (lo, hi) = (
            peaks.iter().copied().min().unwrap_or(0),
            peaks.iter().copied().max().unwrap_or(0),
        );
        let growth = 100.0 * (hi as f64 - lo as f64) / (lo.max(1) as f64);
        println!(
            "  {}: largest peak is {growth:+.1} % over the smallest (target ≤ 10 %): {}",
            if db {
                "with the store"
            } else {
                "without the store"
            },
            if growth <= 10.0 { "ok" } else { "TOO MUCH" }
        );
    }
    Ok(())
}
