//! Running processes a trial attached to, held by pidfd from the moment they are pinned.
//!
//! Every action goes through the pidfd opened when the identity (pid, start time, boot) was
//! checked: a signal, a SIGCONT after a pause, "has it exited". The number alone is used only
//! to read `/proc` about a process the pidfd still holds, and for reports.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::cgroup::Lane;
use crate::clock::now_ns;
use crate::plan::{AttachTarget, Identity};
use crate::process::{self, Found};
use crate::record::{DeliveryOutcome, Exit};
use crate::signal::Signal;
use crate::trial::Subject;
use crate::{procfs, safety};

/// The processes of an attached trial.
#[derive(Debug)]
pub struct Attached {
    held: Vec<(Identity, OwnedFd)>,
    /// The service's cgroup folder, when the plan names one, and its path in the hierarchy.
    cgroup: Option<std::path::PathBuf>,
    cgroup_path: Option<String>,
    /// Matched but not chosen, and the ancestors of the chosen: in the cgroup, not theirs.
    spare: Vec<Identity>,
    /// When the last of them was seen gone (monotonic ns).
    exited: std::cell::Cell<Option<u64>>,
}

/// Why a trial could not attach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The plan names no process.
    #[error("the plan names no process to attach to")]
    Empty,
    /// The plan was made in another boot: its start times name other processes.
    #[error("the processes were selected in boot {planned}, this is boot {now}")]
    OtherBoot {
        /// The plan's boot.
        planned: String,
        /// This boot.
        now: String,
    },
    /// A process may never be signalled (PID 1, atropos, its ancestors).
    #[error("pid {0} is protected: never PID 1, atropos or one of its ancestors")]
    Protected(i32),
    /// The process is gone, or its number names another process now.
    #[error(
        "pid {pid} is no longer the process selected (start time {starttime}): it exited, \
         or its number was reused"
    )]
    Gone {
        /// Its pid.
        pid: i32,
        /// The start time it was selected with.
        starttime: u64,
    },
}

impl Attached {
    /// Pins every process of `target`, or says which one could not be.
    pub fn pin(target: &AttachTarget) -> Result<Attached, AttachError> {
        if target.processes.is_empty() {
            return Err(AttachError::Empty);
        }
        let now = crate::journal::boot_id();
        if target.boot_id != now {
            return Err(AttachError::OtherBoot {
                planned: target.boot_id.clone(),
                now: now.to_owned(),
            });
        }
        let mut held = Vec::with_capacity(target.processes.len());
        for id in &target.processes {
            if !safety::may_signal(id.pid) {
                return Err(AttachError::Protected(id.pid));
            }
            let Some(Found { pidfd, .. }) = process::pin(id.pid, id.starttime) else {
                return Err(AttachError::Gone {
                    pid: id.pid,
                    starttime: id.starttime,
                });
            };
            held.push((*id, pidfd));
        }
        let cgroup = target.cgroup.as_deref().and_then(|path| {
            let mount = crate::cgroup::v2_mount()?;
            Some(mount.join(path.trim_start_matches('/')))
        });
        Ok(Attached {
            held,
            cgroup,
            cgroup_path: target
                .cgroup
                .as_ref()
                .map(|p| format!("/{}", p.trim_matches('/'))),
            spare: target.spare.clone(),
            exited: std::cell::Cell::new(None),
        })
    }

    /// The identities held.
    pub fn identities(&self) -> Vec<Identity> {
        self.held.iter().map(|(id, _)| *id).collect()
    }

