//! Every system call that the standard library and nix do not wrap, in one place.
//!
//! nix has no pidfd support yet, so `pidfd_open` and `pidfd_send_signal` are called through
//! `libc::syscall` here; the rest of the crate sees safe functions taking and returning owned
//! file descriptors.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Opens a pidfd for `pid` (`pidfd_open(2)`).
///
/// Fails with `ESRCH` when no such process exists (a zombie still has one).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: the syscall takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd` (`pidfd_send_signal(2)`).
pub fn pidfd_send_signal(pidfd: RawFd, signal: i32) -> io::Result<()> {
    // SAFETY: a null siginfo asks the kernel to fill it in as kill(2) would.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants, so a grandchild whose parent
/// died is re-parented to us (and so stays visible) instead of to PID 1.
pub fn become_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many target groups the guardian can watch at once.
pub const GUARD_SLOTS: usize = 4096;

/// One slot of the guardian's table: a group leader atropos holds unreaped, pinned by the
/// leader's start time so that the guardian never signals a number that was reused.
#[repr(C)]
struct Slot {
    /// The group (its leader's pid); 0 when free, -1 while being filled.
    pgid: std::sync::atomic::AtomicI32,
    /// The leader's start time, in clock ticks since boot.
    start: std::sync::atomic::AtomicU64,
}

/// The table of live target groups, shared with the guardian process.
pub struct GuardTable {
    /// The guardian's pid: a child of atropos that no trial owns.
    pub pid: i32,
    slots: &'static [Slot],
    pipe: std::sync::Mutex<Option<OwnedFd>>,
}

/// The guardian's table is full: more live targets than [`GUARD_SLOTS`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the guardian's table is full ({0} live targets); a target beyond that could outlive atropos, so it is not started"
)]
pub struct TableFull(pub usize);

/// A group in the guardian's table, for as long as this guard lives; drop it before the
/// leader is reaped, since the number is free for reuse from then on.
#[derive(Debug)]
pub struct GuardSlot {
    slot: &'static Slot,
}

impl Drop for GuardSlot {
    fn drop(&mut self) {
        self.slot
            .pgid
            .store(0, std::sync::atomic::Ordering::Release);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("pgid", &self.pgid)
            .field("start", &self.start)
            .finish()
    }
}

