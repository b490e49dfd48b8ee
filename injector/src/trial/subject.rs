//! What the driver acts on: a child it spawned, or running processes it attached to.
//!
//! The driver's loop, its markers and its steps are the same for both; what differs is
//! what can be known and what may be done. A spawned child is ours: its exit status is read
//! by reaping it, its process group is signalled while we hold its leader, and at the end
//! of the trial it is killed if it still runs. An attached process is not: its exit is seen
//! through its pidfd only, its status is unknowable, its group is never signalled (it may
//! hold its supervisor), and atropos never kills it: only the experiment's steps touch it.

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::cgroup::Lane;
use crate::process::{self, Spawned};
use crate::record::{DeliveryOutcome, Exit};
use crate::signal::Signal;

/// A target the trial driver works on.
pub trait Subject {
    /// The main process (for reports, the process tree, `/proc` samples).
    fn pid(&self) -> i32;
    /// Every process a step aimed at the main process hits.
    fn pids(&self) -> Vec<i32>;
    /// A descriptor that turns readable when the subject may have exited (poll it, then
    /// [`Subject::peek`]).
    fn pidfd(&self) -> BorrowedFd<'_>;
    /// The exit, once every process of the subject has exited; it is not reaped.
    fn peek(&self) -> Option<Exit>;
    /// Reaps what can be reaped and returns the exit; `None` while it still runs.
    fn reap(&mut self) -> Option<Exit>;
    /// Whether the exit was taken in (the number may name another process now).
    fn is_reaped(&self) -> bool;
    /// Sends `signal` to the main process(es) through their pidfds.
    fn signal(&self, signal: Signal) -> DeliveryOutcome;
    /// Sends `signal` to the main process's group, where that is safe.
    fn signal_group(&self, signal: Signal) -> DeliveryOutcome;
    /// The lane cgroup the subject runs in, if atropos made one for it.
    fn lane(&self) -> Option<&Arc<Lane>>;
    /// Pins the main process(es) for a pause: what a SIGCONT must reach, and only that.
    fn pin_main(&self) -> Vec<(process::Found, u64)>;
    /// Ends the subject when the trial must end early (timeout, hang, interruption, a
    /// recovery probe that reached its phase): a spawned child is killed with its group.
    fn kill(&self);
    /// Takes in the exit at the trial's end: a spawned child is reaped, killed first if it
    /// still runs; an attached process is left as it is.
    fn finish(&mut self) -> Option<Exit>;
    /// Whether atropos started it (then it owns what it left behind).
    fn is_child(&self) -> bool;
    /// The live descendants of the main process(es). Only of a process still held: once an
    /// attached process has exited, its number may name another process, whose children are
    /// none of the trial's.
    fn descendants(&self) -> Vec<crate::procfs::ProcStat>;
    /// For an attached service selected by its cgroup: the other processes in that cgroup
    /// and below it, each checked to be in it after its start time was read.
    fn cgroup_members(&self) -> Vec<crate::procfs::ProcStat> {
        Vec::new()
    }
}

impl Subject for Spawned {
    fn pid(&self) -> i32 {
        Spawned::pid(self)
    }

    fn pids(&self) -> Vec<i32> {
        vec![Spawned::pid(self)]
    }

    fn pidfd(&self) -> BorrowedFd<'_> {
        Spawned::pidfd(self)
    }

    fn peek(&self) -> Option<Exit> {
        Spawned::peek(self)
    }

    fn reap(&mut self) -> Option<Exit> {
        Spawned::reap(self)
    }

    fn is_reaped(&self) -> bool {
        Spawned::is_reaped(self)
    }

    fn signal(&self, signal: Signal) -> DeliveryOutcome {
        Spawned::signal(self, signal)
    }

    fn signal_group(&self, signal: Signal) -> DeliveryOutcome {
        Spawned::signal_group(self, signal)
    }

    fn lane(&self) -> Option<&Arc<Lane>> {
        Spawned::lane(self)
    }

    fn pin_main(&self) -> Vec<(process::Found, u64)> {
        let pid = Spawned::pid(self);
        crate::procfs::ProcStat::read(pid)
            .and_then(|stat| process::pin(pid, stat.starttime).map(|pin| (pin, stat.starttime)))
            .into_iter()
            .collect()
    }

    fn kill(&self) {
        let _ = Spawned::signal_group(self, Signal::KILL);
        let _ = Spawned::signal(self, Signal::KILL);
    }

    fn finish(&mut self) -> Option<Exit> {
        match Spawned::reap(self) {
            Some(exit) => Some(exit),
            None => self.kill_and_reap(),
        }
    }

    fn is_child(&self) -> bool {
        true
    }

    fn descendants(&self) -> Vec<crate::procfs::ProcStat> {
        // Unreaped, the number is still this child's.
        crate::procfs::descendants_of(Spawned::pid(self))
    }
}
