//! Running a short command to its end with a time limit: check commands and the like.
//!
//! The command runs in its own process group (so a timeout kills all it started) and its
//! output is kept as a bounded tail.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::clock::now_ns;
use crate::process::spawn;
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
    /// The last lines of stdout and stderr, interleaved in read order.
    pub output: Vec<String>,
    /// Why it could not be started.
    pub error: Option<String>,
}

/// Runs `argv` in `cwd` with `env` added, for at most `limit`.
pub async fn run_command(
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
    let mut command = Command::new(program);
    command
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::unix::isolate(&mut command);
    let mut child = match spawn(&mut command) {
        Ok(child) => child,
        Err(err) => {
            result.error = Some(format!("failed to start `{program}`: {err}"));
            return result;
        }
    };
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for fd in [
        child.stdout.take().map(std::os::fd::OwnedFd::from),
        child.stderr.take().map(std::os::fd::OwnedFd::from),
    ]
    .into_iter()
    .flatten()
    {
        let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
            continue;
        };
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    drop(lines_tx);
    let exit = match tokio::time::timeout(limit, child.exited()).await {
        Ok(()) => child.reap(),
        Err(_) => {
            result.timed_out = true;
            child.kill_and_reap().await
        }
    };
    // Output still buffered in the pipes arrives right after the exit.
    let drain = async {
        while let Some(line) = lines_rx.recv().await {
            result.output.push(line);
            if result.output.len() > tail {
                result.output.remove(0);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
    result.exit = exit;
    result.duration_ns = now_ns() - started;
    result
}