impl GuardTable {
    /// Records `pgid`, whose leader started at `start`, as a live target group.
    pub fn watch(&self, pgid: i32, start: u64) -> Result<GuardSlot, TableFull> {
        use std::sync::atomic::Ordering;
        for slot in self.slots {
            if slot
                .pgid
                .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.start.store(start, Ordering::Release);
                slot.pgid.store(pgid, Ordering::Release);
                return Ok(GuardSlot { slot });
            }
        }
        Err(TableFull(self.slots.len()))
    }

    /// Closes the pipe, so that the guardian does its last sweep and exits, and reaps it.
    pub fn shutdown(&self) {
        let pipe = self.pipe.lock().unwrap_or_else(|p| p.into_inner()).take();
        if pipe.is_none() {
            return;
        }
        drop(pipe);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

/// What the guardian kills by cgroup: descriptors opened before the fork.
pub struct GuardCgroup {
    /// The run cgroup's `cgroup.kill`.
    pub kill: RawFd,
    /// The run cgroup's directory.
    pub dir: RawFd,
    /// Its parent directory.
    pub parent: RawFd,
    /// Its name in the parent.
    pub name: std::ffi::CString,
}

/// Writes `/proc/PID` and `suffix` into `path`, NUL-terminated, without allocating.
fn proc_path(pid: i32, suffix: &[u8], path: &mut [u8; 32]) {
    path.fill(0);
    path[..6].copy_from_slice(b"/proc/");
    let mut digits = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 6;
    for i in (0..len).rev() {
        path[at] = digits[i];
        at += 1;
    }
    let end = (at + suffix.len()).min(path.len() - 1);
    path[at..end].copy_from_slice(&suffix[..end - at]);
}

/// Kills every process whose environment holds `mark` (`ATROPOS_OWNER=...`, which every
/// target of this atropos inherits) by pidfd, scanning `/proc` until a scan finds none (or
/// five times): the guardian's sweep where cgroups do not reach, with system calls only.
///
/// # Safety
/// Async-signal-safe; callable after fork.
unsafe fn kill_by_mark(mark: &[u8]) {
    let me = std::process::id() as i32;
    // SAFETY: system calls on descriptors opened here and stack buffers.
    unsafe {
        for _round in 0..5 {
            let dir = libc::open(
                c"/proc".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if dir < 0 {
                return;
            }
            let mut killed = 0;
            let mut names = [0u8; 16384];
            loop {
                let got = libc::syscall(libc::SYS_getdents64, dir, names.as_mut_ptr(), names.len());
                if got <= 0 {
                    break;
                }
                let mut at = 0usize;
                while at + 19 < got as usize {
                    let reclen = u16::from_ne_bytes([names[at + 16], names[at + 17]]) as usize;
                    let mut pid: i32 = 0;
                    let mut digits = 0;
                    for b in &names[at + 19..(at + reclen).min(got as usize)] {
                        if *b == 0 {
                            break;
                        }
                        if !b.is_ascii_digit() || digits > 9 {
                            digits = 0;
                            break;
                        }
                        pid = pid * 10 + i32::from(b - b'0');
                        digits += 1;
                    }
                    if digits > 0 && pid > 1 && pid != me && environ_has(pid, mark) {
                        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as RawFd;
                        if fd >= 0 {
                            libc::syscall(
                                libc::SYS_pidfd_send_signal,
                                fd,
                                libc::SIGKILL,
                                std::ptr::null::<libc::siginfo_t>(),
                                0,
                            );
                            libc::close(fd);
                            killed += 1;
                        }
                    }
                    if reclen == 0 {
                        break;
                    }
                    at += reclen;
                }
            }
            libc::close(dir);
            if killed == 0 {
                return;
            }
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 5_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}

/// Whether `/proc/PID/environ` holds the entry `mark` (whole, between NULs); reads the first
/// 64 KiB.
///
/// # Safety
/// Async-signal-safe; callable after fork.
unsafe fn environ_has(pid: i32, mark: &[u8]) -> bool {
    let mut path = [0u8; 32];
    proc_path(pid, b"/environ", &mut path);
    // SAFETY: a NUL-terminated path and a stack buffer.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 65536];
        let mut len = 0usize;
        while len < buf.len() {
            let got = libc::read(fd, buf.as_mut_ptr().add(len).cast(), buf.len() - len);
            if got <= 0 {
                break;
            }
            len += got as usize;
        }
        libc::close(fd);
        buf[..len].split(|b| *b == 0).any(|entry| entry == mark)
    }
}

/// Reads the start time (field 22) of `/proc/PID/stat` with system calls only: the guardian
/// is a fork of a threaded process and may not allocate. `Err(())` when there is no such
/// process.
///
/// # Safety
/// Async-signal-safe; callable after fork.
unsafe fn raw_starttime(pid: i32) -> Result<Option<u64>, ()> {
    let mut path = [0u8; 32];
    proc_path(pid, b"/stat", &mut path);
    // SAFETY: `path` is NUL-terminated (zeros after the copy); buffers are on the stack.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(());
        }
        let mut buf = [0u8; 1024];
        let got = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        if got <= 0 {
            return Err(());
        }
        let text = &buf[..got as usize];
        let Some(close) = text.iter().rposition(|b| *b == b')') else {
            return Ok(None);
        };
        // Fields after comm: state is field 3, start time is field 22.
        let mut field = 2;
        let mut value: u64 = 0;
        let mut in_field = false;
        for b in &text[close + 1..] {
            if *b == b' ' {
                if in_field && field == 22 {
                    return Ok(Some(value));
                }
                in_field = false;
                continue;
            }
            if !in_field {
                in_field = true;
                field += 1;
                value = 0;
            }
            if field == 22 {
                value = value * 10 + u64::from(b.wrapping_sub(b'0'));
            }
        }
        Ok(None)
    }
}

/// Whether the guardian may SIGKILL group `pgid`, whose leader started at `start`: yes while
/// that very leader exists (alive or a zombie); no when another process holds the number;
/// yes when no process holds it, since a group id is its leader's pid and the number cannot
/// be handed out again while a member of the group lives.
///
/// # Safety
/// Async-signal-safe; callable after fork.
pub unsafe fn guardian_may_kill(pgid: i32, start: u64) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: forwarded.
    match unsafe { raw_starttime(pgid) } {
        Ok(Some(now)) => now == start,
        Ok(None) => false,
        Err(()) => true,
    }
}

