//! Benchmark of attach-mode selection (not a test: `cargo bench` runs it).
//!
//! ```text
//! cargo bench -p atropos-injector --bench select
//! ```
//! Starts `ATROPOS_SELECT_PROCESSES` processes (default 5,000), each `sh -c 'read _'` with a
//! token of this run and its number in its argv, all blocked reading one pipe this
//! benchmark holds; then resolves `cmdline` selectors that match one of them and all of
//! them, `ATROPOS_SELECT_ROUNDS` times each (default 50), and prints p50 / p99 / max. The
//! processes end when the pipe is closed (end of file): the benchmark signals nothing.
//!
//! For scale it first times the floor: listing `/proc` and opening, reading and closing
//! every `/proc/PID/cmdline` on every CPU with nothing else (no matching, no allocation per
//! process), the least any selection that reads `/proc` can do; and the same without the
//! read (open and close only).

#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atropos_injector::attach::Selector;
use atropos_injector::attach::select::Guard;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let processes = env_or("ATROPOS_SELECT_PROCESSES", 5000);
    let rounds = env_or("ATROPOS_SELECT_ROUNDS", 50);
    let token = format!(
        "atropos-select-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()) << 17
    );
    let (read, mut write) = std::io::pipe().unwrap();
    let started = Instant::now();
    let mut children = Vec::with_capacity(processes);
    for i in 0..processes {
        let child = Command::new("sh")
            .args(["-c", "read _", &format!("{token}-{i}")])
            .stdin(Stdio::from(read.try_clone().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    drop(read);
    eprintln!(
        "started {processes} processes in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let all_pids = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    for (what, read) in [("open, read, close", true), ("open, close", false)] {
        let mut times: Vec<Duration> = (0..rounds).map(|_| floor(read)).collect();
        times.sort();
        println!(
            "floor: list /proc, then {what} of every /proc/PID/cmdline on every CPU, \
             {rounds} rounds: p50 {:.1} ms, p99 {:.1} ms",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
        );
    }
    let guard = Guard::default();
    let one = processes / 2;
    for (what, pattern, matching) in [
        (
            "one of them",
            format!("{}-{one}$", regex::escape(&token)),
            1,
        ),
        (
            "all of them",
            format!("{}-[0-9]+$", regex::escape(&token)),
            processes,
        ),
    ] {
        let selector = Selector {
            cmdline: Some(regex::Regex::new(&pattern).unwrap()),
            ..Selector::default()
        };
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let selection = selector.resolve(&guard).unwrap();
            times.push(t.elapsed());
            assert_eq!(selection.allowed.len(), matching, "{what}");
            assert!(selection.refused.is_empty());
        }
        times.sort();
        println!(
            "cmdline selector matching {what} ({matching}) among {all_pids} processes, \
             {rounds} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p50 <= 20 ms)",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
        );
    }
    // End of file on the pipe ends every `read`; nothing is signalled.
    write.flush().unwrap();
    drop(write);
    for mut child in children {
        child.wait().unwrap();
    }
}

/// One pass of the floor: every pid listed, each command line opened (read) and closed,
/// the pids split among the CPUs as selection splits them.
fn floor(read: bool) -> Duration {
    use std::io::Read as _;
    let t = Instant::now();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let part = pids.len().div_ceil(threads);
    std::thread::scope(|s| {
        for chunk in pids.chunks(part) {
            s.spawn(move || {
                let mut buf = [0u8; 4096];
                let mut path = String::with_capacity(32);
                for pid in chunk {
                    use std::fmt::Write as _;
                    path.clear();
                    let _ = write!(path, "/proc/{pid}/cmdline");
                    if let Ok(mut file) = std::fs::File::open(&path)
                        && read
                    {
                        let _ = file.read(&mut buf);
                    }
                }
            });
        }
    });
    t.elapsed()
}
