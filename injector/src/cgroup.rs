//! Containment by cgroup v2: every process of a trial lives in a cgroup from before `exec`.
//!
//! # Theory of operation
//! At [`crate::init`] atropos creates a *run cgroup* below its own v2 cgroup, named
//! `atropos-PID.STARTTIME` after the process that owns it. Each thread that spawns targets
//! gets a *lane* below it (`l0`, `l1`, ...), created once and reused by the trials that
//! thread runs one after another: a lane is emptied (`cgroup.kill`) and seen empty
//! (`cgroup.events`) before its next trial, so what is in it belongs to one trial only.
//! A spawned child writes itself into its lane's `cgroup.procs` before it calls `exec`
//! ([`crate::unix::spawn`]), so nothing a target starts, also after `setsid` or a double
//! fork, escapes the lane.
//!
//! - The orphan sweep reads the lane; `cgroup.kill` kills all of it, forks in flight too.
//! - The guardian writes `1` into the run cgroup's `cgroup.kill` when atropos dies, which
//!   kills every lane at once; no process number is involved, so none can be stale.
//! - A later atropos removes run cgroups whose owner is dead ([`sweep_dead_runs`]).
//!
//! Where no writable cgroup v2 exists (no `cgroup2` mount, not writable, or controllers
//! enabled in the parent make it refuse processes), atropos falls back to process groups,
//! the subreaper and the trial token, and says so through [`containment`].

use std::fs;
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::procfs;

/// How the processes of a trial are kept together, and so found and killed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mechanism")]
pub enum Containment {
    /// A cgroup v2 per lane below this run cgroup.
    Cgroup {
        /// The run cgroup's directory.
        path: PathBuf,
    },
    /// Process groups, the child subreaper and the trial token: a process that leaves the
    /// group and clears its environment is found only while atropos lives.
    ProcessGroup {
        /// Why no cgroup is used.
        why: String,
    },
}

impl std::fmt::Display for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Containment::Cgroup { path } => write!(f, "cgroup v2 ({})", path.display()),
            Containment::ProcessGroup { why } => write!(f, "process groups ({why})"),
        }
    }
}

/// The run cgroup of this process.
#[derive(Debug)]
pub struct Run {
    /// Its directory.
    pub dir: PathBuf,
    /// `cgroup.kill` of the run, open for the guardian.
    pub kill: OwnedFd,
    /// The directory, open for the guardian (lanes are removed relative to it).
    pub dir_fd: OwnedFd,
    /// The parent directory, open for the guardian.
    pub parent_fd: OwnedFd,
    /// The run cgroup's name in its parent.
    pub name: String,
}

static RUN: OnceLock<Result<Run, String>> = OnceLock::new();

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
pub fn v2_mount() -> Option<PathBuf> {
    let text = procfs::read_text("/proc/self/mountinfo").ok()?;
    parse_v2_mount(&text)
}

fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_ascii_whitespace().next()?;
        (fstype == "cgroup2").then(|| left.split_ascii_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The v2 cgroup of `pid` relative to the hierarchy's root (`0::/path` in `/proc/PID/cgroup`).
pub fn v2_path_of(pid: i32) -> Option<String> {
    let text = procfs::read_text(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

fn owner_name() -> String {
    format!("atropos-{}", procfs::me_mark())
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?
        .into())
}

fn create_run() -> Result<Run, String> {
    if std::env::var_os("ATROPOS_NO_CGROUP").is_some_and(|v| !v.is_empty()) {
        return Err("ATROPOS_NO_CGROUP is set".into());
    }
    let mount = v2_mount().ok_or("no cgroup2 file system is mounted")?;
    let own = v2_path_of(std::process::id() as i32).ok_or("this process has no cgroup v2")?;
    let parent = mount.join(own.trim_start_matches('/'));
    sweep_dead_runs(&parent);
    let name = owner_name();
    let dir = parent.join(&name);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let opened = (|| -> io::Result<Run> {
        let kill = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(dir.join("cgroup.kill"))?
            .into();
        Ok(Run {
            dir_fd: open_dir(&dir)?,
            parent_fd: open_dir(&parent)?,
            kill,
            dir: dir.clone(),
            name: name.clone(),
        })
    })();
    let run = opened.map_err(|e| {
        let _ = fs::remove_dir(&dir);
        format!("cannot use {} (no cgroup.kill?): {e}", dir.display())
    })?;
    // A lane that refuses processes (controllers enabled above it) is found now, not on the
    // first trial.
    let probe = Lane::create(&run, u32::MAX).map_err(|e| format!("{e}"))?;
    let ok = crate::unix::probe_join(probe.procs.as_raw_fd());
    drop(probe);
    if let Err(e) = ok {
        let _ = fs::remove_dir(&dir);
        return Err(format!("{} refuses processes: {e}", dir.display()));
    }
    Ok(run)
}

/// The run cgroup, created on first use; `None` when atropos falls back to process groups.
pub fn run() -> Option<&'static Run> {
    RUN.get_or_init(create_run).as_ref().ok()
}

/// How this process contains its trials.
pub fn containment() -> Containment {
    match RUN.get_or_init(create_run) {
        Ok(run) => Containment::Cgroup {
            path: run.dir.clone(),
        },
        Err(why) => Containment::ProcessGroup { why: why.clone() },
    }
}

/// One lane: a cgroup that the trials of one thread use one after another.
#[derive(Debug)]
pub struct Lane {
    /// Its directory.
    pub dir: PathBuf,
    /// `cgroup.procs`, open for writing: a child joins by writing `0`.
    pub procs: OwnedFd,
    events: fs::File,
    kill: fs::File,
}

/// How many lanes were created (their names are `l0` up to this), shared with the guardian.
pub(crate) static LANES: AtomicU32 = AtomicU32::new(0);

impl Lane {
    fn create(run: &Run, index: u32) -> io::Result<Lane> {
        let name = if index == u32::MAX {
            "probe".to_owned()
        } else {
            format!("l{index}")
        };
        let dir = run.dir.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let write = |file: &str| {
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dir.join(file))
        };
        Ok(Lane {
            procs: write("cgroup.procs")?.into(),
            kill: write("cgroup.kill")?,
            events: fs::File::open(dir.join("cgroup.events"))?,
            dir,
        })
    }

    /// The lane of the calling thread, created on first use; `None` without cgroups.
    pub fn current() -> Option<Arc<Lane>> {
        thread_local! {
            static LANE: std::cell::OnceCell<Option<Arc<Lane>>> = const { std::cell::OnceCell::new() };
        }
        LANE.with(|cell| {
            cell.get_or_init(|| {
                let run = run()?;
                let index = LANES.fetch_add(1, Ordering::AcqRel);
                match Lane::create(run, index) {
                    Ok(lane) => Some(Arc::new(lane)),
                    Err(err) => {
                        tracing::warn!(%err, "no lane cgroup for this thread; process groups only");
                        None
                    }
                }
            })
            .clone()
        })
    }

    /// The processes in the lane now (live ones; zombies have left it).
    pub fn members(&self) -> Vec<i32> {
        procfs::read_text(self.dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether any process is in the lane.
    pub fn populated(&self) -> bool {
        let mut text = String::new();
        let mut events = &self.events;
        if events.rewind().is_err() || events.read_to_string(&mut text).is_err() {
            return !self.members().is_empty();
        }
        !text.lines().any(|l| l == "populated 0")
    }

    /// Kills every process in the lane (`cgroup.kill`) and waits up to `limit` until it is
    /// empty; returns whether it is.
    pub fn kill_all(&self, limit: std::time::Duration) -> bool {
        use std::io::Write;
        if !self.populated() {
            return true;
        }
        let _ = (&self.kill).write_all(b"1");
        let deadline = std::time::Instant::now() + limit;
        while self.populated() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        true
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.kill_all(std::time::Duration::from_secs(2));
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Kills what is left in this run's cgroups and removes them: the end of this process's use.
pub fn remove_run() {
    let Some(run) = run() else {
        return;
    };
    remove_tree(&run.dir);
}

/// Kills everything in the cgroup `dir` and removes it with its sub-cgroups.
fn remove_tree(dir: &Path) {
    let _ = fs::write(dir.join("cgroup.kill"), b"1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline
        && procfs::read_text(dir.join("cgroup.events"))
            .is_ok_and(|t| !t.lines().any(|l| l == "populated 0"))
    {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Removes the run cgroups below `parent` whose owning atropos is dead (killed before it
/// could clean up, and its guardian too), judged only for owners of this PID namespace;
/// returns how many.
pub fn sweep_dead_runs(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_prefix("atropos-")) else {
            continue;
        };
        // Another PID namespace's run (an atropos in a container, or in `unshare --pid`)
        // is not ours to judge: its numbers name other processes here.
        let alive = procfs::mark_owner_alive(owner) != Some(false);
        if !alive {
            remove_tree(&entry.path());
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_v2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "25 1 0:22 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_v2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(parse_v2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn a_dead_owners_run_cgroup_is_removed_and_a_live_ones_is_kept() {
        let Some(run) = run() else {
            eprintln!("skipped: no writable cgroup v2 here ({})", containment());
            return;
        };
        let parent = run.dir.parent().unwrap();
        let dead = parent.join(format!("atropos-{}.999999999.1", procfs::pid_ns()));
        let foreign = parent.join("atropos-1.999999999.1");
        fs::create_dir(&foreign).unwrap();
        fs::create_dir(&dead).unwrap();
        fs::create_dir(dead.join("l0")).unwrap();
        assert!(sweep_dead_runs(parent) >= 1);
        assert!(!dead.exists());
        assert!(run.dir.exists(), "this process's own run cgroup stays");
        assert!(
            foreign.exists(),
            "a run of another PID namespace is not judged by our numbers"
        );
        fs::remove_dir(&foreign).unwrap();
    }
}