/// Starts the guardian: a forked child that shares a table of target process groups with
/// atropos (anonymous shared memory, so recording a group costs two atomic stores and no
/// wake-up) and holds the read end of a pipe that atropos never writes. When atropos dies
/// for any reason, SIGKILL included, or calls [`GuardTable::shutdown`], the pipe reaches
/// end-of-file and the guardian kills the run cgroup (`cgroup.kill`), then every group still
/// in the table whose leader is still the one recorded, then every process whose environment
/// holds `mark` (the owner entry every target inherits), removes the run's cgroups, and
/// exits.
///
/// Call once, early; the child runs only async-signal-safe calls.
pub fn start_guardian(
    cgroup: Option<GuardCgroup>,
    mark: std::ffi::CString,
) -> io::Result<GuardTable> {
    start_guardian_with(GUARD_SLOTS, cgroup, Some(mark))
}

fn start_guardian_with(
    count: usize,
    cgroup: Option<GuardCgroup>,
    mark: Option<std::ffi::CString>,
) -> io::Result<GuardTable> {
    let bytes = count * std::mem::size_of::<Slot>();
    // SAFETY: a fresh anonymous shared mapping; checked for failure below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is zeroed, aligned, `bytes` long and never unmapped; Slot is
    // repr(C) of atomics, which have the layout of their integers.
    let slots: &'static [Slot] = unsafe { std::slice::from_raw_parts(map.cast::<Slot>(), count) };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the child below calls only async-signal-safe functions (close, close_range,
    // signal, read, write, open, kill, getdents64, unlinkat, nanosleep, _exit) and atomic
    // loads, as POSIX requires after fork in a threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe { guardian_child(fds[0], slots, cgroup.as_ref(), mark.as_deref()) }
    }
    // SAFETY: both descriptors were just created and are owned here.
    unsafe {
        libc::close(fds[0]);
        Ok(GuardTable {
            pid,
            slots,
            pipe: std::sync::Mutex::new(Some(OwnedFd::from_raw_fd(fds[1]))),
        })
    }
}

/// The guardian's whole life.
///
/// # Safety
/// Only after fork; async-signal-safe calls only.
unsafe fn guardian_child(
    pipe: RawFd,
    slots: &[Slot],
    cgroup: Option<&GuardCgroup>,
    mark: Option<&std::ffi::CStr>,
) -> ! {
    // SAFETY: system calls on integers and stack buffers only.
    unsafe {
        // Hold nothing of atropos's (no pipes of targets, no database file) but the pipe and
        // the cgroup's descriptors.
        let mut keep = [pipe, -1, -1, -1];
        if let Some(cg) = cgroup {
            keep[1] = cg.kill;
            keep[2] = cg.dir;
            keep[3] = cg.parent;
        }
        keep.sort_unstable();
        let mut from: libc::c_uint = 3;
        for fd in keep {
            let Ok(fd) = libc::c_uint::try_from(fd) else {
                continue;
            };
            if fd > from {
                libc::syscall(libc::SYS_close_range, from, fd - 1, 0);
            }
            from = from.max(fd + 1);
        }
        libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0);
        // Ctrl-C and a closing terminal hit the whole group; the guardian must outlive them.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(pipe, (&raw mut byte).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        if let Some(cg) = cgroup {
            libc::write(cg.kill, b"1".as_ptr().cast(), 1);
        }
        for slot in slots {
            let pgid = slot.pgid.load(std::sync::atomic::Ordering::Acquire);
            let start = slot.start.load(std::sync::atomic::Ordering::Acquire);
            if guardian_may_kill(pgid, start) {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        // What left both the cgroup and the groups (a root target can move itself out of
        // its cgroup) still carries this atropos's mark in its environment.
        if let Some(mark) = mark {
            kill_by_mark(mark.to_bytes());
        }
        if let Some(cg) = cgroup {
            remove_cgroups(cg);
        }
        libc::_exit(0);
    }
}

