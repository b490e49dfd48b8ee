//! Finding and killing what a trial left behind.
//!
//! A trial's processes live in its lane cgroup ([`crate::cgroup`]) from before `exec`, so the
//! lane lists them all, also those that left the target's process group or session, and
//! `cgroup.kill` ends them all at once. Beside that, and in place of it where there is no
//! cgroup, atropos is a child subreaper: when a target's main process dies its descendants
//! are re-parented to atropos instead of PID 1, and a process belongs to the trial when it
//! is in the trial's process group, carries the trial's `ATROPOS_TRIAL` token in its
//! environment, or descends from one that does.

use std::time::Duration;

use crate::cgroup::Lane;
use crate::process::{self, Found};
use crate::procfs::{self, ProcStat};
use crate::record::Orphan;
use crate::safety;
use crate::signal::Signal;

/// The environment variable that marks every process of a trial.
pub const TOKEN_VAR: &str = "ATROPOS_TRIAL";

/// Live processes of trial `token` whose main process (and group leader) was `main_pid`;
/// call once the main process is reaped.
pub fn find(token: &str, main_pid: i32, lane: Option<&Lane>) -> Vec<ProcStat> {
    let mut found = scan(token, main_pid, false);
    if let Some(lane) = lane {
        found.extend(lane_members(lane, main_pid));
        found.sort_by_key(|p| p.pid);
        found.dedup_by_key(|p| p.pid);
    }
    found
}

/// The live processes in `lane` other than `main_pid`.
pub fn lane_members(lane: &Lane, main_pid: i32) -> Vec<ProcStat> {
    lane.members()
        .into_iter()
        .filter(|pid| *pid != main_pid)
        .filter_map(ProcStat::read)
        .filter(|s| !s.is_zombie())
        .collect()
}

/// One pass over atropos's children: the live processes of the trial (with their
/// descendants), and, when `reap` is set, every stray zombie reaped on the way.
fn scan(token: &str, main_pid: i32, reap: bool) -> Vec<ProcStat> {
    let me = std::process::id() as i32;
    let entry = format!("{TOKEN_VAR}={token}");
    let mut found: Vec<ProcStat> = Vec::new();
    // When a process dies its children go to the subreaper's first live thread, the main
    // thread: one children file holds every orphan of every trial.
    process::with_registry(|registered| {
        for pid in procfs::thread_children(me, me) {
            if registered.contains(&pid) {
                continue;
            }
            let Some(stat) = ProcStat::read(pid) else {
                continue;
            };
            if stat.is_zombie() {
                if reap {
                    process::reap_stray(pid);
                }
                continue;
            }
            if stat.pgid == main_pid || stat.sid == main_pid || procfs::environ_has(pid, &entry) {
                found.extend(procfs::descendants_of(pid));
                found.push(stat);
            }
        }
    });
    found.retain(|p| !p.is_zombie() && p.pid != me);
    found.sort_by_key(|p| p.pid);
    found.dedup_by_key(|p| p.pid);
    found
}

/// Kills every process of the trial still alive and reaps those re-parented to atropos;
/// with a lane, the lane is empty when this returns (or is reported as not emptied).
pub fn sweep(token: &str, main_pid: i32, lane: Option<&Lane>) -> Vec<Orphan> {
    let mut found = scan(token, main_pid, true);
    if let Some(lane) = lane
        && lane.populated()
    {
        found.extend(lane_members(lane, main_pid));
        found.sort_by_key(|p| p.pid);
        found.dedup_by_key(|p| p.pid);
    }
    if found.is_empty() {
        return Vec::new();
    }
    let mut orphans = Vec::with_capacity(found.len());
    let mut pinned: Vec<(usize, Found)> = Vec::new();
    for stat in found {
        let cmdline = procfs::cmdline(stat.pid);
        let mut killed = false;
        if safety::may_signal(stat.pid)
            && let Some(pin) = process::pin(stat.pid, stat.starttime)
        {
            killed =
                process::send_pidfd(&pin.pidfd, Signal::KILL) == crate::DeliveryOutcome::Delivered;
            pinned.push((orphans.len(), pin));
        }
        orphans.push(Orphan {
            kept: false,
            pid: stat.pid,
            comm: stat.comm,
            cmdline,
            left_group: stat.pgid != main_pid,
            killed,
        });
    }
    // What forked between the listing and the kills is in the lane too: kill it all.
    if let Some(lane) = lane
        && !lane.kill_all(Duration::from_secs(2))
    {
        tracing::warn!(lane = %lane.dir.display(), "the lane did not empty within 2s");
    }
    reap_pinned(pinned.into_iter().map(|(_, p)| p).collect());
    reap_strays();
    orphans
}

fn reap_pinned(mut pinned: Vec<Found>) {
    let deadline = crate::clock::now_ns() + 2_000_000_000;
    while !pinned.is_empty() && crate::clock::now_ns() < deadline {
        pinned.retain(|p| ProcStat::read(p.pid).is_some_and(|s| !s.is_zombie()));
        if !pinned.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Reaps zombie children of atropos that nobody waits for: orphans re-parented to it that
/// exited by themselves. Registered processes are left to their owners.
pub fn reap_strays() {
    let me = std::process::id() as i32;
    process::with_registry(|registered| {
        for pid in procfs::children(me) {
            if !registered.contains(&pid) && ProcStat::read(pid).is_some_and(|s| s.is_zombie()) {
                process::reap_stray(pid);
            }
        }
    });
}

/// Kills every process carrying a token that starts with `run_prefix`: the last sweep of a
/// run, also after an interruption. Returns how many were killed.
pub fn kill_run(run_prefix: &str) -> usize {
    let me = std::process::id() as i32;
    let prefix = format!("{TOKEN_VAR}={run_prefix}");
    let mut killed = 0;
    for stat in procfs::descendants_of(me) {
        let environ = procfs::read(format!("/proc/{}/environ", stat.pid)).unwrap_or_default();
        let ours = environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(prefix.as_bytes()));
        if ours
            && safety::may_signal(stat.pid)
            && let Some(pin) = process::pin(stat.pid, stat.starttime)
            && process::send_pidfd(&pin.pidfd, Signal::KILL) == crate::DeliveryOutcome::Delivered
        {
            killed += 1;
        }
    }
    reap_strays();
    killed
}
