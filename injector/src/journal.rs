//! The pause journal: a paused process is always resumed, also after an injector crash.
//!
//! Before SIGSTOP the injector writes `OWNERNS.OWNER.OWNERSTART-PID.STARTTIME` into the journal
//! directory, with the boot id as its content, and removes it after SIGCONT. At start-up
//! [`resume_leftovers`] sends SIGCONT to every process still named there whose start time
//! matches and that was paused during this boot (a start time counts from boot, so only the
//! three together name one process: a reused pid, or the same pid and start time after a
//! reboot, is never touched), but only for entries whose owner is dead: another injector
//! running beside this one keeps its pauses, and so does one in another PID namespace (a
//! container, `unshare --pid`), whose numbers name other processes here.

use std::path::{Path, PathBuf};

use crate::process;
use crate::signal::Signal;

static STATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sets the state folder (the injector's `--state-dir`), before any trial runs; the first
/// call wins.
pub fn set_dir(dir: PathBuf) {
    let _ = STATE_DIR.set(dir);
}

/// Where the journal lives: the folder given to [`set_dir`], else `$ATROPOS_STATE_DIR/paused`, else `$XDG_STATE_HOME/atropos/paused`,
/// else `~/.local/state/atropos/paused`.
pub fn dir() -> PathBuf {
    if let Some(dir) = STATE_DIR.get() {
        return dir.join("paused");
    }
    if let Some(dir) = std::env::var_os("ATROPOS_STATE_DIR") {
        return PathBuf::from(dir).join("paused");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
            home.join(".local/state")
        });
    base.join("atropos/paused")
}

fn owner() -> &'static str {
    crate::procfs::me_mark()
}

fn entry(dir: &Path, pid: i32, starttime: u64) -> PathBuf {
    dir.join(format!("{}-{pid}.{starttime}", owner()))
}

fn parse_pair(text: &str) -> Option<(i32, u64)> {
    let (pid, start) = text.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> &'static str {
    static BOOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        crate::procfs::read_text("/proc/sys/kernel/random/boot_id")
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Records that `pid` is about to be stopped.
pub fn record(pid: i32, starttime: u64) -> std::io::Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(entry(&dir, pid, starttime), boot_id())
}

/// Records that `pid` was resumed.
pub fn clear(pid: i32, starttime: u64) {
    let _ = std::fs::remove_file(entry(&dir(), pid, starttime));
}

/// Resumes every process the journal still holds as paused; returns how many were resumed.
pub fn resume_leftovers() -> usize {
    resume_leftovers_in(&dir())
}

/// [`resume_leftovers`] for the journal in `dir`.
pub fn resume_leftovers_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut resumed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((owner, paused)) = name.to_str().and_then(|n| n.split_once('-')) else {
            continue;
        };
        let Some((pid, start)) = parse_pair(paused) else {
            continue;
        };
        let boot = std::fs::read_to_string(entry.path()).unwrap_or_default();
        match crate::procfs::mark_owner_alive(owner) {
            // Not ours to judge: left as it is for its own namespace's next injector.
            None => continue,
            Some(true) if boot.trim() == boot_id() => continue,
            Some(_) => {}
        }
        // An entry of another boot names no process of this one, whatever its numbers.
        if boot.trim() == boot_id()
            && crate::safety::may_signal(pid)
            && let Some(pin) = process::pin(pid, start)
            && process::send_pidfd(&pin.pidfd, Signal::CONT) == crate::DeliveryOutcome::Delivered
        {
            resumed += 1;
        }
        let _ = std::fs::remove_file(entry.path());
    }
    resumed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn ns() -> u64 {
        crate::procfs::pid_ns()
    }

    #[test]
    fn a_pause_left_by_a_dead_injector_is_resumed_and_a_live_ones_is_not() {
        let dir = tempfile::tempdir().unwrap();
        // `sh -c 'exec sleep 30' TOKEN`: the token in argv without making `sleep` fail on it.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec sleep 30", "atropos-journal-test"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let stat = crate::procfs::ProcStat::read(pid).unwrap();
        let pin = process::pin(pid, stat.starttime).unwrap();
        assert_eq!(
            process::send_pidfd(&pin.pidfd, Signal::STOP),
            crate::DeliveryOutcome::Delivered
        );
        let stopped = || crate::procfs::ProcStat::read(pid).is_some_and(|s| s.state == 'T');
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGSTOP did not stop the child"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // An entry owned by this (live) process is left alone.
        std::fs::write(
            dir.path()
                .join(format!("{}-{pid}.{}", owner(), stat.starttime)),
            boot_id(),
        )
        .unwrap();
        assert_eq!(resume_leftovers_in(dir.path()), 0);
        assert!(stopped());
        // An entry of a dead owner from another boot names nobody now: removed, not resumed.
        std::fs::remove_dir_all(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let other_boot = dir
            .path()
            .join(format!("{}.999999999.1-{pid}.{}", ns(), stat.starttime));
        std::fs::write(&other_boot, "00000000-0000-0000-0000-000000000000").unwrap();
        assert_eq!(resume_leftovers_in(dir.path()), 0);
        assert!(!other_boot.exists());
        assert!(stopped(), "a pause recorded in another boot is not resumed");
        // An entry made in another PID namespace is not judged by this one's numbers: its
        // owner may be alive there, and its pid names another process here.
        std::fs::remove_dir_all(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let foreign = dir
            .path()
            .join(format!("1.999999999.1-{pid}.{}", stat.starttime));
        std::fs::write(&foreign, boot_id()).unwrap();
        assert_eq!(resume_leftovers_in(dir.path()), 0);
        assert!(foreign.exists(), "another namespace's entry stays");
        assert!(
            stopped(),
            "another namespace's pause is not resumed from here"
        );
        // An entry whose owner is gone is resumed and removed.
        std::fs::remove_dir_all(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        std::fs::write(
            dir.path()
                .join(format!("{}.999999999.1-{pid}.{}", ns(), stat.starttime)),
            boot_id(),
        )
        .unwrap();
        assert_eq!(resume_leftovers_in(dir.path()), 1);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        for _ in 0..1000 {
            if !stopped() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!stopped(), "the process was resumed");
        process::send_pidfd(&pin.pidfd, Signal::KILL);
        child.wait().unwrap();
    }
}