/// Waits (at most 2 s) for the killed run cgroup to empty, then removes its sub-cgroups and
/// itself.
///
/// # Safety
/// Only after fork; async-signal-safe calls only.
unsafe fn remove_cgroups(cg: &GuardCgroup) {
    // SAFETY: system calls on the guardian's own descriptors and stack buffers.
    unsafe {
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        for _ in 0..2000 {
            let mut names = [0u8; 8192];
            libc::lseek(cg.dir, 0, libc::SEEK_SET);
            let got = libc::syscall(
                libc::SYS_getdents64,
                cg.dir,
                names.as_mut_ptr(),
                names.len(),
            );
            if got <= 0 {
                break;
            }
            let mut busy = false;
            let mut at = 0usize;
            while at + 19 < got as usize {
                // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
                let reclen = u16::from_ne_bytes([names[at + 16], names[at + 17]]) as usize;
                let kind = names[at + 18];
                let name = names.as_ptr().add(at + 19).cast::<libc::c_char>();
                if kind == libc::DT_DIR && *name != b'.' as libc::c_char {
                    let gone = libc::unlinkat(cg.dir, name, libc::AT_REMOVEDIR);
                    if gone < 0 && *libc::__errno_location() == libc::EBUSY {
                        busy = true;
                    }
                }
                if reclen == 0 {
                    break;
                }
                at += reclen;
            }
            if !busy && libc::unlinkat(cg.parent, cg.name.as_ptr(), libc::AT_REMOVEDIR) == 0 {
                break;
            }
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}

/// Sends `signal` to every member of process group `pgid` (`killpg(2)`).
///
/// Callers pass only the group of a target they spawned and have not reaped: while the leader
/// is unreaped, or any member alive, the number cannot be reused.
pub fn killpg(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    // SAFETY: kill with a negative pid signals the group; no memory is involved.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What [`spawn`] needs, prepared in the parent: the child may not allocate.
pub struct SpawnSpec<'a> {
    /// The program, already found on `PATH`.
    pub path: &'a std::ffi::CStr,
    /// argv, null-terminated.
    pub argv: &'a [*const libc::c_char],
    /// envp, null-terminated.
    pub envp: &'a [*const libc::c_char],
    /// The working directory.
    pub cwd: &'a std::ffi::CStr,
    /// Descriptors for the child's stdin, stdout and stderr.
    pub stdio: [RawFd; 3],
    /// The lane's `cgroup.procs`, open for writing: the child joins it before `exec`.
    pub cgroup_procs: Option<RawFd>,
}

/// Where the child failed, written by the child into the parent's memory (`CLONE_VM`).
#[repr(C)]
struct ChildFailure {
    stage: std::sync::atomic::AtomicI32,
    errno: std::sync::atomic::AtomicI32,
}

struct ChildArgs<'a> {
    spec: &'a SpawnSpec<'a>,
    slack: libc::c_ulong,
    failure: &'a ChildFailure,
}

/// The highest signal number; `_NSIG - 1` on Linux.
const MAX_SIGNAL: libc::c_int = 64;

/// `struct sigaction` as the kernel takes it (`rt_sigaction(2)`): glibc's wrapper refuses the
/// two signals it keeps for itself (32 and 33), and those must be reset too.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

fn raw_sigmask(how: libc::c_int, set: &u64, old: Option<&mut u64>) {
    let old = old.map_or(std::ptr::null_mut(), |o| o as *mut u64);
    // SAFETY: pointers to live 8-byte sets, the kernel's sigset size on Linux.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            set as *const u64,
            old,
            8usize,
        );
    }
}