    fn running(&self) -> impl Iterator<Item = &(Identity, OwnedFd)> {
        self.held.iter().filter(|(_, fd)| !has_exited(fd.as_fd()))
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable).
fn has_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Sends `signal` through `pidfd`: a process that exited but is not yet reaped by its parent
/// takes the signal and drops it (`zombie`); one gone is `already_finished`.
fn send(id: Identity, pidfd: &OwnedFd, signal: Signal) -> DeliveryOutcome {
    if has_exited(pidfd.as_fd()) {
        let zombie = procfs::ProcStat::read(id.pid)
            .is_some_and(|s| s.starttime == id.starttime && s.is_zombie());
        return if zombie {
            DeliveryOutcome::Zombie
        } else {
            DeliveryOutcome::AlreadyFinished
        };
    }
    process::send_pidfd(pidfd, signal)
}

impl Subject for Attached {
    fn pid(&self) -> i32 {
        self.held[0].0.pid
    }

    fn pids(&self) -> Vec<i32> {
        self.held.iter().map(|(id, _)| id.pid).collect()
    }

    fn pidfd(&self) -> BorrowedFd<'_> {
        // The first still running: its exit wakes the wait, which then looks at the rest.
        self.running().next().unwrap_or(&self.held[0]).1.as_fd()
    }

    fn peek(&self) -> Option<Exit> {
        if self.exited.get().is_none() && self.running().next().is_none() {
            self.exited.set(Some(now_ns()));
        }
        self.exited.get().map(|at_ns| Exit {
            code: None,
            signal: None,
            core_dumped: false,
            at_ns,
        })
    }

    fn reap(&mut self) -> Option<Exit> {
        // Not ours to reap: its parent (a supervisor, a shell) takes its status.
        self.peek()
    }

    fn is_reaped(&self) -> bool {
        // From its exit on, the number of a process that is not ours may be reused at any
        // moment by whoever reaps it: treat it as reaped, so no group step uses the number.
        self.peek().is_some()
    }

    fn signal(&self, signal: Signal) -> DeliveryOutcome {
        self.held
            .iter()
            .map(|(id, fd)| send(*id, fd, signal))
            .fold(DeliveryOutcome::NoTarget, crate::trial::rank)
    }

    fn signal_group(&self, _signal: Signal) -> DeliveryOutcome {
        // The group of a process atropos did not start may hold its supervisor, its shell,
        // anyone: validation refuses `to: group` for attached targets, and this stays shut.
        DeliveryOutcome::Denied
    }

    fn lane(&self) -> Option<&Arc<Lane>> {
        None
    }

    fn pin_main(&self) -> Vec<(Found, u64)> {
        self.running()
            .filter_map(|(id, fd)| {
                let pidfd = fd.try_clone().ok()?;
                Some((Found { pid: id.pid, pidfd }, id.starttime))
            })
            .collect()
    }

    fn kill(&self) {
        // Never: atropos ends its watch of an attached process, not the process.
    }

    fn finish(&mut self) -> Option<Exit> {
        self.peek()
    }

    fn is_child(&self) -> bool {
        false
    }

    fn descendants(&self) -> Vec<procfs::ProcStat> {
        let mut found = Vec::new();
        for (id, fd) in self.running() {
            let kids = procfs::descendants_of(id.pid);
            // Exited while its children were read: the number may have named another
            // process by the end of the walk.
            if !has_exited(fd.as_fd()) {
                found.extend(kids);
            }
        }
        found
    }

