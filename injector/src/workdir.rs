//! Folders a run makes for its trials (`${trial.dir}`), and removing those of dead runs.
//!
//! A run's folder holds an `.owner` file naming the process that made it (its mark, PID
//! namespace, pid and start time, and the boot id). The run removes its folder when it ends; when it was killed first, the next
//! atropos to start on the machine finds the folder, sees that its owner is dead, and removes
//! it. A folder kept on purpose (`--keep-dirs`) has its `.owner` file removed at the end of
//! its run, and is never touched again.
//!
//! Creation and removal go through a rename, so that a kill at any moment leaves a folder
//! the sweep recognises: one being made (`NAME.creating`, without an owner only for the
//! instant before its owner file is written) or being removed (`NAME.removing`).

use std::io;
use std::path::{Path, PathBuf};

const OWNER_FILE: &str = ".owner";
/// The prefix of every run folder's name.
pub const PREFIX: &str = "atropos-";

fn me() -> String {
    format!("{} {}", crate::procfs::me_mark(), crate::journal::boot_id())
}

const CREATING: &str = ".creating";
const REMOVING: &str = ".removing";
/// A folder being made that has no owner file yet is a leftover once it is this old.
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(60);

fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the run folder `dir` and marks it as this process's.
pub fn create(dir: &Path) -> io::Result<()> {
    let staging = with_suffix(dir, CREATING);
    std::fs::create_dir_all(&staging)?;
    std::fs::write(staging.join(OWNER_FILE), me())?;
    std::fs::rename(&staging, dir)
}

/// Removes the run folder `dir` with everything in it.
pub fn remove(dir: &Path) -> io::Result<()> {
    let doomed = with_suffix(dir, REMOVING);
    match std::fs::rename(dir, &doomed) {
        Ok(()) => std::fs::remove_dir_all(&doomed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Keeps `dir` for good: no later sweep will remove it.
pub fn keep(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(OWNER_FILE));
}

/// Whether the owner file's text names a process that may still use the folder. A run of
/// an earlier boot is dead whoever made it; one of this boot is judged by its mark, and a
/// mark this namespace cannot judge (an atropos in a container sharing `/tmp`) keeps it.
fn owner_alive(text: &str) -> bool {
    let mut parts = text.split_ascii_whitespace();
    let (Some(mark), Some(boot), None) = (parts.next(), parts.next(), parts.next()) else {
        // Not an owner file atropos writes: not ours to remove.
        return true;
    };
    boot == crate::journal::boot_id() && crate::procfs::mark_owner_alive(mark) != Some(false)
}

/// Removes every run folder in `parent` whose owner is dead; returns the removed ones.
pub fn sweep_dead(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX))
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let dead = if name.ends_with(REMOVING) {
            true
        } else {
            match std::fs::read_to_string(path.join(OWNER_FILE)) {
                Ok(owner) => !owner_alive(&owner),
                // Being made, and its maker killed before it wrote the owner file.
                Err(_) if name.ends_with(CREATING) => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > ABANDONED)),
                // Without an owner file the folder is not a run's, or was kept on purpose.
                Err(_) => false,
            }
        };
        if !dead {
            continue;
        }
        // Through a rename, like the owner's own removal: killed halfway, this sweep leaves
        // a folder the next one still recognises.
        let gone = if name.ends_with(REMOVING) {
            std::fs::remove_dir_all(&path)
        } else {
            remove(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn folders_of_dead_runs_go_and_live_or_kept_ones_stay() {
        let parent = tempfile::tempdir().unwrap();
        let live = parent.path().join("atropos-rlive");
        create(&live).unwrap();
        let dead = parent.path().join("atropos-rdead");
        std::fs::create_dir_all(dead.join("trial-1")).unwrap();
        let boot = crate::journal::boot_id();
        let ns = crate::procfs::pid_ns();
        std::fs::write(dead.join(OWNER_FILE), format!("{ns}.999999999.1 {boot}")).unwrap();
        // Made by an atropos of another PID namespace (a container sharing the folder):
        // its numbers name other processes here, so it stays.
        let foreign = parent.path().join("atropos-rforeign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join(OWNER_FILE), format!("1.999999999.1 {boot}")).unwrap();
        let rebooted = parent.path().join("atropos-rboot");
        std::fs::create_dir_all(&rebooted).unwrap();
        // This very process, but recorded in another boot: dead.
        std::fs::write(
            rebooted.join(OWNER_FILE),
            format!("{} other-boot", crate::procfs::me_mark()),
        )
        .unwrap();
        let kept = parent.path().join("atropos-rkept");
        create(&kept).unwrap();
        std::fs::write(kept.join(OWNER_FILE), format!("{ns}.999999999.1 {boot}")).unwrap();
        keep(&kept);
        let removing = parent.path().join("atropos-rgone.removing");
        std::fs::create_dir_all(removing.join("trial-2")).unwrap();
        let creating = parent.path().join("atropos-rnew.creating");
        std::fs::create_dir_all(&creating).unwrap();
        let made = parent.path().join("atropos-rmade");
        create(&made).unwrap();
        assert!(made.join(OWNER_FILE).exists() && !with_suffix(&made, CREATING).exists());
        remove(&made).unwrap();
        assert!(!made.exists() && !with_suffix(&made, REMOVING).exists());
        let unrelated = parent.path().join("other-dead");
        std::fs::create_dir_all(&unrelated).unwrap();
        std::fs::write(
            unrelated.join(OWNER_FILE),
            format!("{ns}.999999999.1 {boot}"),
        )
        .unwrap();

        let mut removed = sweep_dead(parent.path());
        removed.sort();
        assert_eq!(
            removed,
            vec![rebooted.clone(), dead.clone(), removing.clone()]
        );
        // A folder being made right now (no owner file yet, but young) is left to its maker.
        assert!(live.exists() && kept.exists() && unrelated.exists() && creating.exists());
        assert!(foreign.exists(), "another PID namespace's run folder stays");
        assert!(!dead.exists() && !rebooted.exists());
    }
}