const STAGE_CGROUP: i32 = 1;
const STAGE_STDIO: i32 = 2;
const STAGE_CWD: i32 = 3;
const STAGE_EXEC: i32 = 4;

/// The child side of [`spawn`]: runs on its own stack in the parent's memory while the
/// parent waits (`CLONE_VM | CLONE_VFORK`), so only raw system calls, no allocation, no
/// panics, no locks.
extern "C" fn spawn_child(arg: *mut libc::c_void) -> libc::c_int {
    use std::sync::atomic::Ordering::Relaxed;
    // SAFETY: `arg` points at the parent's `ChildArgs`, alive until this child execs or
    // exits (the parent is suspended until then).
    let args = unsafe { &*(arg as *const ChildArgs<'_>) };
    let spec = args.spec;
    let fail = |stage: i32| -> ! {
        // SAFETY: errno is this (shared) thread's; _exit ends only the child.
        unsafe {
            args.failure.errno.store(*libc::__errno_location(), Relaxed);
            args.failure.stage.store(stage, Relaxed);
            libc::_exit(127)
        }
    };
    // SAFETY: every call below is a system call on integers or on memory the parent
    // prepared and keeps alive; none allocates.
    unsafe {
        // Every signal back to its default action: a disposition inherited as "ignored"
        // (nohup, a shell's trap '') would otherwise survive exec.
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=MAX_SIGNAL {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &raw const default,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        libc::prctl(libc::PR_SET_TIMERSLACK, args.slack, 0, 0, 0);
        libc::setpgid(0, 0);
        if let Some(procs) = spec.cgroup_procs
            && libc::write(procs, b"0".as_ptr().cast(), 1) != 1
        {
            fail(STAGE_CGROUP);
        }
        for (target, fd) in spec.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as libc::c_int) < 0 {
                fail(STAGE_STDIO);
            }
        }
        // Nothing of atropos's leaks into the target, also a descriptor it inherited
        // without close-on-exec.
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if libc::chdir(spec.cwd.as_ptr()) < 0 {
            fail(STAGE_CWD);
        }
        raw_sigmask(libc::SIG_SETMASK, &0, None);
        libc::execve(spec.path.as_ptr(), spec.argv.as_ptr(), spec.envp.as_ptr());
        fail(STAGE_EXEC)
    }
}

/// Stack for the child of [`spawn`]; it runs a few system calls and no Rust frames of note.
const CHILD_STACK: usize = 64 * 1024;

/// Starts a target the way `posix_spawn` would (`clone(CLONE_VM | CLONE_VFORK)`: no copy of
/// atropos's memory), with what `posix_spawn` cannot do here: the child joins its lane's
/// cgroup before `exec`, every signal starts at its default action with an empty mask, and
/// the pidfd comes from the clone itself (`CLONE_PIDFD`), so there is no moment at which
/// the child's number is known but not pinned.
///
/// Returns the pid and its pidfd; the child is ours, unreaped.
pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<(i32, OwnedFd)> {
    use std::sync::atomic::Ordering::Relaxed;
    thread_local! {
        static STACK: std::cell::RefCell<Vec<u128>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let failure = ChildFailure {
        stage: std::sync::atomic::AtomicI32::new(0),
        errno: std::sync::atomic::AtomicI32::new(0),
    };
    let slack = ORIGINAL_SLACK.get().unwrap_or_else(|| {
        // SAFETY: prctl with integer arguments only.
        let current = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        libc::c_ulong::try_from(current).unwrap_or(50_000)
    });
    let args = ChildArgs {
        spec,
        slack,
        failure: &failure,
    };
    let mut pidfd: libc::c_int = -1;
    let pid = STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        if stack.is_empty() {
            stack.resize(CHILD_STACK / 16, 0);
        }
        // SAFETY: the stack grows down from its end, 16-byte aligned (u128 elements).
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) }.cast::<libc::c_void>();
        // Block every signal, glibc's own too, so that no handler of atropos runs in the
        // child before it has reset them; the child unblocks just before exec.
        let mut old = 0u64;
        raw_sigmask(libc::SIG_SETMASK, &u64::MAX, Some(&mut old));
        // SAFETY: `spawn_child` only reads `args` and writes `failure`, both alive until
        // clone returns, which with CLONE_VFORK is after the child's exec or exit.
        let pid = unsafe {
            libc::clone(
                spawn_child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&raw const args).cast_mut().cast(),
                &raw mut pidfd,
            )
        };
        let err = io::Error::last_os_error();
        raw_sigmask(libc::SIG_SETMASK, &old, None);
        if pid < 0 { Err(err) } else { Ok(pid) }
    })?;
    // SAFETY: CLONE_PIDFD stored a new descriptor that nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let stage = failure.stage.load(Relaxed);
    if stage != 0 {
        // The child exited before exec: reap it and say why.
        let _ = nix::sys::wait::waitid(
            nix::sys::wait::Id::PIDFd(std::os::fd::AsFd::as_fd(&pidfd)),
            nix::sys::wait::WaitPidFlag::WEXITED,
        );
        let errno = failure.errno.load(Relaxed);
        let what = match stage {
            STAGE_CGROUP => "cannot join the trial's cgroup",
            STAGE_STDIO => "cannot set up standard input and output",
            STAGE_CWD => "cannot enter the working directory",
            _ => "cannot execute",
        };
        let cause = io::Error::from_raw_os_error(errno);
        return Err(io::Error::new(cause.kind(), format!("{what}: {cause}")));
    }
    Ok((pid, pidfd))
}