    fn cgroup_members(&self) -> Vec<procfs::ProcStat> {
        let (Some(dir), Some(path)) = (&self.cgroup, &self.cgroup_path) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        let mut folders = vec![dir.clone()];
        while let Some(folder) = folders.pop() {
            if let Ok(text) = std::fs::read_to_string(folder.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            if let Ok(entries) = std::fs::read_dir(&folder) {
                folders.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids.retain(|pid| !self.held.iter().any(|(id, _)| id.pid == *pid));
        // A peer the selector matched, or a parent of a chosen process (a master), is the
        // service's but not the target's.
        let ancestors: Vec<i32> = self
            .held
            .iter()
            .flat_map(|(id, _)| procfs::ancestors(id.pid))
            .collect();
        pids.retain(|pid| !ancestors.contains(pid));
        pids.into_iter()
            .filter_map(|pid| {
                let stat = procfs::ProcStat::read(pid)?;
                // Read after its start time: the number is still a member's, so the pair
                // names a member (a number reused in between by a process elsewhere fails).
                let own = crate::cgroup::v2_path_of(pid)?;
                let inside = own == *path || own.starts_with(&format!("{path}/"));
                let spare = self
                    .spare
                    .iter()
                    .any(|s| s.pid == pid && s.starttime == stat.starttime);
                (inside && !spare).then_some(stat)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::process::{Command, Stdio};

    use super::*;

    /// A process this test started (not a child of the code under test's view: it is held
    /// only by identity), ended by closing its stdin.
    fn reader(token: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", "read _", token])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn identity(pid: u32) -> Identity {
        let pid = i32::try_from(pid).unwrap();
        for _ in 0..200 {
            if let Some(stat) = procfs::ProcStat::read(pid) {
                return Identity {
                    pid,
                    starttime: stat.starttime,
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no /proc entry for {pid}");
    }

    fn target(processes: Vec<Identity>) -> AttachTarget {
        AttachTarget {
            processes,
            boot_id: crate::journal::boot_id().to_owned(),
            cwd: "/".into(),
            cgroup: None,
            spare: Vec::new(),
        }
    }

    #[test]
    fn an_attached_process_is_signalled_by_pidfd_and_its_exit_is_unknown() {
        let token = format!("atropos-attached-test-{}-a", std::process::id());
        let mut child = reader(&token);
        let id = identity(child.id());
        let mut attached = Attached::pin(&target(vec![id])).unwrap();
        assert_eq!(attached.peek(), None);
        assert_eq!(attached.signal(Signal::TERM), DeliveryOutcome::Delivered);
        // The test is its parent: until it reaps, the process is a zombie.
        let mut fds = [PollFd::new(attached.pidfd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        let exit = attached.peek().unwrap();
        assert_eq!((exit.code, exit.signal), (None, None));
        assert_eq!(exit.to_string(), "exit status unknown (not a child)");
        assert_eq!(attached.signal(Signal::TERM), DeliveryOutcome::Zombie);
        child.wait().unwrap();
        assert_eq!(
            attached.signal(Signal::TERM),
            DeliveryOutcome::AlreadyFinished
        );
        assert_eq!(attached.finish().map(|e| e.at_ns), Some(exit.at_ns));
    }

    #[test]
    fn a_process_that_is_not_the_one_selected_is_refused() {
        let token = format!("atropos-attached-test-{}-b", std::process::id());
        let mut child = reader(&token);
        let id = identity(child.id());
        let reused = Identity {
            starttime: id.starttime + 1,
            ..id
        };
        assert_eq!(
            Attached::pin(&target(vec![reused])).unwrap_err(),
            AttachError::Gone {
                pid: id.pid,
                starttime: id.starttime + 1
            }
        );
        let mut other_boot = target(vec![id]);
        other_boot.boot_id = "another-boot".into();
        assert!(matches!(
            Attached::pin(&other_boot),
            Err(AttachError::OtherBoot { .. })
        ));
        assert_eq!(
            Attached::pin(&target(vec![Identity {
                pid: 1,
                starttime: 0
            }]))
            .unwrap_err(),
            AttachError::Protected(1)
        );
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(matches!(
            Attached::pin(&target(vec![id])),
            Err(AttachError::Gone { .. })
        ));
    }

    #[test]
    fn the_group_of_an_attached_process_is_never_signalled() {
        let token = format!("atropos-attached-test-{}-c", std::process::id());
        let mut child = reader(&token);
        let attached = Attached::pin(&target(vec![identity(child.id())])).unwrap();
        assert_eq!(attached.signal_group(Signal::TERM), DeliveryOutcome::Denied);
        attached.kill();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            attached.peek(),
            None,
            "kill leaves an attached process alone"
        );
        assert!(matches!(child.try_wait(), Ok(None)), "still running");
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}
