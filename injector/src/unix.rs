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

const GUARD_SLOTS: usize = 4096;

/// The table of live target groups, shared with the guardian process.
pub struct GuardTable {
    /// The guardian's pid: a child of atropos that no trial owns.
    pub pid: i32,
    slots: &'static [std::sync::atomic::AtomicI32],
    _pipe: OwnedFd,
}

impl GuardTable {
    /// Records `pgid` as a live target group.
    pub fn watch(&self, pgid: i32) {
        use std::sync::atomic::Ordering;
        for slot in self.slots {
            if slot
                .compare_exchange(0, pgid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Forgets `pgid` (call before reaping its leader).
    pub fn forget(&self, pgid: i32) {
        use std::sync::atomic::Ordering;
        for slot in self.slots {
            if slot
                .compare_exchange(pgid, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// Starts the guardian: a forked child that shares a table of target process groups with
/// atropos (anonymous shared memory, so recording a group costs one atomic store and no
/// wake-up) and holds the read end of a pipe that atropos never writes. When atropos dies
/// for any reason, SIGKILL included, the pipe reaches end-of-file and the guardian SIGKILLs
/// every group still in the table, then exits.
///
/// Call once, early; the child runs only async-signal-safe calls.
pub fn start_guardian() -> io::Result<GuardTable> {
    let bytes = GUARD_SLOTS * std::mem::size_of::<i32>();
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
    // SAFETY: the mapping is zeroed, aligned, `bytes` long and never unmapped; AtomicI32 has
    // the layout of i32.
    let slots: &'static [std::sync::atomic::AtomicI32] = unsafe {
        std::slice::from_raw_parts(map.cast::<std::sync::atomic::AtomicI32>(), GUARD_SLOTS)
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the child below calls only async-signal-safe functions (close, close_range,
    // signal, read, kill, _exit) and atomic loads, as POSIX requires after fork in a threaded
    // process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            // Hold nothing of atropos's: no pipes of targets, no database file. Two
            // close_range calls cover every descriptor whatever the limit; a kernel older
            // than 5.9 gets the loop.
            let keep = fds[0] as libc::c_uint;
            let below = libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, keep - 1, 0);
            let above = libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
            if below < 0 || above < 0 {
                for fd in 3..65536 {
                    if fd != fds[0] {
                        libc::close(fd);
                    }
                }
            }
            // Ctrl-C and a closing terminal hit the whole group; the guardian must outlive them.
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            let mut byte = 0u8;
            loop {
                let n = libc::read(fds[0], (&raw mut byte).cast(), 1);
                if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                    break;
                }
            }
            for slot in slots {
                let g = slot.load(std::sync::atomic::Ordering::Acquire);
                if g > 1 {
                    libc::kill(-g, libc::SIGKILL);
                }
            }
            libc::_exit(0);
        }
    }
    // SAFETY: both descriptors were just created and are owned here.
    unsafe {
        libc::close(fds[0]);
        Ok(GuardTable {
            pid,
            slots,
            _pipe: OwnedFd::from_raw_fd(fds[1]),
        })
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

/// Runs `spawn` with this thread's original timer slack: a child takes its slack from the
/// thread that creates it, and a target should run as it would without atropos.
pub fn with_original_timers<T>(spawn: impl FnOnce() -> T) -> T {
    let Some(original) = ORIGINAL_SLACK.get() else {
        return spawn();
    };
    // SAFETY: prctl with integer arguments only; affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, original, 0, 0, 0);
    }
    let spawned = spawn();
    // SAFETY: as above.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000, 0, 0, 0);
    }
    spawned
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

/// Restores the default action of SIGPIPE (the Rust runtime ignores it), so that a short
/// command whose output is piped into `head` ends quietly like other Unix tools instead of
/// failing on EPIPE. Not for servers: a peer closing a socket must not kill them.
pub fn default_sigpipe() {
    // SAFETY: installs the default disposition; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