/// Forks a child that only joins the cgroup behind `procs` and exits: whether this cgroup
/// takes processes at all.
pub fn probe_join(procs: RawFd) -> io::Result<()> {
    // SAFETY: the forked child makes two async-signal-safe calls (write, _exit); the parent
    // then reaps it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let ok = libc::write(procs, b"0".as_ptr().cast(), 1) == 1;
            libc::_exit(if ok { 0 } else { *libc::__errno_location() });
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut status = 0;
        libc::waitpid(pid, &raw mut status, 0);
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

thread_local! {
    /// This thread's timer slack before [`tune_trial_thread`] changed it.
    static ORIGINAL_SLACK: std::cell::Cell<Option<libc::c_ulong>> =
        const { std::cell::Cell::new(None) };
}

/// Prepares this thread to run trials, once per thread:
/// - 1 µs timer slack (the default is 50 µs), so that a step due at an offset fires when it
///   is due;
/// - a 100 µs scheduler slice (the default is over 1 ms here): the thread works little and
///   in short bursts, and with a short slice it preempts a busy CPU sooner when a marker
///   wakes it. Reset on fork, so targets keep the default.
pub fn tune_trial_thread() {
    if ORIGINAL_SLACK.get().is_some() {
        return;
    }
    // SAFETY: prctl with integer arguments only; affects the calling thread.
    let original = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    let Ok(original) = libc::c_ulong::try_from(original) else {
        return; // unknown: keep the default, which children then inherit unchanged
    };
    // SAFETY: as above.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0);
    }
    ORIGINAL_SLACK.set(Some(original));
    short_slice();
}

/// `struct sched_attr` up to its first version (48 bytes), as `sched_setattr(2)` takes it.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks for a 100 µs slice for this thread (`sched_runtime` of a SCHED_OTHER thread, Linux
/// 6.12 and later; older kernels ignore it), keeping its nice value. Best effort.
fn short_slice() {
    const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
    // SAFETY: getpriority takes integers; -1 is also a valid nice value, so errno tells.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            return;
        }
        nice
    };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice,
        priority: 0,
        runtime: 100_000,
        deadline: 0,
        period: 0,
    };
    // SAFETY: a pointer to a live struct whose size field says how much the kernel may read.
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
}

