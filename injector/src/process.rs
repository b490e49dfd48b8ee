//! Spawned processes held by pidfd: wait without reaping, reap on purpose, signal safely.
//!
//! Every process atropos starts goes through [`spawn`], which records its pid in a registry
//! under a lock. The orphan sweeper reaps stray zombie children only when they are not in the
//! registry, so it never steals the exit status of a process someone else is waiting for.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};

use crate::cgroup::{self, Lane};
use crate::clock::now_ns;
use crate::record::{DeliveryOutcome, Exit};
use crate::signal::Signal;
use crate::{procfs, safety, unix};

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

/// Spawns a helper of atropos's own (`journalctl` for a marker) registered while it
/// lives, so that no sweep reaps it behind its owner's back (the owner then signals and
/// waits for a pid that is still its child); [`forget_helper`] once reaped.
pub(crate) fn spawn_helper(command: &mut std::process::Command) -> io::Result<std::process::Child> {
    let mut registered = registry();
    let child = command.spawn()?;
    registered.insert(i32::try_from(child.id()).unwrap_or(-1));
    Ok(child)
}

/// Forgets a helper of [`spawn_helper`] once its owner reaped it.
pub(crate) fn forget_helper(pid: u32) {
    registry().remove(&i32::try_from(pid).unwrap_or(-1));
}

fn guardian() -> Option<&'static unix::GuardTable> {
    static GUARDIAN: OnceLock<Option<unix::GuardTable>> = OnceLock::new();
    GUARDIAN
        .get_or_init(|| {
            let cgroup = cgroup::run().and_then(|run| {
                Some(unix::GuardCgroup {
                    kill: run.kill.as_raw_fd(),
                    dir: run.dir_fd.as_raw_fd(),
                    parent: run.parent_fd.as_raw_fd(),
                    name: std::ffi::CString::new(run.name.clone()).ok()?,
                })
            });
            let mark = std::ffi::CString::new(format!("{OWNER_VAR}={}", owner_mark()))
                .expect("digits and a dot");
            match unix::start_guardian(cgroup, mark) {
                Ok(table) => {
                    // Atropos's own child, reaped by nobody while the run lasts: never an orphan.
                    registry().insert(table.pid);
                    Some(table)
                }
                Err(err) => {
                    tracing::warn!(%err, "no guardian: targets may outlive atropos if it is killed");
                    None
                }
            }
        })
        .as_ref()
}

/// The variable that every process atropos starts inherits, naming this atropos
/// (`PIDNS.PID.STARTTIME`): the guardian's last resort to find what escaped cgroup and group.
pub const OWNER_VAR: &str = "ATROPOS_OWNER";

/// This process as [`OWNER_VAR`] names it.
pub fn owner_mark() -> &'static str {
    procfs::me_mark()
}

/// Starts the guardian that kills every target if atropos dies; idempotent.
pub fn start_guardian() -> bool {
    guardian().is_some()
}

/// The end of this process's use of the injector: the guardian sweeps one last time, removes
/// the run's cgroups and exits, and is reaped, so that nothing of atropos outlives it, not
/// even a zombie.
pub fn shutdown() {
    match guardian() {
        Some(table) => {
            table.shutdown();
            registry().remove(&table.pid);
        }
        None => cgroup::remove_run(),
    }
}

/// A child process held by its pidfd until it is reaped.
#[derive(Debug)]
pub struct Spawned {
    pid: i32,
    pidfd: OwnedFd,
    reaped: Option<Exit>,
    /// Its slot in the guardian's table, held until just before the reap.
    guard: Option<unix::GuardSlot>,
    /// The lane cgroup it was started in, if any.
    lane: Option<Arc<Lane>>,
    /// Its standard output, when piped.
    pub stdout: Option<OwnedFd>,
    /// Its standard error, when piped.
    pub stderr: Option<OwnedFd>,
    /// Monotonic time just before the spawn.
    pub started_ns: u64,
}

