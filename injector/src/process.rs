//! Spawned processes held by pidfd: wait without reaping, reap on purpose, signal safely.
//!
//! Every process atropos starts goes through [`spawn`], which records its pid in a registry
//! under a lock. The orphan sweeper reaps stray zombie children only when they are not in the
//! registry, so it never steals the exit status of a process someone else is waiting for.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};

use crate::clock::now_ns;
use crate::record::{DeliveryOutcome, Exit};
use crate::signal::Signal;
use crate::{safety, unix};

/// atropos's children that have an owner: the targets and commands spawned here (until
/// reaped) and the guardian. Sweeps leave them alone; any other child is an orphan.
fn registry() -> MutexGuard<'static, HashSet<i32>> {
    static REGISTRY: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` while no process can be spawned or reaped through this module.
pub(crate) fn with_registry<T>(f: impl FnOnce(&HashSet<i32>) -> T) -> T {
    f(&registry())
}

fn guardian() -> Option<&'static unix::GuardTable> {
    static GUARDIAN: OnceLock<Option<unix::GuardTable>> = OnceLock::new();
    GUARDIAN
        .get_or_init(|| match unix::start_guardian() {
            Ok(table) => {
                // Atropos's own child, reaped by nobody while the run lasts: never an orphan.
                registry().insert(table.pid);
                Some(table)
            }
            Err(err) => {
                tracing::warn!(%err, "no guardian: targets may outlive atropos if it is killed");
                None
            }
        })
        .as_ref()
}

/// Starts the guardian that kills every target group if atropos dies; idempotent.
pub fn start_guardian() -> bool {
    guardian().is_some()
}

fn watch_group(pid: i32) {
    if let Some(table) = guardian() {
        table.watch(pid);
    }
}

fn forget_group(pid: i32) {
    if let Some(table) = guardian() {
        table.forget(pid);
    }
}

/// A child process held by its pidfd until it is reaped.
#[derive(Debug)]
pub struct Spawned {
    pid: i32,
    pidfd: OwnedFd,
    reaped: Option<Exit>,
    /// Its standard output, when piped.
    pub stdout: Option<ChildStdout>,
    /// Its standard error, when piped.
    pub stderr: Option<ChildStderr>,
    /// Monotonic time just before the spawn.
    pub started_ns: u64,
}

/// `program` with `args` as atropos starts every process: in `cwd`, with `env` added to
/// atropos's environment, stdin closed, stdout and stderr piped, and in a process group of
/// its own.
///
/// No `pre_exec` hook on purpose: any hook makes the standard library fork instead of
/// posix_spawn (vfork-like), which cost 2.4 ms per trial in the engine benchmark. The
/// guardian ([`unix::start_guardian`]) kills the groups if atropos dies instead of
/// PDEATHSIG.
pub fn command(program: &str, args: &[String], env: &[(String, String)], cwd: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Spawns `command` and opens its pidfd; the child is registered until reaped.
pub fn spawn(command: &mut Command) -> io::Result<Spawned> {
    let mut reg = registry();
    let started_ns = now_ns();
    let mut child: Child = unix::with_original_timers(|| command.spawn())?;
    let pid = child.id() as i32;
    reg.insert(pid);
    drop(reg);
    watch_group(pid);
    // The child is ours and unreaped, so `pid` cannot name another process yet.
    let pidfd = match unix::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            registry().remove(&pid);
            return Err(err);
        }
    };
    Ok(Spawned {
        pid,
        pidfd,
        reaped: None,
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        started_ns,
    })
}

impl Spawned {
    /// The process id (and process group id, for isolated targets).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pidfd, to wait on with poll(2): it turns readable when the process exits.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Waits up to `limit` for the process to exit (it stays a zombie until
    /// [`Spawned::reap`]); returns whether it has.
    pub fn wait_exit(&self, limit: std::time::Duration) -> bool {
        use nix::poll::{PollFd, PollFlags, ppoll};
        if self.reaped.is_some() {
            return true;
        }
        let deadline = now_ns() + u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX / 2);
        loop {
            if self.peek().is_some() {
                return true;
            }
            let left = deadline.saturating_sub(now_ns());
            if left == 0 {
                return false;
            }
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            let _ = ppoll(
                &mut fds,
                Some(nix::sys::time::TimeSpec::from_duration(
                    std::time::Duration::from_nanos(left),
                )),
                None,
            );
        }
    }

    /// The exit status if the process has exited, without reaping it.
    pub fn peek(&self) -> Option<Exit> {
        if let Some(exit) = &self.reaped {
            return Some(exit.clone());
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::PIDFd(self.pidfd.as_fd()), flags) {
            Ok(status) => Exit::from_wait(status, now_ns()),
            Err(_) => None,
        }
    }

    /// Reaps the exited process and returns its status; `None` while it still runs.
    pub fn reap(&mut self) -> Option<Exit> {
        if let Some(exit) = &self.reaped {
            return Some(exit.clone());
        }
        self.peek()?;
        // Forget the group before the reap: until then the zombie leader holds the number.
        forget_group(self.pid);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
        let status = waitid(Id::PIDFd(self.pidfd.as_fd()), flags).ok()?;
        let exit = Exit::from_wait(status, now_ns())?;
        registry().remove(&self.pid);
        self.reaped = Some(exit.clone());
        Some(exit)
    }

    /// Whether the process has been reaped by us.
    pub fn is_reaped(&self) -> bool {
        self.reaped.is_some()
    }

    /// Sends `signal` through the pidfd and says what became of it.
    pub fn signal(&self, signal: Signal) -> DeliveryOutcome {
        if self.reaped.is_some() {
            // The pidfd still refers to the dead process: the kernel answers ESRCH.
            return send_pidfd(&self.pidfd, signal);
        }
        if self.peek().is_some() {
            // Exited, not yet reaped: the kernel accepts the signal and drops it.
            let _ = send_pidfd(&self.pidfd, signal);
            return DeliveryOutcome::Zombie;
        }
        send_pidfd(&self.pidfd, signal)
    }

    /// Sends `signal` to the process group this process leads.
    pub fn signal_group(&self, signal: Signal) -> DeliveryOutcome {
        if !safety::may_signal_group(self.pid) {
            return DeliveryOutcome::Denied;
        }
        outcome_of(unix::killpg(self.pid, signal.number()))
    }

    /// Kills the whole group and the leader, then waits for the leader and reaps it.
    pub fn kill_and_reap(&mut self) -> Option<Exit> {
        if self.reaped.is_none() {
            let _ = self.signal_group(Signal::KILL);
            let _ = send_pidfd(&self.pidfd, Signal::KILL);
            self.wait_exit(std::time::Duration::from_secs(10));
        }
        self.reap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // Never leave a process or a zombie behind, also on early returns and panics.
            let _ = unix::killpg(self.pid, Signal::KILL.number());
            let _ = send_pidfd(&self.pidfd, Signal::KILL);
            let _ = waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED);
            registry().remove(&self.pid);
        }
    }
}

/// Sends `signal` through an open pidfd.
pub fn send_pidfd(pidfd: &OwnedFd, signal: Signal) -> DeliveryOutcome {
    outcome_of(unix::pidfd_send_signal(pidfd.as_raw_fd(), signal.number()))
}

fn outcome_of(result: io::Result<()>) -> DeliveryOutcome {
    match result {
        Ok(()) => DeliveryOutcome::Delivered,
        Err(err) => match Errno::from_raw(err.raw_os_error().unwrap_or(0)) {
            Errno::ESRCH => DeliveryOutcome::AlreadyFinished,
            Errno::EPERM => DeliveryOutcome::Denied,
            _ => DeliveryOutcome::Denied,
        },
    }
}

/// A process found in `/proc`, pinned by a pidfd opened after checking its start time.
#[derive(Debug)]
pub struct Found {
    /// Process id.
    pub pid: i32,
    /// The pidfd; valid for this very process, never a successor with the same number.
    pub pidfd: OwnedFd,
}

/// Opens a pidfd for `pid` and checks that it is still the process that started at
/// `starttime`; `None` when it is gone or the number was reused.
pub fn pin(pid: i32, starttime: u64) -> Option<Found> {
    let pidfd = unix::pidfd_open(pid).ok()?;
    let now = crate::procfs::ProcStat::read(pid)?;
    (now.starttime == starttime).then_some(Found { pid, pidfd })
}

/// Reaps `pid` if it is an exited child of ours; used for orphans re-parented to us.
pub(crate) fn reap_stray(pid: i32) {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG;
    let _ = waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags);
}

impl Exit {
    fn from_wait(status: WaitStatus, at_ns: u64) -> Option<Exit> {
        match status {
            WaitStatus::Exited(_, code) => Some(Exit {
                code: Some(code),
                signal: None,
                core_dumped: false,
                at_ns,
            }),
            WaitStatus::Signaled(_, sig, core) => Some(Exit {
                code: None,
                signal: Signal::from_number(sig as i32),
                core_dumped: core,
                at_ns,
            }),
            _ => None,
        }
    }
}
