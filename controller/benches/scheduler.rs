//! Benchmark of the controller's scheduler (not a test: `cargo bench` runs it).
//!
//! ```text
//! cargo bench -p atropos --bench scheduler
//! ```
//! 1. Idle: `atropos serve --experiments` holding `ATROPOS_BENCH_EXPERIMENTS` (default
//!    1,000) experiments whose schedules do not fire while it is watched (each once a year,
//!    at minutes spread over the hour, in a dozen time zones); its CPU time over
//!    `ATROPOS_BENCH_IDLE_SECS` seconds (default 30), from `/proc/PID/stat`, as a share of
//!    one core. Target ≤ 1 %.
//! 2. Firing: the same 1,000 plus `ATROPOS_BENCH_FIRING` (default 20) that fire every two
//!    seconds (a trivial target, `concurrency: forbid`) for `ATROPOS_BENCH_FIRE_SECS` seconds
//!    (default 30); each decision's lateness (decided − tick) from the store's
//!    `schedule_ticks`: p50, p99, max. Target p99 ≤ 50 ms.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const ZONES: [&str; 12] = [
    "UTC",
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Africa/Johannesburg",
    "Pacific/Auckland",
    "Asia/Singapore",
];

/// `n` experiments named `PREFIX-i` with `schedule(i)`, 100 to a file (files are at most
/// 256 KiB) in `dir`.
fn write_experiments(dir: &Path, prefix: &str, n: u64, schedule: impl Fn(u64) -> String) {
    for first in (0..n).step_by(100) {
        let path = dir.join(format!("{prefix}-{first}.yaml"));
        write_file(&path, prefix, first..n.min(first + 100), &schedule);
    }
}

fn write_file(
    path: &Path,
    prefix: &str,
    range: std::ops::Range<u64>,
    schedule: &impl Fn(u64) -> String,
) {
    let mut text = String::new();
    for i in range {
        text.push_str(&format!(
            r#"---
apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: {prefix}-{i} }}
spec:
  target:
    run: {{ command: [sh, -c, "echo ready"] }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  trials: 1
  schedule: "{}"
  timezone: {}
"#,
            schedule(i),
            ZONES[(i % 12) as usize]
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit(')').next().unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How many schedules the controller at `address` holds (from its metrics).
fn schedules_held(address: &str) -> usize {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("atropos_schedule_next_run_timestamp_seconds{"))
        .count()
}

fn serve(db: &Path, experiments: &Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atropos"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--experiments")
        .arg(experiments)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("serve did not start: {line}"))
        .to_owned();
    (child, address)
}

fn stop(mut child: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n = env_or("ATROPOS_BENCH_EXPERIMENTS", 1000);
    let idle_secs = env_or("ATROPOS_BENCH_IDLE_SECS", 30);
    let firing = env_or("ATROPOS_BENCH_FIRING", 20);
    let fire_secs = env_or("ATROPOS_BENCH_FIRE_SECS", 30);
    let dir = tempfile::tempdir().unwrap();
    // Once a year, on the 1st of a month that is not now, so nothing fires meanwhile.
    let month = (chrono_month() % 12) + 1;
    let far = month % 12 + 1;
    let quiet = dir.path().join("quiet");
    std::fs::create_dir(&quiet).unwrap();
    write_experiments(&quiet, "quiet", n, |i| {
        format!("{} {} 1 {far} *", i % 60, (i / 60) % 24)
    });
    // 1. Idle.
    let db = dir.path().join("idle.db");
    let (child, address) = serve(&db, &quiet);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        schedules_held(&address),
        n as usize,
        "every schedule is held"
    );
    let (t0, c0) = (Instant::now(), cpu_ticks(child.id()));
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (elapsed, used) = (t0.elapsed(), cpu_ticks(child.id()) - c0);
    stop(child);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let share = used as f64 / hz / elapsed.as_secs_f64() * 100.0;
    println!(
        "idle: {n} scheduled experiments, {:.0} s: CPU {:.2} s = {share:.2} % of one core (target <= 1 %)",
        elapsed.as_secs_f64(),
        used as f64 / hz
    );
    // 2. Firing.
    write_experiments(&quiet, "firing", firing, |_| "*/2 * * * * *".to_owned());
    let db = dir.path().join("firing.db");
    let (child, address) = serve(&db, &quiet);
    assert_eq!(schedules_held(&address), (n + firing) as usize);
    std::thread::sleep(Duration::from_secs(fire_secs));
    stop(child);
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT (decided_at - tick_at) * 1000 FROM schedule_ticks ORDER BY 1")
        .output()
        .expect("sqlite3 reads the store");
    let mut late: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    late.sort_by(f64::total_cmp);
    assert!(!late.is_empty(), "no tick was decided");
    let at = |q: f64| late[((q * late.len() as f64) as usize).min(late.len() - 1)];
    println!(
        "firing: {firing} of {} experiments every 2 s for {fire_secs} s: {} decisions, lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 50 ms)",
        n + firing,
        late.len(),
        at(0.5),
        at(0.99),
        late[late.len() - 1]
    );
}

/// This month, 0-based, from the system clock.
fn chrono_month() -> u64 {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // Good enough to pick a month that is not this one: 30.44 days a month since 1970.
    ((days as f64 / 30.436_875) as u64) % 12
}