/// A process to start: `program` with `args` in `cwd`, with `env` added to atropos's
/// environment, stdin from `/dev/null`, stdout and stderr piped, in a process group of its
/// own and in the calling thread's lane cgroup, every signal at its default action and none
/// blocked.
#[derive(Debug, Clone)]
pub struct Launch {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

/// A [`Launch`] of `program` with `args`.
pub fn command(program: &str, args: &[String], env: &[(String, String)], cwd: &Path) -> Launch {
    Launch {
        program: program.to_owned(),
        args: args.to_vec(),
        env: env.to_vec(),
        cwd: cwd.to_owned(),
    }
}

impl Launch {
    /// Adds (or replaces) one environment variable.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The program as it will be executed: a path with a slash as given (relative to the
    /// working directory), a bare name looked up on the target's `PATH`.
    pub fn resolve(&self) -> io::Result<PathBuf> {
        let path_var = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| std::ffi::OsString::from(v))
            .or_else(|| std::env::var_os("PATH"));
        resolve_program(&self.program, path_var.as_deref(), &self.cwd).map_err(|why| {
            let kind = match why {
                Unstartable::Missing(_) | Unstartable::NotOnPath { .. } => io::ErrorKind::NotFound,
                Unstartable::Empty => io::ErrorKind::InvalidInput,
                _ => io::ErrorKind::PermissionDenied,
            };
            io::Error::new(kind, why.to_string())
        })
    }
}

/// Why a program cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unstartable {
    /// No program was given.
    #[error("the command is empty")]
    Empty,
    /// A path that does not exist.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// A path that is a folder or another non-file.
    #[error("{} is not a file", .0.display())]
    NotAFile(PathBuf),
    /// A file without an execute bit.
    #[error("{} is not executable", .0.display())]
    NotExecutable(PathBuf),
    /// A bare name no `PATH` folder holds as an executable file.
    #[error("`{program}` was not found on PATH")]
    NotOnPath {
        /// The name looked for.
        program: String,
        /// The first match on `PATH` that exists but cannot be executed, if any.
        not_executable: Option<PathBuf>,
    },
}

/// The `PATH` a process gets when none is set.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Finds `program` the way `execvp` would, for a target started in `cwd` with `path_var` as
/// its `PATH`: a name with a slash is a path (relative ones from `cwd`), a bare name is
/// looked up on `PATH` (relative and empty entries from `cwd`). The spawn and the
/// pre-flight check of `atropos run` both use this, so they cannot disagree.
pub fn resolve_program(
    program: &str,
    path_var: Option<&std::ffi::OsStr>,
    cwd: &Path,
) -> Result<PathBuf, Unstartable> {
    use std::os::unix::fs::PermissionsExt;
    let check = |path: PathBuf| match std::fs::metadata(&path) {
        Err(_) => Err(Unstartable::Missing(path)),
        Ok(m) if !m.is_file() => Err(Unstartable::NotAFile(path)),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(Unstartable::NotExecutable(path)),
        Ok(_) => Ok(path),
    };
    if program.is_empty() {
        return Err(Unstartable::Empty);
    }
    if program.contains('/') {
        return check(cwd.join(program));
    }
    let path_var = path_var.unwrap_or_else(|| std::ffi::OsStr::new(DEFAULT_PATH));
    let mut not_executable = None;
    for dir in std::env::split_paths(path_var) {
        match check(cwd.join(dir).join(program)) {
            Ok(path) => return Ok(path),
            Err(Unstartable::Missing(_)) => {}
            Err(Unstartable::NotAFile(p) | Unstartable::NotExecutable(p)) => {
                not_executable = not_executable.or(Some(p));
            }
            Err(other) => return Err(other),
        }
    }
    Err(Unstartable::NotOnPath {
        program: program.to_owned(),
        not_executable,
    })
}

