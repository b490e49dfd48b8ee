//! Running a short command to its end with a time limit: check commands and the like.
//!
//! The command runs in its own process group (so a timeout kills all it started) and its
//! output is kept as a bounded tail.

use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};

use crate::clock::now_ns;
use crate::output::StreamState;
use crate::process::{self, spawn};
use crate::record::Exit;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// Its exit, unless it could not be started.
    pub exit: Option<Exit>,
    /// Whether atropos killed it at the time limit.
    pub timed_out: bool,
    /// How long it ran, ns.
    pub duration_ns: u64,
    /// The last lines of stdout, then those of stderr.
    pub output: Vec<String>,
    /// Why it could not be started.
    pub error: Option<String>,
}

/// Runs `argv` in `cwd` with `env` added, for at most `limit`, on this thread.
pub fn run_command_blocking(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    limit: Duration,
    tail: usize,
) -> CommandResult {
    let started = now_ns();
    let mut result = CommandResult {
        exit: None,
        timed_out: false,
        duration_ns: 0,
        output: Vec::new(),
        error: None,
    };
    let Some(program) = argv.first() else {
        result.error = Some("the command is empty".into());
        return result;
    };
    let command = process::command(program, &argv[1..], env, cwd);
    let mut child = match spawn(&command) {
        Ok(child) => child,
        Err(err) => {
            result.error = Some(format!("failed to start `{program}`: {err}"));
            return result;
        }
    };
    let mut streams = [
        StreamState::new(child.stdout.take(), Vec::new(), Vec::new(), tail),
        StreamState::new(child.stderr.take(), Vec::new(), Vec::new(), tail),
    ];
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = started + u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX / 2);
    // Read until the output ends (the command and anything holding its pipes is gone),
    // or the limit passes.
    loop {
        let now = now_ns();
        if now >= deadline {
            result.timed_out = child.peek().is_none();
            break;
        }
        let open: Vec<usize> = (0..2).filter(|i| streams[*i].is_open()).collect();
        if open.is_empty() {
            break;
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|i| streams[*i].fd())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let timeout =
                nix::sys::time::TimeSpec::from_duration(Duration::from_nanos(deadline - now));
            if ppoll(&mut fds, Some(timeout), None).is_err() {
                continue;
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        for (i, hit) in open.into_iter().zip(ready) {
            if hit {
                streams[i].read_available(&mut buf);
            }
        }
    }
    result.exit = if result.timed_out {
        child.kill_and_reap()
    } else if child.wait_exit(Duration::from_nanos(deadline.saturating_sub(now_ns()))) {
        child.reap()
    } else {
        result.timed_out = true;
        child.kill_and_reap()
    };
    // What the command left running is nobody's trial: end it with the command.
    if let Some(lane) = child.lane() {
        lane.kill_all(Duration::from_secs(2));
    }
    result.output = streams
        .iter()
        .flat_map(|s| s.tail.iter().map(|l| l.text.clone()))
        .collect();
    result.duration_ns = now_ns() - started;
    result
}