/// The nice value of [`background_thread`]: a nice-0 thread that wants the CPU gets about
/// ten times its share, yet it is never starved (`SCHED_IDLE` could starve it for as long as
/// the machine is busy, and a run's end waits for its writer).
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers this thread's priority to nice [`BACKGROUND_NICE`]; the threads it starts from
/// now on inherit it. For work that must not delay a trial, such as the results store's
/// writer. Best effort: an error leaves the thread as it was.
pub fn background_thread() {
    // SAFETY: integer arguments only. With PRIO_PROCESS Linux takes a thread id (nice is a
    // property of each thread), so this changes the calling thread alone.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid.cast_unsigned(), BACKGROUND_NICE);
    }
}

/// Restores the default action of SIGPIPE (the Rust runtime ignores it), so that a short
/// command whose output is piped into `head` ends quietly like other Unix tools instead of
/// failing on EPIPE. Not for servers: a peer closing a socket must not kill them.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Makes the child `command` will spawn die (SIGKILL) when the thread that spawns it ends,
/// also when this whole process is SIGKILLed: for helpers such as `journalctl --follow`,
/// which would otherwise follow for ever after atropos is gone.
pub fn die_with_spawner(command: &mut std::process::Command) {
    signal_at_spawner_death(command, libc::SIGKILL);
}

/// Sends `signal` to the child `command` will spawn when the thread that spawns it ends,
/// also when this whole process is SIGKILLed (`PR_SET_PDEATHSIG`).
pub fn signal_at_spawner_death(command: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // The spawner, as the child will see it: if it is gone by the time of the prctl, the
    // child was adopted (by init or by a subreaper) and the signal would never come.
    let spawner = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl and
    // getppid, both async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != spawner {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn victim(token: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .args(["-c", "exec sleep 30", token])
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn start_of(pid: i32) -> u64 {
        crate::procfs::ProcStat::read(pid).unwrap().starttime
    }

    fn exited_within(child: &mut std::process::Child, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn a_stale_guardian_slot_kills_nothing_and_a_pinned_one_kills_its_group() {
        let token = format!("atropos-guard-test-{}", std::process::id());
        let mut stale = victim(&token);
        let mut pinned = victim(&token);
        let table = start_guardian_with(8, None, None).unwrap();
        // A slot whose leader "started" at another time: the number now names someone else.
        let _stale_slot = table
            .watch(stale.id() as i32, start_of(stale.id() as i32) + 1)
            .unwrap();
        let _pinned_slot = table
            .watch(pinned.id() as i32, start_of(pinned.id() as i32))
            .unwrap();
        table.shutdown();
        assert!(
            exited_within(&mut pinned, std::time::Duration::from_secs(5)),
            "the guardian kills a group whose leader is the one it recorded"
        );
        assert!(
            !exited_within(&mut stale, std::time::Duration::from_millis(300)),
            "a stale slot signalled a process that is not the recorded leader"
        );
        stale.kill().unwrap();
        stale.wait().unwrap();
    }

    #[test]
    fn a_full_guardian_table_refuses_and_a_dropped_guard_frees_its_slot() {
        let table = start_guardian_with(2, None, None).unwrap();
        let first = table.watch(999_999_990, 1).unwrap();
        let _second = table.watch(999_999_991, 1).unwrap();
        let full = table.watch(999_999_992, 1).unwrap_err();
        assert!(
            full.to_string().contains("table is full (2 live targets)"),
            "{full}"
        );
        drop(first);
        assert!(table.watch(999_999_992, 1).is_ok());
        table.shutdown();
    }

    #[test]
    fn the_guardian_is_reaped_at_shutdown() {
        let table = start_guardian_with(1, None, None).unwrap();
        let pid = nix::unistd::Pid::from_raw(table.pid);
        table.shutdown();
        // Reaped already: no such child any more, not even a zombie.
        assert_eq!(
            nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD)
        );
    }
}