fn cstring(text: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(text).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument or variable contains a NUL byte",
        )
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Spawns `launch` with its pidfd; the child is registered, and watched by the guardian,
/// until reaped.
pub fn spawn(launch: &Launch) -> io::Result<Spawned> {
    use std::os::unix::ffi::OsStrExt;
    let path = cstring(launch.resolve()?.as_os_str().as_bytes())?;
    let cwd = cstring(launch.cwd.as_os_str().as_bytes())?;
    let mut argv = Vec::with_capacity(launch.args.len() + 1);
    argv.push(cstring(launch.program.as_bytes())?);
    for arg in &launch.args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let mut env: Vec<CString> = Vec::new();
    for (key, value) in std::env::vars_os() {
        if launch
            .env
            .iter()
            .any(|(k, _)| k.as_bytes() == key.as_bytes())
        {
            continue;
        }
        let mut entry = key.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        env.push(cstring(entry)?);
    }
    for (key, value) in &launch.env {
        env.push(cstring(format!("{key}={value}"))?);
    }
    env.push(cstring(format!("{OWNER_VAR}={}", owner_mark()))?);
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let null = std::fs::File::open("/dev/null")?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let lane = Lane::current();
    let table = guardian();
    let spec = unix::SpawnSpec {
        path: &path,
        argv: &argv_ptrs,
        envp: &env_ptrs,
        cwd: &cwd,
        stdio: [
            null.as_raw_fd(),
            out_write.as_raw_fd(),
            err_write.as_raw_fd(),
        ],
        cgroup_procs: lane.as_ref().map(|l| l.procs.as_raw_fd()),
    };
    let mut reg = registry();
    let started_ns = now_ns();
    let (pid, pidfd) = unix::spawn(&spec)?;
    reg.insert(pid);
    drop(reg);
    let mut spawned = Spawned {
        pid,
        pidfd,
        reaped: None,
        guard: None,
        lane,
        stdout: Some(out_read),
        stderr: Some(err_read),
        started_ns,
    };
    // In a lane, the guardian's `cgroup.kill` reaches everything the group holds: the table
    // (and the /proc read for the leader's start time) is for the fallback only.
    if spawned.lane.is_none()
        && let Some(table) = table
    {
        let start = procfs::ProcStat::read(pid).map_or(0, |s| s.starttime);
        match table.watch(pid, start) {
            Ok(slot) => spawned.guard = Some(slot),
            // Dropping `spawned` kills and reaps the child.
            Err(full) => return Err(io::Error::other(full)),
        }
    }
    Ok(spawned)
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
        self.guard = None;
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
    ///
    /// Only while the leader is ours and unreaped: from the reap on, the number may name
    /// another process, so a group step then reports `already_finished` and signals nothing.
    pub fn signal_group(&self, signal: Signal) -> DeliveryOutcome {
        if self.reaped.is_some() {
            return DeliveryOutcome::AlreadyFinished;
        }
        if !safety::may_signal_group(self.pid) {
            return DeliveryOutcome::Denied;
        }
        outcome_of(unix::killpg(self.pid, signal.number()))
    }

    /// The lane cgroup the process was started in, if any.
    pub fn lane(&self) -> Option<&Arc<Lane>> {
        self.lane.as_ref()
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
            // Unreaped, so the group number is still this leader's.
            let _ = unix::killpg(self.pid, Signal::KILL.number());
            let _ = send_pidfd(&self.pidfd, Signal::KILL);
            let _ = waitid(
                Id::PIDFd(self.pidfd.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
            );
            self.guard = None;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn programs_resolve_as_execvp_would_and_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = bin.join("plain");
        std::fs::write(&plain, "").unwrap();
        let path = std::ffi::OsString::from("/nonexistent:bin");
        let cases: Vec<(&str, Result<PathBuf, Unstartable>)> = vec![
            ("tool", Ok(dir.path().join("bin").join("tool"))),
            ("bin/tool", Ok(dir.path().join("bin/tool"))),
            (
                "plain",
                Err(Unstartable::NotOnPath {
                    program: "plain".into(),
                    not_executable: Some(dir.path().join("bin").join("plain")),
                }),
            ),
            (
                "bin/plain",
                Err(Unstartable::NotExecutable(dir.path().join("bin/plain"))),
            ),
            (
                "bin",
                Err(Unstartable::NotOnPath {
                    program: "bin".into(),
                    not_executable: None,
                }),
            ),
            (
                "./bin",
                Err(Unstartable::NotAFile(dir.path().join("./bin"))),
            ),
            (
                "./gone",
                Err(Unstartable::Missing(dir.path().join("./gone"))),
            ),
            ("", Err(Unstartable::Empty)),
        ];
        assert_eq!(cases.len(), 8);
        for (program, want) in cases {
            assert_eq!(
                resolve_program(program, Some(&path), dir.path()),
                want,
                "case `{program}`"
            );
        }
        // Without a PATH, the default one: `sh` is in /usr/bin or /bin on any Debian.
        assert!(resolve_program("sh", None, dir.path()).is_ok());
    }
}
